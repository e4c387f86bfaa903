"""Files reconciler writes, through the real CLI against the local API: sinks and state
paths that are not regular files, symlinks, leftovers of killed writers, hostile state
and lock documents, and the secrets file forgetting deleted tokens.

Each case checks the exit code, a one-line error, that nothing changed (files, live
tokens) and that no token value or key appears in the output.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import CliResult
from support.workspace import Workspace, token


def assert_one_line_error(result: CliResult, *fragments: str, key: str = "") -> None:
    assert result.exit_code == 1, result
    assert "Traceback" not in result.output, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing\n{result}"
    if key:
        assert key not in result.output


def make_device(path: Path, minor: int) -> None:
    """A character device node at ``path`` (1, minor): 3 is like /dev/null, 5 /dev/zero."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("creating device nodes needs CAP_MKNOD")


# ------------------------------------------------------------ sinks that cannot take a file


@pytest.mark.parametrize("kind", ["fifo", "null-device", "zero-device"])
def test_secrets_out_that_is_not_a_file_is_refused_before_any_create(
    ws: Workspace, kind: str
) -> None:
    sink = ws.root / "sink"
    if kind == "fifo":
        os.mkfifo(sink)
    else:
        make_device(sink, 3 if kind == "null-device" else 5)
    before = os.lstat(sink)
    ws.declare(token("ci-deployer"))
    result = ws.apply(to=[sink], timeout=30)
    assert_one_line_error(
        result, f"--secrets-out {sink}", "not a regular file", key=ws.api.admin_key
    )
    assert ws.writes()["create"] == 0 and ws.live() == []
    after = os.lstat(sink)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert not ws.state_path.with_name("tokens.state.json.lock").exists()  # lock released
    assert ws.apply().exit_code == 0  # and the next run is not blocked


def test_secrets_out_symlink_is_followed_and_kept(ws: Workspace) -> None:
    real = ws.root / "vault" / "secrets.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"kept": "v0"}))
    link = ws.root / "secrets-link.json"
    link.symlink_to(real)
    ws.declare(token("ci-deployer"))
    result = ws.apply(to=[link])
    assert result.exit_code == 0, result
    assert link.is_symlink() and link.resolve() == real.resolve()
    values = json.loads(real.read_text())
    assert set(values) == {"kept", "ci-deployer"}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert [p.name for p in real.parent.iterdir()] == ["secrets.json"]  # no temp left


def test_secrets_out_symlink_to_a_device_is_refused(ws: Workspace) -> None:
    device = ws.root / "null"
    make_device(device, 3)
    link = ws.root / "secrets.json"
    link.symlink_to(device)
    ws.declare(token("ci-deployer"))
    result = ws.apply(to=[link], timeout=30)
    assert_one_line_error(result, "character device", key=ws.api.admin_key)
    assert link.is_symlink() and stat.S_ISCHR(device.stat().st_mode)
    assert ws.writes()["create"] == 0


# ------------------------------------------------------------ the state path


def test_symlinked_state_is_written_through_the_link(ws: Workspace) -> None:
    shared = ws.root / "shared" / "real.state.json"
    shared.parent.mkdir()
    ws.state_path.parent.mkdir()
    ws.state_path.symlink_to(shared)
    ws.declare(token("ci-deployer"))
    assert ws.apply().exit_code == 0
    ws.declare(token("ci-deployer"), token("reader"))
    assert ws.apply().exit_code == 0
    assert ws.state_path.is_symlink()  # not replaced by a regular file: state did not fork
    data = json.loads(shared.read_text())
    assert [t["name"] for t in data["tokens"]] == ["ci-deployer", "reader"]
    assert shared.with_name("real.state.json.backup").is_file()
    assert sorted(p.name for p in ws.state_path.parent.iterdir()) == ["tokens.state.json"]
    plan = ws.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_state_path_that_is_not_a_file_is_refused(ws: Workspace, kind: str) -> None:
    ws.state_path.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(ws.state_path)
    else:
        ws.state_path.mkdir()
    ws.declare(token("ci-deployer"))
    for args in (("plan",), ("apply", "--auto-approve", "--discard-secrets"), ("state", "list")):
        result = ws.run(*args, timeout=30)
        assert_one_line_error(
            result, str(ws.state_path), "not a regular file", key=ws.api.admin_key
        )
    assert ws.writes()["create"] == 0
    assert sorted(p.name for p in ws.state_path.parent.iterdir()) == ["tokens.state.json"]


# ------------------------------------------------------------ leftovers


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_leftover_temps_of_dead_writers_are_removed_and_others_kept(ws: Workspace) -> None:
    from reconciler.util.atomicfile import _host_tag

    ws.declare(token("ci-deployer"))
    assert ws.apply().exit_code == 0
    pid, host = dead_pid(), _host_tag()
    state_dir = ws.state_path.parent
    ours = [
        state_dir / f".tokens.state.json.rcn-{pid}-{host}-{'a' * 12}.tmp",
        state_dir / f".tokens.state.json.backup.rcn-{pid}-{host}-{'b' * 12}.tmp",
        ws.root / f".secrets.json.rcn-{pid}-{host}-{'c' * 12}.tmp",
        ws.root / f".secrets.json.{pid}.tmp",  # an older release's secrets temp
    ]
    live = ws.root / f".secrets.json.rcn-{os.getpid()}-{host}-{'d' * 12}.tmp"
    foreign = [live, state_dir / ".tokens.state.json.notours.tmp", ws.root / ".other.tmp"]
    old_anonymous = state_dir / f".tokens.state.json.{'e' * 32}.tmp"  # an older release's
    fresh_anonymous = state_dir / f".tokens.state.json.backup.{'f' * 32}.tmp"
    for path in [*ours, *foreign, old_anonymous, fresh_anonymous]:
        path.write_text('{"x": "value-of-a-killed-run"}')
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_anonymous, (two_days_ago, two_days_ago))
    ours.append(old_anonymous)
    foreign.append(fresh_anonymous)  # its writer cannot be asked: kept until it is old
    ws.declare(token("ci-deployer"), token("reader"))
    assert ws.apply().exit_code == 0
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in foreign)


