"""reconciler.state.move: pull, push and migrate between backends (file to file here; S3
in tests/state/backends/test_s3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.states import ENDPOINT, sample_state

from reconciler.errors import ConfigError, StateError
from reconciler.state.backends import LocalStateBackend
from reconciler.state.model import State
from reconciler.state.move import migrate, pull, push, read_state_file, state_json


def written(path: Path, serial: int) -> State:
    backend = LocalStateBackend(path)
    state = backend.write(sample_state())
    while state.serial < serial:
        state = backend.write(state)
    return state


def test_pull_prints_the_stored_document(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    state = written(path, 2)
    assert pull(LocalStateBackend(path)) == path.read_text() == state_json(state)
    with pytest.raises(StateError, match="nothing to pull"):
        pull(LocalStateBackend(tmp_path / "none.json"))


def test_push_into_empty_keeps_serial(tmp_path: Path) -> None:
    state = written(tmp_path / "src.json", 6)
    destination = LocalStateBackend(tmp_path / "dst.json")
    with destination.lock("state push", 0):
        message = push(destination, read_state_file(str(tmp_path / "src.json")), "src.json")
    assert "serial 6" in message
    assert LocalStateBackend(tmp_path / "dst.json").read() == state


def test_push_refusals_leave_destination_untouched(tmp_path: Path) -> None:
    older = written(tmp_path / "src.json", 2)
    dst = tmp_path / "dst.json"
    destination = LocalStateBackend(dst)
    destination.write(older)  # same lineage, serial 3 now
    before = dst.read_bytes()
    with pytest.raises(StateError, match=r"newer \(serial 3 > 2\)"):
        push(LocalStateBackend(dst), older, "src.json")
    with pytest.raises(StateError, match="holds another state"):
        push(LocalStateBackend(dst), State.new(ENDPOINT), "other.json")
    stored = LocalStateBackend(dst).read()
    assert stored is not None
    diverged = stored.without_token("reader")
    with pytest.raises(StateError, match="diverged"):
        push(LocalStateBackend(dst), diverged, "diverged.json")
    assert dst.read_bytes() == before


def test_read_state_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such state file"):
        read_state_file(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StateError, match="not a readable state file"):
        read_state_file(str(tmp_path / "bad.json"))


def test_migrate_moves_and_retires_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.json", tmp_path / "b" / "b.json"
    state = written(src, 3)
    source, destination = LocalStateBackend(src), LocalStateBackend(dst)
    with source.lock("state migrate", 0), destination.lock("state migrate", 0):
        message = migrate(source, destination, keep_source=False)
    assert LocalStateBackend(dst).read() == state
    assert not src.exists() and (tmp_path / "a.json.migrated").exists()
    assert "serial 3" in message and f"--state {dst}" in message


def test_migrate_keep_source_and_rerun_after_a_crash(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.json", tmp_path / "b.json"
    state = written(src, 2)
    source, destination = LocalStateBackend(src), LocalStateBackend(dst)
    with source.lock("state migrate", 0), destination.lock("state migrate", 0):
        migrate(source, destination, keep_source=True)
    assert src.exists()
    # As if the first run died after copying: the identical copy is accepted, source retired.
    source, destination = LocalStateBackend(src), LocalStateBackend(dst)
    with source.lock("state migrate", 0), destination.lock("state migrate", 0):
        migrate(source, destination, keep_source=False)
    assert LocalStateBackend(dst).read() == state and not src.exists()


def test_migrate_refuses_another_version_and_same_place(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.json", tmp_path / "b.json"
    state = written(src, 2)
    LocalStateBackend(dst).write(state)  # this lineage, but serial 3: not a copy
    source, destination = LocalStateBackend(src), LocalStateBackend(dst)
    with (
        source.lock("state migrate", 0),
        destination.lock("state migrate", 0),
        pytest.raises(StateError, match="not a copy"),
    ):
        migrate(source, destination, keep_source=False)
    assert src.exists()
    with pytest.raises(ConfigError, match="already is"):
        migrate(LocalStateBackend(src), LocalStateBackend(src), keep_source=False)
    with pytest.raises(StateError, match="nothing to migrate"):
        migrate(
            LocalStateBackend(tmp_path / "none.json"), LocalStateBackend(dst), keep_source=False
        )
