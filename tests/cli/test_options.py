"""Usage errors and command hints (reconciler.cli.options), through the real CLI: every
usage error exits 1 with one line that says the fix, and suggested commands work when
pasted."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
import pytest
from support.checks import listing, one_line_error
from support.cli import run_cli_subprocess
from support.local_api import LocalApi
from support.workspace import Workspace, token

from reconciler.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


EVERY_COMMAND = _commands(cli)


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_unknown_option_exits_1_with_the_fix(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli_subprocess(*command, "--bogus", cwd=tmp_path)
    path = " ".join(command)
    one_line_error(result, "no such option --bogus", f"see reconciler {path} --help")
    assert listing(tmp_path) == [], "a usage error must create nothing"


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


@pytest.mark.parametrize(
    ("args", "given", "meant"),
    [
        (("plan", "-out", "x.plan"), "-out", "--out"),
        (("plan", "-detailed-exitcode"), "-detailed-exitcode", "--detailed-exitcode"),
        (("plan", "-replace", "ci"), "-replace", "--replace"),
        (("plan", "-lock-timeout=5m"), "-lock-timeout", "--lock-timeout"),
        (("apply", "-auto-approve"), "-auto-approve", "--auto-approve"),
        (("apply", "-parallelism", "4"), "-parallelism", "--parallelism"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_terraform_single_dash_options_get_the_two_dash_spelling(
    args: tuple[str, ...], given: str, meant: str, tmp_path: Path
) -> None:
    one_line_error(
        run_cli_subprocess(*args, cwd=tmp_path),
        f"no such option {given} for {args[0]}: options take two dashes (did you mean {meant}?)",
    )
    assert listing(tmp_path) == []


def test_replace_of_an_unknown_name_suggests_the_managed_one(ws: Workspace) -> None:
    ws.declare(token("ci-deployer"), token("grafana-reader"))
    assert ws.apply().exit_code == 0
    result = ws.plan("--replace", "ci-deploy")
    assert result.exit_code == 1, result
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: --replace ci-deploy: not a token reconciler owns"), result
    assert "(did you mean ci-deployer?)" in first


def test_an_endpoint_pasted_with_api_v1_is_the_same_endpoint(
    local_api: LocalApi, tmp_path: Path
) -> None:
    """https://HOST/api/v1 pasted from an API URL reaches the same API, and state stays
    bound to the base URL, so either spelling works afterwards."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - name: pasted\n    scopes: [api]\n", encoding="utf-8"
    )
    common = ("--api-key", local_api.admin_key, "--state", "s.json")
    applied = run_cli_subprocess(
        "--endpoint", local_api.url + "/api/v1/", *common, "apply", "--auto-approve",
        "--secrets-out", "state/new.json", cwd=tmp_path,
    )  # fmt: skip
    assert applied.exit_code == 0, applied
    assert json.loads((tmp_path / "s.json").read_text())["endpoint"] == local_api.url
    again = run_cli_subprocess(
        "--endpoint", local_api.url, *common, "plan", "--detailed-exitcode", cwd=tmp_path
    )
    assert again.exit_code == 0, again
