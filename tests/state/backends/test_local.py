"""LocalStateBackend: the conformance suite plus file modes, backups, corruption, processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backend_conformance import BackendConformance, BackendFactory
from support.states import ENDPOINT, sample_state

from reconciler.errors import ConfigError, LockError, StateError
from reconciler.state.backends import LocalStateBackend, backend_for
from reconciler.state.model import State


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tokens.state.json"


class TestLocalConformance(BackendConformance):
    @pytest.fixture
    def backend_factory(self, state_path: Path) -> BackendFactory:
        return lambda: LocalStateBackend(state_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    # With umask 0 only our explicit modes can keep group/other out.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_files_are_private(state_path: Path) -> None:
    backend = LocalStateBackend(state_path)
    state = backend.write(State.new(ENDPOINT))
    backend.write(state)
    with backend.lock("apply", timeout=0):
        assert mode(backend.lock_path) == 0o600
    assert mode(state_path) == 0o600
    assert mode(backend.backup_path) == 0o600
    assert mode(state_path.parent) == 0o700
    leftovers = [p.name for p in state_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_backup_holds_previous_version(state_path: Path) -> None:
    backend = LocalStateBackend(state_path)
    first = backend.write(sample_state())
    assert not backend.backup_path.exists()
    first_bytes = state_path.read_bytes()
    second = backend.write(first.without_token("reader"))
    assert backend.backup_path.read_bytes() == first_bytes
    backup = LocalStateBackend(backend.backup_path).read()
    assert backup == first
    assert LocalStateBackend(state_path).read() == second


def test_state_file_is_plain_json_without_secrets(state_path: Path) -> None:
    LocalStateBackend(state_path).write(sample_state())
    data = json.loads(state_path.read_text())
    assert data["serial"] == 1 and data["endpoint"] == ENDPOINT
    text = state_path.read_text()
    assert '"token"' not in text and "secret" not in text


def test_corrupt_json_is_reported_and_never_overwritten(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.write_text('{"format_version": 1, "serial": ')
    before = state_path.read_bytes()
    backend = LocalStateBackend(state_path)
    with pytest.raises(StateError) as caught:
        backend.read()
    message = str(caught.value)
    assert str(state_path) in message
    assert "not changed" in message
    assert f"{state_path}.backup" in message
    with pytest.raises(StateError):
        backend.write(State.new(ENDPOINT))
    assert state_path.read_bytes() == before
    assert not backend.backup_path.exists()


def test_malformed_state_is_reported(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.write_text('{"format_version": 1, "serial": 1}')
    with pytest.raises(StateError, match="corrupt"):
        LocalStateBackend(state_path).read()


def test_newer_format_is_refused_and_untouched(state_path: Path) -> None:
    data = sample_state().to_dict()
    data["format_version"] = 99
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps(data))
    before = state_path.read_bytes()
    backend = LocalStateBackend(state_path)
    with pytest.raises(StateError, match="newer"):
        backend.read()
    with pytest.raises(StateError):
        backend.write(sample_state())
    assert state_path.read_bytes() == before


def test_file_replaced_behind_our_back_is_not_overwritten(state_path: Path) -> None:
    backend = LocalStateBackend(state_path)
    state = backend.write(State.new(ENDPOINT))
    state_path.write_text("garbage")
    with pytest.raises(StateError, match="unreadable"):
        backend.write(state)
    assert state_path.read_text() == "garbage"


def test_unreadable_lock_file_is_reported(state_path: Path) -> None:
    backend = LocalStateBackend(state_path)
    state_path.parent.mkdir(parents=True)
    backend.lock_path.write_text("{not json")
    with pytest.raises(LockError, match="delete"):
        backend.acquire("apply", timeout=0)
    assert backend.lock_path.read_text() == "{not json"


def test_backend_for() -> None:
    backend = backend_for("state/x.json")
    assert isinstance(backend, LocalStateBackend)
    assert backend.describe() == "state/x.json"
    with pytest.raises(ConfigError, match="gs://"):
        backend_for("gs://bucket/key")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from reconciler.state.backends import LocalStateBackend
    backend = LocalStateBackend(sys.argv[1])
    info = backend.acquire("apply", timeout=0)
    print(info.id, flush=True)
    time.sleep(120)
    """
)


def test_lock_between_real_processes_is_never_stolen(state_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lock_id = child.stdout.readline().strip()
        assert lock_id, "the child process did not take the lock"
        backend = LocalStateBackend(state_path)
        with pytest.raises(LockError) as caught:
            backend.acquire("apply", timeout=0)
        message = str(caught.value)
        assert f"pid {child.pid}" in message and lock_id in message
        assert "no longer runs" not in message
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    with pytest.raises(LockError) as caught:
        backend.acquire("apply", timeout=0.2)
    message = str(caught.value)
    assert f"pid {child.pid} no longer runs on this host" in message
    assert f"reconciler force-unlock {lock_id}" in message
    assert backend.lock_path.exists()
    current = backend.current_lock()
    assert current is not None and current.id == lock_id

    backend.force_unlock(lock_id)
    with backend.lock("apply", timeout=0) as info:
        assert backend.current_lock() == info
