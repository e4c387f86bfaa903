"""Group commit: many threads make changes, one durable write covers all made before it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """``change(mutate)`` returns only once a write that includes the change has finished.

    While one thread writes, others queue their changes; the next writer writes them all
    at once. With N workers this turns N fsyncs into about one, without ever returning
    before the caller's own change is on disk.
    """

    def __init__(self, snapshot: Callable[[], T], write: Callable[[T], None]) -> None:
        self._snapshot = snapshot
        self._write = write
        self._mutex = threading.Lock()
        # Held while changes are made and snapshots taken: a writer needing a consistent
        # view outside ``snapshot`` may take it too.
        self.mutex = self._mutex
        self._write_lock = threading.Lock()
        self._changes = 0
        self._written = 0

    def change(self, mutate: Callable[[], None]) -> None:
        with self._mutex:
            mutate()
            self._changes += 1
            mine = self._changes
        with self._write_lock:
            if self._written >= mine:
                return
            with self._mutex:
                target = self._changes
                snapshot = self._snapshot()
            self._write(snapshot)
            self._written = target
