"""The interface every state backend implements: versioned storage plus a lock.

A backend is used by one run. It remembers which version of the state it last read or
wrote, and ``write`` refuses when the stored state moved since then, so a lost race is
reported instead of silently overwriting another run's work. Locks are never stolen: a
lock whose holder died stays until someone runs ``force_unlock`` with its id.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from reconciler.errors import LockError, StateError
from reconciler.state.backends.lockinfo import LockInfo
from reconciler.state.model import State
from reconciler.util.processes import pid_running

Version = tuple[str, int]


class StateBackend(ABC):
    """Storage for one state document plus a lock; see tests/support/backend_conformance.py."""

    #: Seconds between attempts while waiting for a busy lock.
    poll_interval: float = 0.1

    def __init__(self) -> None:
        self._held: LockInfo | None = None

    @abstractmethod
    def describe(self) -> str:
        """Where the state lives, for messages (a path, a URL)."""

    @abstractmethod
    def read(self) -> State | None:
        """The stored state, or None when none exists yet. Raises StateError when the
        stored document cannot be used; it is then left exactly as it is."""

    @abstractmethod
    def write(self, state: State) -> State:
        """Store ``state`` with serial + 1 and return what was stored.

        Raises StateError, storing nothing, when the stored state is not the version this
        backend last read or wrote, or when ``state`` is not based on it (other lineage or
        serial); raises LockError when another run holds the lock or this run lost its lock.
        """

    @abstractmethod
    def current_lock(self) -> LockInfo | None:
        """Who holds the lock now, or None."""

    @abstractmethod
    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Take the lock as ``info`` in one atomic step: None when taken, else the holder."""

    @abstractmethod
    def remove_lock(self, lock_id: str) -> bool:
        """Remove the lock only if it has id ``lock_id``; True when removed."""

    def commit(self, before: State, after: State) -> State:
        """Make ``after`` durable, ``before`` being the version this backend last read or
        stored (``serial`` as stored); returns ``after`` as stored. By default the whole
        document is written; a backend with a journal appends only the change."""
        return self.write(replace(after, serial=before.serial))

    def fold(self) -> None:
        """Fold the journal of changes into the state document (none by default)."""
        return None

    def restore_hint(self) -> str:
        """Where an intact copy of a damaged state may be found, as a sentence."""
        return ""

    def retire(self, suffix: str) -> str:
        """Move the state (as last read) aside to its name + ``suffix``, once a migration
        has copied it elsewhere, so that nobody keeps using it; returns where it went."""
        raise StateError(f"{self.describe()}: copied, but this backend cannot be retired")

    def holder_notes(self, holder: LockInfo) -> list[str]:
        """Hints about a holder: that its process is gone, when it ran on this host."""
        if holder.host == socket.gethostname() and not pid_running(holder.pid):
            return [f"pid {holder.pid} no longer runs on this host"]
        return []

    # -- helpers shared by the backends -----------------------------------------------

    def decode(self, raw: bytes) -> State:
        """Stored bytes as a State; StateError (one line, nothing changed) if malformed."""
        from reconciler.state.codec import decode_state  # pydantic: only once state is read

        return decode_state(raw, source=self.describe(), restore=self.restore_hint())

    def check_based_on(self, state: State, stored: Version) -> None:
        """Refuse to write ``state`` unless it was derived from the ``stored`` version."""
        lineage, serial = stored
        if lineage != state.lineage or serial != state.serial:
            raise StateError(
                f"{self.describe()}: refusing to write a state based on lineage "
                f"{state.lineage} serial {state.serial} over stored lineage {lineage} serial "
                f"{serial}; the state was not changed"
            )

    def moved_message(self, raw: bytes | None, *, saw_state: bool) -> str:
        """Why a write was refused: the stored state (now ``raw``) is not the one seen."""
        if raw is None:
            now = "it has been deleted"
        else:
            try:
                stored = self.decode(raw)
                now = f"it is now lineage {stored.lineage} serial {stored.serial}"
            except StateError:
                now = "it is now unreadable"
        seen = "this run read it" if saw_state else "this run saw no state"
        return (
            f"{self.describe()}: state changed since {seen} ({now}); another run wrote it. "
            "Not overwritten: re-run plan/apply against the current state"
        )

    @property
    def held(self) -> LockInfo | None:
        """The lock this backend holds, if any."""
        return self._held

    def acquire(self, operation: str, timeout: float) -> LockInfo:
        """Take the lock for ``operation``, waiting up to ``timeout`` seconds (0: do not
        wait). Raises LockError naming the holder when it stays busy."""
        info = LockInfo.new(operation, self.describe())
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            holder = self.try_lock(info)
            if holder is None:
                self._held = info
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self.poll_interval, remaining))
        notes = self.holder_notes(holder)
        if timeout > 0:
            notes.insert(0, f"waited {timeout:g}s")
        raise LockError(f"state {self.describe()} is {holder.describe(*notes)}")

    def release(self, info: LockInfo) -> bool:
        """Give up the lock ``info``; True when it was removed. Someone else's lock (after a
        force-unlock) is left alone and False returned: the next write reports the loss."""
        if self._held is not None and self._held.id == info.id:
            self._held = None
        return self.remove_lock(info.id)

    @contextmanager
    def lock(self, operation: str, timeout: float) -> Iterator[LockInfo]:
        """Hold the lock for the duration of a ``with`` block."""
        info = self.acquire(operation, timeout)
        try:
            yield info
        finally:
            self.release(info)

    def force_unlock(self, lock_id: str) -> None:
        """Remove the lock if, and only if, it has id ``lock_id``."""
        current = self.current_lock()
        if current is None:
            raise LockError(f"state {self.describe()} is not locked; nothing to unlock")
        if current.id != lock_id:
            raise LockError(
                f"state {self.describe()} is locked with id {current.id}, not {lock_id}; "
                f"not unlocked ({current.describe()})"
            )
        if not self.remove_lock(lock_id):
            raise LockError(
                f"state {self.describe()} was unlocked or re-locked meanwhile; not unlocked"
            )

    def check_may_write(self) -> None:
        """Raise LockError when another run holds the lock, or this run's lock is gone."""
        current = self.current_lock()
        if self._held is not None:
            if current is None or current.id != self._held.id:
                now = f"it is now {current.describe()}" if current else "it is now unlocked"
                raise LockError(
                    f"this run's lock {self._held.id} on {self.describe()} was removed "
                    f"(force-unlock?); {now}. Not writing state."
                )
        elif current is not None:
            raise LockError(f"state {self.describe()} is {current.describe()}; not writing")
