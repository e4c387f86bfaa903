"""What a new user hits first, through the real CLI: usage errors exit 1 with one line
that says the fix, suggested commands work when pasted, and the small things of issue 14."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from support.cli import CliResult, cli_environment, run_cli_subprocess
from support.local_api import LocalApi

from reconciler.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


EVERY_COMMAND = _commands(cli)


def one_line_error(result: CliResult, *fragments: str) -> str:
    assert result.exit_code == 1, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing\n{result}"
    return lines[0]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_unknown_option_exits_1_with_the_fix(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli_subprocess(*command, "--bogus", cwd=tmp_path)
    path = " ".join(command)
    one_line_error(result, "no such option --bogus", f"see reconciler {path} --help")
    assert _listing(tmp_path) == [], "a usage error must create nothing"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("plan", "--detailed-exitcode", "--bogus"), ["no such option --bogus for plan"]),
        (("plan", "--format", "xml"), ["plan: invalid value for '--format': 'xml'", "'json'"]),
        (("plan", "--lock", "maybe"), ["plan: invalid value for --lock: use true or false"]),
        (("plan", "--out"), ["plan: option '--out' requires an argument"]),
        (("apply", "--parallelism", "0"), ["apply: invalid value for '--parallelism'"]),
        (("import",), ["import: missing argument 'NAME'"]),
        (("state", "rm"), ["state rm: missing argument 'NAME'"]),
        (("show",), ["show: missing argument 'PLANFILE'"]),
        (("bogus",), ["no such command 'bogus'", "see reconciler --help"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_usage_errors_exit_1_never_2(
    args: tuple[str, ...], fragments: list[str], tmp_path: Path
) -> None:
    """2 is only 'changes pending' (plan --detailed-exitcode): a CI step testing for it
    must never read a mistyped flag as a plan with changes."""
    line = one_line_error(run_cli_subprocess(*args, cwd=tmp_path), *fragments)
    assert line.endswith("--help"), line


def test_saved_plan_hint_works_when_pasted(local_api: LocalApi, tmp_path: Path) -> None:
    """`plan --out` made with --endpoint and --state says how to apply it; the printed
    command, run as is, applies it (and never carries the API key)."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - name: pasted\n    scopes: [api]\n", encoding="utf-8"
    )
    env = {"BENTO_CLOUD_API_KEY": local_api.admin_key}
    connection = ("--endpoint", local_api.url, "--state", "custom/where.json")
    planned = run_cli_subprocess(
        "plan", *connection, "--out", "saved plan.json", cwd=tmp_path, env=env
    )
    assert planned.exit_code == 0, planned
    hint = planned.stderr.split("Apply it with: ", 1)[1].strip()
    assert local_api.admin_key not in hint
    words = shlex.split(hint)
    assert words[0] == "reconciler"
    applied = run_cli_subprocess(*words[1:], cwd=tmp_path, env=env)
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 created." in applied.stdout
    assert (tmp_path / "custom" / "where.json").exists()
    assert local_api.store.count_tokens() == 1


