"""The state as apply changes it: in memory, written through to the backend on every change."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from reconciler.backends.base import StateBackend
from reconciler.groupcommit import GroupCommit
from reconciler.state import State


class Journal:
    """Apply's view of the state. ``update`` returns only once the change is durable, so an
    interruption at any instant loses nothing that already happened at the API. Concurrent
    updates from workers share writes (group commit)."""

    def __init__(self, backend: StateBackend, state: State) -> None:
        self._backend = backend
        self._state = state
        self._serial = state.serial
        self._commit: GroupCommit[State] = GroupCommit(lambda: self._state, self._write)
        self.writes = 0

    @property
    def state(self) -> State:
        return self._state

    def update(self, change: Callable[[State], State]) -> None:
        def mutate() -> None:
            self._state = change(self._state)

        self._commit.change(mutate)

    def _write(self, snapshot: State) -> None:
        # Only the committing thread gets here, so the serial is read and set by one thread.
        written = self._backend.write(dataclasses.replace(snapshot, serial=self._serial))
        self._serial = written.serial
        self.writes += 1