FAILING_WRITE = """
import resource, signal, sys
from reconciler.state.backends import LocalStateBackend
from reconciler.errors import StateError
backend = LocalStateBackend(sys.argv[1])
state = backend.read()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = 200
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    backend.write(state.without_token("ci-deployer"))
except StateError as exc:
    print("refused:", exc)
"""


def test_failed_state_write_leaves_backup_and_state_apart(ws: Workspace) -> None:
    ws.declare(token("ci-deployer"))
    assert ws.apply().exit_code == 0
    ws.declare(token("ci-deployer"), token("reader"))
    assert ws.apply().exit_code == 0
    before = ws.state_path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", FAILING_WRITE, str(ws.state_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("refused:"), done
    backup = ws.state_path.with_name("tokens.state.json.backup")
    assert ws.state_path.read_bytes() == before
    assert os.stat(ws.state_path).st_ino != os.stat(backup).st_ino
    assert [p.name for p in ws.state_path.parent.iterdir() if p.name.endswith(".tmp")] == []


# ------------------------------------------------------------ hostile state and lock files


def _state(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format_version": 1,
        "serial": 3,
        "lineage": "0b6a3c5e-6f58-4a8e-9d5c-3f3f0e7c9a11",
        "endpoint": "http://127.0.0.1:1",
        "tokens": [
            {
                "name": "reader",
                "uid": "tok-1",
                "spec": {
                    "name": "reader",
                    "description": "",
                    "scopes": ["api"],
                    "expires": "never",
                    "rotate_before": None,
                },
                "created_at": None,
                "expired_at": None,
            }
        ],
        "pending_creates": [],
        "retired": [],
    }
    document.update(changes)
    return document


def _scopes_text() -> str:
    document = _state()
    document["tokens"][0]["spec"]["scopes"] = "api"
    return json.dumps(document)


HOSTILE_STATES = {
    "deep-nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "huge-serial": (
        json.dumps(_state()).replace('"serial": 3', '"serial": ' + "9" * 5000),
        "too many digits",
    ),
    "version-true": (json.dumps(_state(format_version=True)), "format_version"),
    "version-negative": (json.dumps(_state(format_version=-5)), "format_version -5"),
    "scopes-string": (_scopes_text(), "tokens[0].spec.scopes"),
    "serial-text": (json.dumps(_state(serial="3")), "serial"),
    "unknown-scope": (_scopes_text().replace('"api"', '"root"'), "tokens[0].spec.scopes"),
    "bad-name": (json.dumps(_state()).replace('"reader"', '"Reader\\n"'), "tokens[0].name"),
    "extra-key": (json.dumps(_state(owner="me")), "owner"),
    "duplicate": (json.dumps(_state(tokens=_state()["tokens"] * 2)), "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STATES))
def test_hostile_state_is_one_line_and_untouched(ws: Workspace, case: str) -> None:
    text, problem = HOSTILE_STATES[case]
    ws.state_path.parent.mkdir()
    ws.state_path.write_text(text)
    ws.declare(token("reader"))
    for args in (("plan",), ("apply", "--auto-approve", "--discard-secrets"), ("state", "list")):
        result = ws.run(*args, timeout=30)
        assert_one_line_error(result, str(ws.state_path), problem, key=ws.api.admin_key)
        assert len(result.stderr) < 600
    assert ws.state_path.read_text() == text
    assert sorted(p.name for p in ws.state_path.parent.iterdir()) == ["tokens.state.json"]
    assert ws.writes()["create"] == 0


HOSTILE_LOCKS = {
    "huge-pid": '{"id": "x", "holder": "a@b", "pid": 1%s, "operation": "apply", '
    '"created": "2026-01-01T00:00:00Z"}' % ("0" * 40),
    "giant-pid-digits": '{"id": "x", "holder": "a@b", "pid": %s, "operation": "apply", '
    '"created": "2026-01-01T00:00:00Z"}' % ("7" * 5000),
    "pid-true": '{"id": "x", "holder": "a@b", "pid": true, "operation": "apply", '
    '"created": "2026-01-01T00:00:00Z"}',
    "deep": "[" * 100_000,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LOCKS))
def test_hostile_lock_is_one_line_and_untouched(ws: Workspace, case: str) -> None:
    lock = ws.state_path.with_name("tokens.state.json.lock")
    lock.parent.mkdir()
    lock.write_text(HOSTILE_LOCKS[case])
    ws.declare(token("reader"))
    for args in (("apply", "--auto-approve", "--discard-secrets"), ("force-unlock", "x")):
        result = ws.run(*args, timeout=30)
        assert_one_line_error(result, str(lock), "lock file is unreadable", key=ws.api.admin_key)
    assert lock.read_text() == HOSTILE_LOCKS[case]
    assert ws.writes()["create"] == 0
