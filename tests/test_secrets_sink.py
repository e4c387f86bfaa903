"""reconciler.secrets_sink: durable 0600 files, merging, and no stale temp files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.destinations.file import FileDestination, check_target
from reconciler.errors import SecretsError


def test_json_sink_is_0600_and_keeps_earlier_values(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"old": "v0"}))
    sink = FileDestination.open(path, "json")
    sink.add("new-token", "v1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"old": "v0", "new-token": "v1"}


def test_dotenv_sink_uses_upper_snake_keys(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    FileDestination.open(path, "dotenv").add("ci-deployer", "v1")
    assert "CI_DEPLOYER=v1\n" in path.read_text()


def test_temp_file_of_a_dead_writer_is_removed_on_open(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".secrets.json.{int(dead.stdout)}.tmp"
    stale.write_text('{"x": "value-from-a-killed-run"}')
    live = tmp_path / f".secrets.json.{os.getppid()}.tmp"
    live.write_text("{}")
    FileDestination.open(tmp_path / "secrets.json", "json")
    assert not stale.exists()
    assert live.exists()  # its writer still runs


def test_forget_removes_a_value_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    sink = FileDestination.open(path, "dotenv")
    sink.add("ci-deployer", "v1")
    sink.add("reader", "v2")
    sink.forget("ci-deployer")
    sink.forget("never-delivered")  # nothing to remove: no error, no change
    text = path.read_text()
    assert "CI_DEPLOYER" not in text and "v1" not in text and "READER=v2\n" in text
    assert sink.forgotten == 1
    reopened = FileDestination.open(path, "dotenv")
    reopened.forget("reader")
    assert "v2" not in path.read_text()


def test_check_target_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SecretsError, match="FIFO"):
        check_target(fifo)  # returns at once: opening a FIFO would block
    with pytest.raises(SecretsError, match="directory"):
        check_target(tmp_path)
    real = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert check_target(link) == real.resolve()
    assert check_target(tmp_path / "new.json") == (tmp_path / "new.json").resolve()
