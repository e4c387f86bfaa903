"""Where each new token value goes during one apply, and getting it there.

The run has one list of destinations (``--secrets-out``, repeatable, else ``secrets:`` in
reconciler.yaml); a token whose manifest names ``deliver_to:`` uses that list instead.
:class:`Deliveries` turns the texts into destinations once per run (a file path opens the
existing :class:`~reconciler.secrets_sink.SecretsSink`, so files behave as before), checks
every destination before the first create, and delivers each new value to all of its
destinations, or to none (reconciler.destinations.deliver). The applier calls
:meth:`Deliveries.deliver` where it used to hand the value to the file sink.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from reconciler.destinations import (
    Delivery,
    Destination,
    FileDestination,
    FilePath,
    check_all,
    deliver_all,
    parse_destination,
)
from reconciler.destinations.exec import DEFAULT_TIMEOUT_SECONDS, ExecDestination
from reconciler.errors import redact

if TYPE_CHECKING:
    from reconciler.api.token import ApiToken
    from reconciler.destinations.file import SecretsSink
    from reconciler.manifest.spec import TokenSpec
    from reconciler.plan.model import Plan


def entries_for(spec: TokenSpec | None, run: Sequence[str]) -> tuple[str, ...]:
    """The destination texts of one token: its own ``deliver_to``, else the run's."""
    if spec is not None and spec.deliver_to:
        return spec.deliver_to
    return tuple(run)


def creates_have_destinations(plan: Plan, run: Sequence[str]) -> bool:
    """Whether every token the plan creates has somewhere to deliver its value."""
    return all(entries_for(a.spec, run) for a in plan.actions if a.creates)


def describe_entries(entries: Iterable[str]) -> list[str]:
    """How plan output names destinations: parsed (no store contacted), no credentials."""
    return [parse_destination(text).describe() for text in entries]


def plan_destinations(plan: Plan, run: Sequence[str]) -> dict[str, list[str]]:
    """For each token the plan creates, where its new value will go (describe() texts)."""
    return {
        a.name: describe_entries(entries_for(a.spec, run))
        for a in plan.actions
        if a.creates and entries_for(a.spec, run)
    }


class Deliveries:
    """The destinations of one apply run.

    ``run`` is the run's list; ``secrets_format`` the ``--secrets-format`` of file
    entries (default: from the extension); ``on_output`` receives the masked output of
    ``exec:`` commands; ``exec_timeout`` bounds each command.
    """

    def __init__(
        self,
        run: Sequence[str],
        *,
        secrets_format: str | None = None,
        on_output: Callable[[str], None] | None = None,
        exec_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.run = tuple(run)
        self.secrets_format = secrets_format
        self.on_output = on_output
        self.exec_timeout = exec_timeout
        self._parsed: dict[str, Destination] = {}
        self._sinks: dict[str, SecretsSink] = {}
        self._by_name: dict[str, list[Destination]] = {}

    @property
    def first_sink(self) -> SecretsSink | None:
        """The file of the run's list that SecretsSink.forget keeps clean on deletes."""
        for text in self.run:
            if text in self._sinks:
                return self._sinks[text]
        return None

    def prepare(self, plan: Plan) -> None:
        """Open every file and check every store the plan's creates will use, before
        anything is created: a DestinationCheckError (or SecretsError from a file) here
        means nothing was changed."""
        for text in self.run:
            self._destination(text)  # opens the run's files even for a plan of deletes
        names: dict[str, list[str]] = {}
        for action in plan.actions:
            if not action.creates:
                continue
            destinations = [self._destination(t) for t in entries_for(action.spec, self.run)]
            self._by_name[action.name] = destinations
            for text in entries_for(action.spec, self.run):
                names.setdefault(text, []).append(action.name)
        for text, token_names in names.items():
            check_all([self._parsed[text]], token_names)

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

    def _destination(self, text: str) -> Destination:
        """One destination per distinct text, so a Vault or AWS client is made once."""
        if text not in self._parsed:
            self._parsed[text] = self._make(text)
        return self._parsed[text]

    def _make(self, text: str) -> Destination:
        from reconciler.destinations.file import SecretsSink

        parsed = parse_destination(text)
        if isinstance(parsed, FilePath):
            fmt = self.secrets_format or parsed.format
            sink = SecretsSink.open(parsed.path, fmt)  # type: ignore[arg-type]
            self._sinks[text] = sink
            return FileDestination(parsed.path, sink.add)
        if isinstance(parsed, ExecDestination):
            parsed.timeout = self.exec_timeout
            if self.on_output is not None:
                show = self.on_output
                # The value is already masked; a command may still print VAULT_TOKEN or
                # an AWS key it inherited, which are blanked like in every error.
                parsed.on_output = lambda text: show(redact(text))
        return parsed
