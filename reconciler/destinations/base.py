"""What every secret-store destination is: a Delivery record, the Destination protocol, errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from reconciler.errors import SecretsError

#: Puts a store back as it was before one delivery; raises DestinationError if it cannot.
Undo = Callable[[], None]

REDACTED = "***"


def no_undo() -> None:
    """The Undo of a delivery nothing can take back (an ``exec:`` command)."""


@dataclass(frozen=True)
class Delivery:
    """One new token value on its way to the stores.

    ``name`` is the manifest name (secrets are kept under it), ``live_name`` the name the
    token has in the API (a generation suffix during rotations). The value never appears
    in repr() or str(), so a Delivery may be logged or put in an error safely.
    """

    name: str
    live_name: str
    uid: str
    expires_at: str | None
    value: str = field(repr=False)

    def document(self) -> dict[str, str | None]:
        """The fields a Vault or Secrets Manager secret holds."""
        return {
            "token": self.value,
            "name": self.name,
            "live_name": self.live_name,
            "uid": self.uid,
            "expires_at": self.expires_at,
        }

    def json(self) -> str:
        return json.dumps(self.document(), sort_keys=True)


@runtime_checkable
class Destination(Protocol):
    """A place new token values go.

    ``check`` runs before the first token is created (a cheap read or permission check,
    for the names that will be delivered when known), ``deliver`` writes one value and
    returns only once the store confirmed it, with an Undo that puts the store back.
    """

    #: True for destinations whose delivery cannot be undone (run after all others).
    irreversible: bool

    def describe(self) -> str:
        """Where values go, for plan and apply output: never a credential."""
        ...

    def check(self, names: Collection[str] = ()) -> None:
        """Raise DestinationCheckError if a delivery of these names would be refused."""
        ...

    def deliver(self, delivery: Delivery) -> Undo:
        """Write ``delivery``; raise DeliveryFailedError if the store did not confirm it."""
        ...


class DestinationError(SecretsError):
    """A destination refused or could not be reached; names it and the store's reason.

    ``destination`` is the describe() text, ``reason`` the store's answer with every
    credential and value already removed.
    """

    def __init__(self, destination: str, reason: str, *, hint: str | None = None) -> None:
        self.destination = destination
        self.reason = reason
        self.hint = hint
        text = f"{destination}: {reason}"
        super().__init__(f"{text}; {hint}" if hint else text)


class DestinationCheckError(DestinationError):
    """The pre-flight check failed: nothing was created or written."""


class DeliveryFailedError(DestinationError):
    """A write was refused or not confirmed by the store."""


class UndoFailedError(DestinationError):
    """A store could not be put back after another destination failed."""


class DestinationSyntaxError(SecretsError):
    """A ``--secrets-out`` / ``secrets:`` / ``deliver_to:`` entry cannot be understood."""


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret in it replaced by ``***`` (longest first, so a secret
    that contains another is removed whole)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def one_line(text: str, limit: int = 300) -> str:
    """A store's message made fit for a one-line error."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
