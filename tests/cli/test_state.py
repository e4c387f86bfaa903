"""The state commands (`state list`, `state show`, `state rm`), through the real CLI
against the local API, on a terminal and off it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support.checks import failed, ok
from support.ci_docs import AUDIT, DEPLOYER, GRAFANA
from support.cli import cli_environment
from support.workspace import Workspace

# Commands run as a user or a CI job types them: the API from BentoML's variables, the
# state at its default place.
pytestmark = pytest.mark.env_connection


def _run_on_a_terminal(ws: Workspace, *args: str, answer: str) -> tuple[int, str]:
    """Run ``python -m reconciler ARGS`` with a pseudo-terminal as stdin and stdout, type
    ``answer`` at its prompt, and return the exit code and everything it printed."""
    import pty

    env = cli_environment(ws.root, ws.env)
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=ws.root,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: the process has exited
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
        code = process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, output.decode("utf-8", "replace")


def test_state_list_and_show(ws: Workspace) -> None:
    assert ok(ws.run("state", "list")).stdout == "No tokens in state.\n"
    ws.declare(
        DEPLOYER,
        {**GRAFANA, "scopes": ["read_organization", "read_cluster"]},
        {**AUDIT, "expires": "2031-03-31"},
    )
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    owned = ws.owned()
    listed = ok(ws.run("state", "list")).stdout.splitlines()
    assert listed[0].split() == ["NAME", "UID", "SCOPES", "EXPIRES"]
    rows = [line.split(None, 3) for line in listed[1:-1]]
    assert rows == [
        ["audit", owned["audit"], "read_organization", "2031-03-31 00:00 UTC"],
        ["ci-deployer", owned["ci-deployer"], "api", "never"],
        ["grafana-reader", owned["grafana-reader"], "read_cluster,read_organization", "never"],
    ]
    assert listed[-1] == f"3 tokens (serial {ws.state()['serial']})"

    shown = json.loads(ok(ws.run("state", "show", "audit")).stdout)
    assert shown["uid"] == owned["audit"]
    assert shown["spec"]["expires"] == "2031-03-31T00:00:00Z"
    assert shown["expired_at"] == "2031-03-31T00:00:00Z"
    failed(ws.call("state", "show", "nope"), "nope is not in state", "reconciler state list")


def test_state_rm_asks_and_keeps_the_live_token(ws: Workspace) -> None:
    ws.declare(DEPLOYER, GRAFANA)
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    owned = ws.owned()
    before = ws.state_path.read_bytes()

    # No terminal and no --yes: refused, nothing written.
    failed(ws.run("state", "rm", "ci-deployer"), "pass --yes")
    assert ws.state_path.read_bytes() == before
    # On a terminal it asks; "n" keeps it.
    code, output = _run_on_a_terminal(ws, "state", "rm", "ci-deployer", answer="n")
    assert code == 1, output
    assert "Forget ci-deployer (the live token stays)? [y/N]" in output
    assert "cancelled; state was not changed" in output
    assert ws.state_path.read_bytes() == before
    # "y" forgets it: a new serial, the previous version in the backup.
    serial = ws.state()["serial"]
    code, output = _run_on_a_terminal(ws, "state", "rm", "ci-deployer", answer="y")
    assert code == 0, output
    assert f"Forgot ci-deployer ({owned['ci-deployer']})" in output
    assert "ci-deployer" not in ws.owned()
    assert ws.state()["serial"] == serial + 1
    assert ws.backup()["serial"] == serial
    assert ws.backup()["tokens"] == json.loads(before)["tokens"]
    # --yes needs no terminal.
    removed = ok(ws.run("state", "rm", "grafana-reader", "--yes"))
    assert "The live token was not deleted" in removed.stdout
    assert ws.owned() == {}
    assert ws.state()["serial"] == serial + 2
    failed(ws.call("state", "rm", "grafana-reader", "--yes"), "grafana-reader is not in state")
    # Both live tokens are untouched; still declared, they match, so the next plan adopts them.
    assert ws.live_by_name() == {name: [uid] for name, uid in owned.items()}
    plan = ok(ws.call("plan"))
    assert (
        "Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, "
        "0 to retire, 2 to adopt, 0 to forget." in plan.stdout
    )
