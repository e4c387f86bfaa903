"""The state as apply changes it: in memory, made durable by the backend on every change."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.state.backends.base import StateBackend
from reconciler.state.model import State
from reconciler.util.groupcommit import GroupCommit


class Journal:
    """Apply's view of the state. ``update`` returns only once the change is durable, so an
    interruption at any instant loses nothing that already happened at the API. Concurrent
    updates from workers share writes (group commit). A local state records each write as
    one line of its journal (``backend.commit``), folded into the document by ``fold``
    (or when the apply lock is released, or by the next apply after a crash)."""

    def __init__(self, backend: StateBackend, state: State) -> None:
        self._backend = backend
        self._state = state
        # The version last made durable, which the next commit is based on.
        self._written = state
        self._commit: GroupCommit[State] = GroupCommit(lambda: self._state, self._write)
        self.writes = 0

    @property
    def state(self) -> State:
        return self._state

    def update(self, change: Callable[[State], State]) -> None:
        def mutate() -> None:
            self._state = change(self._state)

        self._commit.change(mutate)

    def fold(self) -> None:
        """Fold the backend's journal into the state document now."""
        self._backend.fold()

    def _write(self, snapshot: State) -> None:
        # Only the committing thread gets here, so ``_written`` is read and set by one thread.
        self._written = self._backend.commit(self._written, snapshot)
        self.writes += 1
