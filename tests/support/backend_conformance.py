"""The conformance suite every state backend must pass; subclass it with a backend_factory.

Usage, in a test module::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend_factory(self, tmp_path: Path) -> BackendFactory:
            return lambda: MyBackend(...same storage every call...)

Each call of the factory is a new backend instance over the same storage, standing in for
another run (another process or machine).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from reconciler.errors import LockError, StateError
from reconciler.state.backends import LockInfo, StateBackend
from reconciler.state.model import PendingCreate, State
from support.states import ENDPOINT, sample_state

BackendFactory = Callable[[], StateBackend]


class BackendConformance:
    """Storage and locking behaviour shared by all backends."""

    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        raise NotImplementedError("a conformance subclass must provide backend_factory")

    # -- storage -------------------------------------------------------------------------

    def test_empty_read_is_none(self, backend_factory: BackendFactory) -> None:
        assert backend_factory().read() is None

    def test_describe_is_text(self, backend_factory: BackendFactory) -> None:
        assert backend_factory().describe()

    def test_write_then_read_round_trips(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        assert backend.read() is None
        state = sample_state()
        written = backend.write(state)
        assert written.serial == state.serial + 1
        again = backend_factory().read()
        assert again == written
        assert again is not None
        assert again.tokens == state.tokens
        assert again.pending == state.pending
        assert again.endpoint == ENDPOINT
        assert again.lineage == state.lineage

    def test_serial_grows_by_one_and_lineage_is_kept(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        backend.read()
        state = backend.write(State.new(ENDPOINT))
        lineage = state.lineage
        for expected in range(2, 6):
            state = backend.write(state.without_token("x"))
            assert state.serial == expected
            assert state.lineage == lineage
        stored = backend_factory().read()
        assert stored is not None
        assert (stored.serial, stored.lineage) == (5, lineage)

    def test_lost_race_is_detected(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        first.write(State.new(ENDPOINT))
        mine = first.read()
        theirs = second.read()
        assert mine is not None and theirs is not None
        winner = second.write(theirs.with_pending(PendingCreate("b", datetime.now(timezone.utc))))
        with pytest.raises(StateError, match="changed"):
            first.write(mine.with_pending(PendingCreate("a", datetime.now(timezone.utc))))
        assert backend_factory().read() == winner

    def test_first_write_refused_when_someone_created_state(
        self, backend_factory: BackendFactory
    ) -> None:
        first, second = backend_factory(), backend_factory()
        assert first.read() is None
        winner = second.write(State.new(ENDPOINT))
        with pytest.raises(StateError):
            first.write(State.new(ENDPOINT))
        assert backend_factory().read() == winner

    def test_stale_state_object_is_refused(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        old = backend.write(State.new(ENDPOINT))
        backend.write(old)
        with pytest.raises(StateError, match="serial"):
            backend.write(old)
        with pytest.raises(StateError, match="lineage"):
            backend.write(State.new(ENDPOINT))
        stored = backend_factory().read()
        assert stored is not None and stored.serial == 2

    # -- locking -------------------------------------------------------------------------

    def test_lock_and_unlock(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        assert backend.current_lock() is None
        with backend.lock("apply", timeout=0) as info:
            current = backend_factory().current_lock()
            assert current == info
            assert info.operation == "apply"
            assert info.pid > 0 and "@" in info.holder
            assert backend.held == info
        assert backend.current_lock() is None
        assert backend.held is None

    def test_second_lock_fails_at_once_naming_holder(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        with first.lock("apply", timeout=0) as info:
            with pytest.raises(LockError) as caught:
                second.acquire("plan", timeout=0)
            message = str(caught.value)
            assert info.holder in message
            assert f"pid {info.pid}" in message
            assert "for apply" in message
            assert f"force-unlock {info.id}" in message
            assert first.current_lock() == info

    def test_waits_then_succeeds_when_released(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        info = first.acquire("apply", timeout=0)
        timer = threading.Timer(0.3, first.release, args=(info,))
        timer.start()
        try:
            got = second.acquire("apply", timeout=10)
        finally:
            timer.join()
        assert second.current_lock() == got
        assert second.release(got)

    def test_wait_times_out(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        with first.lock("apply", timeout=0), pytest.raises(LockError, match="waited"):
            second.acquire("apply", timeout=0.3)

    def test_force_unlock(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        info = first.acquire("apply", timeout=0)
        with pytest.raises(LockError, match=info.id):
            second.force_unlock("not-the-id")
        assert second.current_lock() == info
        second.force_unlock(info.id)
        assert second.current_lock() is None
        with pytest.raises(LockError, match="not locked"):
            second.force_unlock(info.id)

    def test_release_keeps_someone_elses_lock(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        stale = first.acquire("apply", timeout=0)
        second.force_unlock(stale.id)
        theirs = second.acquire("apply", timeout=0)
        assert first.release(stale) is False
        assert backend_factory().current_lock() == theirs

    def test_write_refused_while_another_holds_lock(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        assert first.read() is None
        with second.lock("apply", timeout=0), pytest.raises(LockError, match="locked by"):
            first.write(State.new(ENDPOINT))
        assert backend_factory().read() is None

    def test_write_refused_after_losing_lock(self, backend_factory: BackendFactory) -> None:
        first, second = backend_factory(), backend_factory()
        info = first.acquire("apply", timeout=0)
        state = first.write(State.new(ENDPOINT))
        second.force_unlock(info.id)
        with pytest.raises(LockError, match="was removed"):
            first.write(state)
        theirs = second.acquire("apply", timeout=0)
        with pytest.raises(LockError, match="was removed"):
            first.write(state)
        second.release(theirs)

    def test_write_under_own_lock(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        with backend.lock("apply", timeout=0):
            assert backend.read() is None
            state = backend.write(State.new(ENDPOINT))
            state = backend.write(state)
        assert state.serial == 2

    # -- retiring (state migrate) ----------------------------------------------------------

    def test_retire_moves_the_state_aside(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        state = backend.write(sample_state())
        where = backend.retire(".migrated")
        assert where.endswith(".migrated")
        assert backend_factory().read() is None
        again = backend_factory()
        assert again.read() is None
        assert again.write(State.new(ENDPOINT)).serial == 1  # the name is free again
        assert state.serial == 1

    def test_lock_holder_of_a_dead_process_is_named(self, backend_factory: BackendFactory) -> None:
        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead = replace(LockInfo.new("apply", "x"), pid=int(done.stdout))
        backend = backend_factory()
        assert backend.try_lock(dead) is None
        with pytest.raises(LockError, match=f"pid {dead.pid} no longer runs on this host"):
            backend_factory().acquire("apply", timeout=0)
        assert backend.remove_lock(dead.id)
