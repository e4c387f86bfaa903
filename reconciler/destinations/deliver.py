"""One new value to all of its destinations, or to none of them.

The contract with the applier:

1. Before the first create, ``check_all(destinations, names)`` (the manifest names to be
   created or replaced); a DestinationCheckError there means nothing was created, and
   the run stops with that one line.
2. After each create, and before state records the token as owned,
   ``deliver_all(destinations, delivery)``. It writes to every reversible destination in
   the order given, then to the ``exec:`` ones (a command cannot be taken back). Each
   write is confirmed by its store before the next starts.
3. If any write fails, the destinations that took the value are put back, newest first
   (Vault: the previous version current again, or the new secret removed; Secrets
   Manager: AWSCURRENT back on the previous version, or the new secret removed), and one
   DeliveryAbortedError is raised naming the destination that failed, the store's reason,
   and any store that could not be put back. The applier then deletes the new token
   (nobody can be using it), leaves state as if it had never been made, and stops with
   that line, exit 1. The next apply makes a fresh token and delivers it everywhere.

A kill at any instant leaves at worst a store holding the value of a token that is then
deleted (or never recorded), which the next apply's delivery overwrites.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from reconciler.destinations.base import Delivery, Destination, Undo
from reconciler.errors import DeliveryAbortedError, DestinationError


def ordered(destinations: Sequence[Destination]) -> list[Destination]:
    """Reversible destinations first, in the order given, then the irreversible ones."""
    return sorted(destinations, key=lambda d: d.irreversible)


def check_all(destinations: Sequence[Destination], names: Collection[str] = ()) -> None:
    """Every destination's pre-flight check, before anything is created."""
    for destination in ordered(destinations):
        destination.check(names)


def deliver_all(destinations: Sequence[Destination], delivery: Delivery) -> None:
    """Deliver to all or, on the first failure, put back those that took the value."""
    taken: list[tuple[Destination, Undo]] = []
    for destination in ordered(destinations):
        try:
            taken.append((destination, destination.deliver(delivery)))
        except DestinationError as exc:
            undone, kept, failures = _roll_back(taken)
            raise DeliveryAbortedError(
                exc, undone=undone, kept=kept, undo_failures=failures
            ) from None
        except BaseException:
            # A bug or an interrupt: still take the value back before passing it on.
            _roll_back(taken)
            raise


def _roll_back(
    taken: list[tuple[Destination, Undo]],
) -> tuple[list[str], list[str], list[DestinationError]]:
    """Undo, newest first: (put back, cannot be undone, undo errors)."""
    undone: list[str] = []
    kept: list[str] = []
    failures: list[DestinationError] = []
    for destination, undo in reversed(taken):
        if destination.irreversible:
            kept.append(destination.describe())
            continue
        try:
            undo()
        except DestinationError as exc:
            failures.append(exc)
        else:
            undone.append(destination.describe())
    return undone, kept, failures
