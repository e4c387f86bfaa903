"""`apply`, `state list` and `validate` speak JSON (format_version 1), as plan does: one
document on stdout, everything for people on stderr, and the same exit codes."""

from __future__ import annotations

import json

from support.cli import run_cli_subprocess
from support.workspace import Workspace, WorkspaceFactory, token


def test_apply_prints_one_document_of_what_it_did(ws: Workspace) -> None:
    ws.declare(token("alpha"), token("beta", scopes=["read_cluster"]))
    result = ws.apply("--format", "json")
    assert result.exit_code == 0, result
    document = json.loads(result.stdout)  # nothing else on stdout
    assert document["format_version"] == 1
    assert document["ok"] is True and document["changes"] is True
    assert document["summary"]["create"] == 2
    assert sorted(item["name"] for item in document["done"]) == ["alpha", "beta"]
    assert document["failed"] == [] and document["not_started"] == []
    assert document["secrets_out"] == str(ws.secrets_path)
    # The plan and the progress are for people: on stderr.
    assert "Plan: 2 to create" in result.stderr and "Applying..." in result.stderr
    values = ws.secrets()
    assert not any(value in result.stdout + result.stderr for value in values.values())

    again = ws.apply("--format", "json")
    assert again.exit_code == 0, again
    assert json.loads(again.stdout)["changes"] is False


def test_an_error_before_any_change_is_one_line_on_stderr(ws: Workspace) -> None:
    ws.declare(token("alpha"))
    ws.secrets_path.mkdir(parents=True)  # a directory where the secrets file should go
    result = ws.apply("--format", "json")
    assert result.exit_code == 1, result
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("Error: --secrets-out ")
    assert ws.live() == []


def test_a_failed_action_is_in_the_document_with_exit_code_1(make_ws: WorkspaceFactory) -> None:
    ws = make_ws(update_route=False)
    ws.converge(token("alpha"), token("beta"))
    ws.declare(token("alpha", description="changed"), token("beta"), token("gamma"))
    result = ws.apply("--format", "json", parallelism=1)
    assert result.exit_code == 1, result
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [(f["kind"], f["name"]) for f in document["failed"]] == [("update", "alpha")]
    assert "--updates replace" in document["failed"][0]["detail"]
    done = [(d["kind"], d["name"]) for d in document["done"]]
    started = done + [(n["kind"], n["name"]) for n in document["not_started"]]
    assert sorted(started) == [("create", "gamma")]


def test_state_list_as_json_holds_what_state_records(ws: Workspace) -> None:
    ws.converge(token("alpha"))
    result = ws.run("state", "list", "--format", "json")
    assert result.exit_code == 0, result
    document = json.loads(result.stdout)
    assert document["format_version"] == 1
    assert document["state_format_version"] == ws.state()["format_version"]
    assert [t["name"] for t in document["tokens"]] == ["alpha"]
    assert document["tokens"][0]["uid"] == ws.owned()["alpha"]


def test_validate_as_json_lists_every_problem_with_file_and_line(ws: Workspace) -> None:
    ws.manifest_path.write_text(
        "tokens:\n  - name: ok-one\n    scopes: [api]\n  - name: Bad\n    scopes: [nope]\n",
        encoding="utf-8",
    )
    result = run_cli_subprocess("validate", "--format", "json", cwd=ws.root)
    assert result.exit_code == 1, result
    document = json.loads(result.stdout)
    assert document["valid"] is False and document["format_version"] == 1
    lines = {(p["file"], p["line"]) for p in document["problems"]}
    assert lines == {("manifests/tokens.yaml", 4), ("manifests/tokens.yaml", 5)}
    assert result.stderr == ""

    ws.declare(token("ok-one"))
    result = run_cli_subprocess("validate", "--format", "json", cwd=ws.root)
    assert result.exit_code == 0, result
    assert json.loads(result.stdout) == {
        "format_version": 1,
        "valid": True,
        "tokens": 1,
        "files": 1,
        "warnings": [],
        "problems": [],
    }
