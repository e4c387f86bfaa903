"""A file destination as a Destination: the existing secrets file sink behind the protocol."""

from __future__ import annotations

from collections.abc import Callable, Collection

from reconciler.destinations.base import (
    Delivery,
    DeliveryFailedError,
    Undo,
    no_undo,
    redact,
)
from reconciler.errors import SecretsError


class FileDestination:
    """Wraps ``add(name, value)`` (``SecretsSink.add``, which writes the file durably
    before returning). The sink is opened before the first create, which is its check.

    Its Undo leaves the value in the file: a value of a token deleted again is harmless,
    and the next apply overwrites it under the same name.
    """

    irreversible = False

    def __init__(self, path: str, add: Callable[[str, str], None]) -> None:
        self.path = path
        self._add = add

    def describe(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"FileDestination({self.path!r})"

    def check(self, names: Collection[str] = ()) -> None:
        """Nothing more to do: SecretsSink.open already wrote the file once."""

    def deliver(self, delivery: Delivery) -> Undo:
        try:
            self._add(delivery.name, delivery.value)
        except (OSError, SecretsError) as exc:
            reason = redact(str(exc), (delivery.value,))
            raise DeliveryFailedError(self.describe(), reason) from None
        return no_undo
