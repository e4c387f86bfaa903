"""The commands as a user meets them, through the real CLI: exit codes, help, refusals
before anything is contacted, confirmation, and commands that need no credentials."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.checks import assert_clean_error, listing
from support.cli import run_cli_subprocess
from support.workspace import Workspace, token


def test_plan_without_manifests_creates_nothing(tmp_path: Path) -> None:
    result = run_cli_subprocess("plan", "--endpoint", "local", cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "manifests: no such file or directory" in result.stderr
    assert listing(tmp_path) == [], "a failed plan must leave nothing behind"


def test_plan_help_describes_paths(tmp_path: Path) -> None:
    result = run_cli_subprocess("plan", "--help", cwd=tmp_path)
    assert result.exit_code == 0, result
    assert "PATHS are manifest files or directories (default: manifests/)" in result.stdout


@pytest.mark.parametrize("args", [(), ("state",)], ids=["reconciler", "reconciler state"])
def test_a_group_alone_prints_its_help_and_exits_1(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli_subprocess(*args, cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "Usage: reconciler" in result.output and "Commands:" in result.output


def test_detailed_exitcode_error_is_1_and_plain_plan_is_0(ws: Workspace) -> None:
    ws.declare(token("svc"))
    plain = ws.plan()
    assert plain.exit_code == 0, plain
    assert "1 to create" in plain.stdout

    wrong_key = "rca_wrong-key-for-this-test"
    refused = run_cli_subprocess(
        "--endpoint",
        ws.api.url,
        "--api-key",
        wrong_key,
        "--state",
        str(ws.state_path),
        "plan",
        "--detailed-exitcode",
        cwd=ws.root,
    )
    assert_clean_error(refused, "refused the API key")
    assert wrong_key not in refused.output


GOOD = "  - name: keep\n    scopes: [api]\n"
MANIFEST_ERRORS = {
    "unknown key": (
        {"bad.yaml": "tokens:\n" + GOOD + "  - name: one\n    scopes: [api]\n    colour: red\n"},
        "bad.yaml:6",
        "unknown key 'colour'",
    ),
    "wrong type": (
        {"bad.yaml": "tokens:\n" + GOOD + "  - name: one\n    scopes: api\n"},
        "bad.yaml:5",
        "scopes must be a list",
    ),
    "unknown scope": (
        {"bad.yaml": "tokens:\n" + GOOD + "  - name: one\n    scopes: [api, wirte_cluster]\n"},
        "bad.yaml:5",
        "unknown scope 'wirte_cluster': did you mean 'write_cluster'?",
    ),
    "empty scopes": (
        {"bad.yaml": "tokens:\n" + GOOD + "  - name: one\n    scopes: []\n"},
        "bad.yaml:5",
        "scopes is empty",
    ),
    "duplicate name across files": (
        {
            "a.yaml": "tokens:\n" + GOOD,
            "b.yaml": "tokens:\n  - name: other\n    scopes: [api]\n" + GOOD,
        },
        "b.yaml:4",
        "duplicate token name 'keep', also declared at",
    ),
    "bad duration": (
        {"bad.yaml": "tokens:\n" + GOOD + "  - name: one\n    scopes: [api]\n    expires: 90x\n"},
        "bad.yaml:6",
        "'90x' is not a valid expiry",
    ),
    "bad rotate_before": (
        {
            "bad.yaml": "tokens:\n"
            + GOOD
            + "  - name: one\n    scopes: [api]\n    expires: 90d\n    rotate_before: 2 weeks\n"
        },
        "bad.yaml:7",
        "'2 weeks' is not a duration",
    ),
}


@pytest.mark.parametrize("kind", list(MANIFEST_ERRORS))
def test_invalid_manifest_contacts_nothing_and_changes_nothing(ws: Workspace, kind: str) -> None:
    files, where, message = MANIFEST_ERRORS[kind]
    # A valid plan from these manifests would delete "doomed" and create "one".
    ws.converge(token("keep"), token("doomed"))
    state_before = ws.state_path.read_bytes()
    live_before = ws.live_by_name()
    ws.declare()
    for name, text in files.items():
        (ws.manifests / name).write_text(text, encoding="utf-8")
    ws.api.reset_stats()

    plan = ws.plan("--detailed-exitcode")
    assert_clean_error(plan, "in manifests:", where, message)
    assert plan.stdout == ""
    applied = ws.apply("--force", fast=True)
    assert_clean_error(applied, where, message)
    assert applied.stdout == ""
    validated = ws.run("validate", "manifests", fast=True)
    assert_clean_error(validated, where, message)

    assert ws.api.stats()["total"] == 0, "an invalid manifest must not contact the API"
    assert ws.state_path.read_bytes() == state_before
    assert ws.live_by_name() == live_before


def test_apply_without_auto_approve_refuses_when_stdin_is_not_a_terminal(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.api.reset_stats()
    refused = ws.run("apply", "--secrets-out", str(ws.secrets_path), input="yes\n")
    assert_clean_error(refused, "stdin is not a terminal", "--auto-approve")
    assert ws.writes() == {"create": 0, "delete": 0}
    assert ws.live() == []
    assert not ws.state_path.exists()


def test_validate_and_schema_need_no_credentials(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "a.yaml").write_text(
        "tokens:\n  - name: one\n    scopes: [api]\n  - name: two\n    scopes: [read_cluster]\n",
        encoding="utf-8",
    )
    validated = run_cli_subprocess("validate", cwd=tmp_path)
    assert validated.exit_code == 0, validated
    assert validated.stdout == "2 tokens in 1 file: valid.\n"
    schema = run_cli_subprocess("schema", cwd=tmp_path)
    assert schema.exit_code == 0, schema
    document = json.loads(schema.stdout)
    assert "tokens" in document["properties"]
    assert document["$schema"].startswith("https://json-schema.org/")
    # Neither made a state directory nor started anything.
    assert os.listdir(tmp_path) == ["manifests"]


@pytest.mark.parametrize("command", [("validate",), ("schema",), ("show", "plan.json")])
def test_output_options_work_after_offline_commands(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """--no-color and -v are global: accepted after every command, the offline ones too."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - name: svc\n    scopes: [api]\n", encoding="utf-8"
    )
    if command[0] == "show":
        saved = run_cli_subprocess(
            "--endpoint", "local", "plan", "--out", "plan.json", cwd=tmp_path
        )
        assert saved.exit_code == 0, saved
    result = run_cli_subprocess(*command, "--no-color", "-v", cwd=tmp_path)
    assert result.exit_code == 0, result
    assert "\x1b[" not in result.stdout


def test_validate_help_lists_no_connection_options(tmp_path: Path) -> None:
    result = run_cli_subprocess("validate", "--help", cwd=tmp_path)
    assert result.exit_code == 0, result
    assert "--no-color" in result.stdout
    for connection in ("--endpoint", "--api-key", "--state", "--ca-bundle"):
        assert connection not in result.stdout, connection


def test_serve_on_a_busy_port_is_one_line_naming_the_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli_subprocess("serve", "--port", str(port), "--db", "api.db", cwd=tmp_path)
    assert_clean_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
