"""What every destination is: a Delivery record and the Destination protocol."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: Puts a store back as it was before one delivery; raises DestinationError if it cannot.
Undo = Callable[[], None]


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

    def forget(self, name: str) -> None:
        """Token ``name``'s current generation was deleted: drop its value where the store
        holds only current values (a file); stores that keep versions leave it."""
        ...
