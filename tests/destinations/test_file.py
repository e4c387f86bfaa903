"""The secrets file (reconciler.destinations.file): durable 0600 JSON or dotenv, values
appended in place as apply fills it, merging, forgetting, and no stale temp files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.workspace import Workspace, token

from reconciler.destinations.file import FileDestination, check_target, dotenv_key
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


# ---------------------------------------------------------------- as apply fills it


def test_new_values_are_appended_in_place_and_the_file_stays_whole(tmp_path: Path) -> None:
    """Values for new names go to the end of the same file (no rename per value); a
    replaced value, a removal, or a chunk crossing a page rewrites it. The file parses
    after every single add."""
    for fmt, name in (("json", "secrets.json"), ("dotenv", "secrets.env")):
        path = tmp_path / name
        sink = FileDestination.open(path, fmt)  # type: ignore[arg-type]
        sink.add("first", "v-first")
        inodes = set()
        expected = {"first": "v-first"}
        for n in range(200):
            sink.add(f"token-{n}", f"value-{n:04d}")
            expected[f"token-{n}"] = f"value-{n:04d}"
            inodes.add(path.stat().st_ino)
            assert read_back(path, fmt) == expected
        assert len(inodes) < 60, "most values must be appended, not renamed in"
        sink.add("token-3", "replaced")
        sink.forget("token-4")
        expected["token-3"] = "replaced"
        del expected["token-4"]
        assert read_back(path, fmt) == expected
        sink.close()
        assert read_back(path, fmt) == expected
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def read_back(path: Path, fmt: str) -> dict[str, str]:
    if fmt == "json":
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
        return data
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.lower().replace("_", "-")] = value
    return values


def test_concurrent_adds_from_workers_leave_each_value_once(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "secrets.json"
    sink = FileDestination.open(path, "json")
    sink.add("seed", "v")
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for n in range(25):
            sink.add(f"w{k}-{n}", f"value-{k}-{n}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairs = json.loads(path.read_text(), object_pairs_hook=list)
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)) == 1 + 8 * 25
    assert dict(pairs)["w3-7"] == "value-3-7"
    sink.close()


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    ("filename", "extra"),
    [
        ("new-tokens.json", []),
        ("new-tokens.env", []),
        ("new-tokens.txt", ["--secrets-format", "dotenv"]),
    ],
    ids=["json", "dotenv-by-extension", "dotenv-by-flag"],
)
def test_secrets_out_formats_and_mode(ws: Workspace, filename: str, extra: list[str]) -> None:
    ws.declare(token("ci-deployer"), token("reader", ["read_cluster"]))
    target = ws.root / "out" / filename
    applied = ws.run("apply", "--auto-approve", "--secrets-out", str(target), *extra)
    assert applied.exit_code == 0, applied
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text(encoding="utf-8")
    if filename.endswith(".json"):
        values = json.loads(text)
    else:
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        values = dict(line.split("=", 1) for line in lines)
        assert (
            set(values)
            == {dotenv_key("ci-deployer"), dotenv_key("reader")}
            == {
                "CI_DEPLOYER",
                "READER",
            }
        )
        values = {"ci-deployer": values["CI_DEPLOYER"], "reader": values["READER"]}
    assert {name: ws.uid_of_secret(value) for name, value in values.items()} == ws.owned()
