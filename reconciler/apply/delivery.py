"""Where each new token value goes during one apply, and getting it there.

The run has one list of destinations (``--secrets-out``, repeatable, else ``secrets:`` in
reconciler.yaml); a token whose manifest names ``deliver_to:`` uses that list instead.
Each distinct entry becomes one Destination per run, so a Vault or AWS client is made
once; the applier sees only :class:`Deliveries`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from reconciler.destinations.base import Delivery, Destination
from reconciler.destinations.deliver import check_all, deliver_all
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.file import FileDestination, SecretsFormat
from reconciler.destinations.parse import parse_destination
from reconciler.errors import redact
from reconciler.plan.routing import describe_entries, entries_for, require_destinations

if TYPE_CHECKING:
    from reconciler.api.token import ApiToken
    from reconciler.manifest.spec import TokenSpec
    from reconciler.plan.model import Plan


class Deliveries:
    """The destinations of one apply run.

    ``run`` is the run's list; ``discard`` lets tokens without a destination be created
    (``--discard-secrets``); ``secrets_format`` is the ``--secrets-format`` of file
    entries (default: from the extension); ``on_output`` receives the masked output of
    ``exec:`` commands; ``exec_timeout`` bounds each command.
    """

    def __init__(
        self,
        run: Sequence[str],
        *,
        discard: bool = False,
        secrets_format: SecretsFormat | None = None,
        on_output: Callable[[str], None] | None = None,
        exec_timeout: float | None = None,
    ) -> None:
        self.run = tuple(run)
        self.discard = discard
        self.secrets_format = secrets_format
        self.on_output = on_output
        self.exec_timeout = exec_timeout
        self._parsed: dict[str, Destination] = {}
        self._by_name: dict[str, list[Destination]] = {}

    def describe(self) -> str | None:
        """The run's destinations for the apply report, or None when there are none."""
        return "; ".join(describe_entries(self.run)) or None

    def check(self, plan: Plan) -> None:
        """Refuse (SecretsError) a plan whose creates have nowhere to deliver; offline."""
        require_destinations(plan, self.run, discard=self.discard)

    def prepare(self, plan: Plan) -> None:
        """Open every file and check every store the plan's creates will use, before
        anything is created: a DestinationCheckError (or SecretsError from a file) here
        means nothing was changed."""
        names: dict[str, list[str]] = {}
        for action in plan.actions:
            if not action.creates:
                continue
            entries = entries_for(action.spec, self.run)
            self._by_name[action.name] = [self._destination(t) for t in entries]
            for text in entries:
                names.setdefault(text, []).append(action.name)
        for text, token_names in names.items():
            check_all([self._parsed[text]], token_names)
        for text in self.run:
            destination = self._destination(text)
            if isinstance(destination, FileDestination):
                # Opened even for a plan of deletes, so forget() can drop deleted values.
                destination.check()

    def deliver(self, spec: TokenSpec, token: ApiToken) -> None:
        """All of this token's destinations take the value, or none keeps it
        (DeliveryAbortedError, the stores already put back)."""
        assert token.token is not None
        destinations = self._by_name.get(spec.name)
        if destinations is None:
            # A create the plan did not announce (a retry of the same name): same lists.
            destinations = [self._destination(t) for t in entries_for(spec, self.run)]
        if not destinations:
            return  # --discard-secrets: nobody receives this value, by the user's choice
        expires = token.expired_at.isoformat() if token.expired_at is not None else None
        delivery = Delivery(
            name=spec.name,
            live_name=token.name,
            uid=token.uid,
            expires_at=expires,
            value=token.token,
        )
        deliver_all(destinations, delivery)

    def forget(self, name: str) -> None:
        """The current generation of ``name`` was deleted: the run's destinations drop its
        value where they hold only current values (files)."""
        for text in self.run:
            self._destination(text).forget(name)

    def _destination(self, text: str) -> Destination:
        """One destination per distinct text, so a Vault or AWS client is made once."""
        if text not in self._parsed:
            self._parsed[text] = self._make(text)
        return self._parsed[text]

    def _make(self, text: str) -> Destination:
        parsed = parse_destination(text)
        if isinstance(parsed, FileDestination) and self.secrets_format is not None:
            parsed.format = self.secrets_format
        if isinstance(parsed, ExecDestination):
            if self.exec_timeout is not None:
                parsed.timeout = self.exec_timeout
            if self.on_output is not None:
                show = self.on_output
                # The value is already masked; a command may still print VAULT_TOKEN or
                # an AWS key it inherited, which are blanked like in every error.
                parsed.on_output = lambda text: show(redact(text))
        return parsed