def test_error_hints_repeat_the_command_with_this_runs_options(
    local_api: LocalApi, tmp_path: Path
) -> None:
    """A conflict's fix (`reconciler import ...`) is repeated with the run's --endpoint and
    --state, and that command works when pasted."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - name: legacy\n    scopes: [api]\n", encoding="utf-8"
    )
    with local_api.client() as client:
        created = client.post(
            "/api/v1/api_tokens", json={"name": "legacy", "description": "x", "scopes": ["api"]}
        )
    created.raise_for_status()
    env = {"BENTO_CLOUD_API_KEY": local_api.admin_key}
    connection = ("--endpoint", local_api.url, "--state", "s/state.json")
    planned = run_cli_subprocess("plan", *connection, cwd=tmp_path, env=env)
    assert planned.exit_code == 1, planned
    marker = "with this run's options: `"
    assert marker in planned.stderr, planned
    command = planned.stderr.split(marker, 1)[1].split("`", 1)[0]
    words = shlex.split(command)
    assert words[:5] == ["reconciler", "--endpoint", local_api.url, "--state", "s/state.json"]
    imported = run_cli_subprocess(*words[1:], cwd=tmp_path, env=env)
    assert imported.exit_code == 0, imported
    owned = json.loads((tmp_path / "s" / "state.json").read_text(encoding="utf-8"))["tokens"]
    assert [t["name"] for t in owned] == ["legacy"]


def test_serve_stopped_by_sigterm_says_so_and_exits_0(tmp_path: Path) -> None:
    full = cli_environment(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "serve", "--port", "0", "--db", "api.sqlite3"],
        cwd=tmp_path,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "reconciler local API on" in first, first
        time.sleep(0.5)  # let uvicorn install its handlers
        proc.send_signal(signal.SIGTERM)
        _out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "Stopped the local API (SIGTERM)." in rest
    assert "Aborted" not in rest and "Traceback" not in rest


def test_plan_without_manifests_creates_nothing(tmp_path: Path) -> None:
    result = run_cli_subprocess("plan", "--endpoint", "local", cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "manifests: no such file or directory" in result.stderr
    assert _listing(tmp_path) == [], "a failed plan must leave nothing behind"


def test_plan_help_describes_paths(tmp_path: Path) -> None:
    result = run_cli_subprocess("plan", "--help", cwd=tmp_path)
    assert result.exit_code == 0, result
    assert "PATHS are manifest files or directories (default: manifests/)" in result.stdout


def test_markdown_escapes_underscore_with_a_backslash(local_api: LocalApi, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "t.yaml"
    env = {"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": local_api.admin_key}
    manifest.write_text(
        "tokens:\n  - name: md\n    description: old_one\n    scopes: [api]\n", encoding="utf-8"
    )
    applied = run_cli_subprocess(
        "apply", "--auto-approve", "--discard-secrets", cwd=tmp_path, env=env
    )
    assert applied.exit_code == 0, applied
    manifest.write_text(
        "tokens:\n  - name: md\n    description: new_one\n    scopes: [api]\n", encoding="utf-8"
    )
    shown = run_cli_subprocess("plan", "--format", "markdown", cwd=tmp_path, env=env)
    assert shown.exit_code == 0, shown
    assert "old\\_one" in shown.stdout and "new\\_one" in shown.stdout, shown
    assert "&#95;" not in shown.stdout


def test_durations_keep_the_users_spelling(local_api: LocalApi, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "t.yaml"
    env = {"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": local_api.admin_key}
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 14d\n    rotate_before: 7d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    planned = run_cli_subprocess("plan", "--format", "json", cwd=tmp_path, env=env)
    assert planned.exit_code == 0, planned
    after = json.loads(planned.stdout)["actions"][0]["after"]
    assert (after["expires"], after["rotate_before"]) == ("14d", "7d")
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 7d\n    rotate_before: 14d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    invalid = run_cli_subprocess("validate", cwd=tmp_path)
    assert invalid.exit_code == 1, invalid
    assert "rotate_before (14d)" in invalid.stderr and "(7d)" in invalid.stderr, invalid
    assert "2w" not in invalid.stderr


def test_tab_indentation_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    bad = tmp_path / "manifests" / "t.yaml"
    bad.write_text("tokens:\n\t- name: tabbed\n", encoding="utf-8")
    result = run_cli_subprocess("validate", cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "t.yaml:2" in result.stderr
    assert "tabs are not allowed for indentation, use spaces" in result.stderr
    assert "cannot start any token" not in result.stderr
    assert bad.read_text(encoding="utf-8") == "tokens:\n\t- name: tabbed\n"


@pytest.mark.parametrize("args", [(), ("state",)], ids=["reconciler", "reconciler state"])
def test_a_group_alone_prints_its_help_and_exits_1(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli_subprocess(*args, cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "Usage: reconciler" in result.output and "Commands:" in result.output
