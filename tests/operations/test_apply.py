"""The plan and apply use cases: as a library with no command line, and the safety
threshold apply enforces (through the real CLI against the local API over HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from support.checks import assert_clean_error
from support.local_api import LocalApi
from support.workspace import Workspace, token

from reconciler.plan.model import MIN_TOKENS_FOR_THRESHOLD


def _manifest(root: Path, *names: str) -> Path:
    folder = root / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    entries = "".join(f"  - name: {name}\n    scopes: [api]\n" for name in names)
    (folder / "tokens.yaml").write_text("tokens:\n" + entries, encoding="utf-8")
    return folder


def test_operations_plan_and_apply_without_the_cli(local_api: LocalApi, tmp_path: Path) -> None:
    """A library user plans and applies with reconciler.operations alone: the CLI module is
    never imported, tokens are made, the values land in the sink, the next plan is empty."""
    folder = _manifest(tmp_path, "lib-one", "lib-two")
    secrets = tmp_path / "new.json"
    script = textwrap.dedent(
        f"""
        import json, sys
        from reconciler.operations.apply import ApplyRequest, apply
        from reconciler.operations.plan import PlanRequest, make_plan
        from reconciler.session import Session, SessionSettings

        settings = SessionSettings(endpoint={local_api.url!r}, api_key={local_api.admin_key!r},
                                   state={str(tmp_path / "state.json")!r})
        with Session(settings) as session:
            first = make_plan(session, PlanRequest(paths=[{str(folder)!r}]))
            outcome = apply(session, ApplyRequest(paths=[{str(folder)!r}],
                                                  secrets_out={str(secrets)!r}))
            again = make_plan(session, PlanRequest(paths=[{str(folder)!r}]))
        print(json.dumps({{
            "planned": sorted(a.kind + " " + a.name for a in first.plan.actions),
            "ok": outcome.result is not None and outcome.result.ok,
            "done": len(outcome.result.done) if outcome.result else 0,
            "again": again.plan.has_changes,
            "cli_loaded": "reconciler.cli" in sys.modules,
        }}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report == {
        "planned": ["create lib-one", "create lib-two"],
        "ok": True,
        "done": 2,
        "again": False,
        "cli_loaded": False,
    }
    assert set(json.loads(secrets.read_text(encoding="utf-8"))) == {"lib-one", "lib-two"}
    assert local_api.store.count_tokens() == 2


# ---------------------------------------------------------------- the safety threshold


def test_threshold_refuses_mass_delete_unless_force(ws: Workspace) -> None:
    names = [f"svc-{n:02d}" for n in range(MIN_TOKENS_FOR_THRESHOLD)]
    owned = ws.converge(*(token(name) for name in names))

    # 3 of 10 (30%) is at the threshold, not above it: allowed.
    ws.declare(*(token(name) for name in names[3:]))
    allowed = ws.run("apply", "--auto-approve", fast=True)
    assert allowed.exit_code == 0, allowed
    assert "3 deleted" in allowed.stdout

    # Back to 10 managed tokens, then remove 4 (40%): refused.
    ws.converge(*(token(name) for name in names))
    ws.declare(*(token(name) for name in names[4:]))
    ws.api.reset_stats()
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert "Warning: " in plan.stderr and "--force" in plan.stderr, plan
    refused = ws.run("apply", "--auto-approve")
    assert_clean_error(
        refused,
        "would delete or replace 4 of 10 managed tokens (40%)",
        "safety threshold of 30%",
        "--force",
    )
    assert ws.writes() == {"create": 0, "delete": 0}
    assert len(ws.live()) == 10

    forced = ws.run("apply", "--auto-approve", "--force")
    assert forced.exit_code == 0, forced
    assert "Apply complete: 4 deleted." in forced.stdout
    assert sorted(ws.live_by_name()) == names[4:]
    assert set(ws.owned()) == set(names[4:])
    assert owned["svc-09"] == ws.owned()["svc-09"]


def test_prune_counts_towards_the_threshold(ws: Workspace) -> None:
    """--prune claims the unowned tokens it would delete, so they count in the share."""
    strays = [ws.seed(f"stray-{n}") for n in range(MIN_TOKENS_FOR_THRESHOLD)]
    ws.converge(token("svc"))
    ws.api.reset_stats()
    refused = ws.run("apply", "--auto-approve", "--prune")
    assert_clean_error(refused, "would delete or replace 10 of 11 managed tokens", "--force")
    assert ws.writes() == {"create": 0, "delete": 0}

    forced = ws.run("apply", "--auto-approve", "--prune", "--force", fast=True)
    assert forced.exit_code == 0, forced
    assert "Apply complete: 10 deleted." in forced.stdout
    assert list(ws.live_by_name()) == ["svc"]
    assert not set(strays) & {record.uid for record in ws.live()}


def test_empty_manifests_refuse_to_delete_unless_force(ws: Workspace) -> None:
    ws.converge(token("a"), token("b"))
    ws.declare()  # tokens: []
    ws.api.reset_stats()
    refused = ws.run("apply", "--auto-approve")
    assert_clean_error(
        refused, "the manifests declare no token at all", "would delete 2 tokens", "--force"
    )
    assert ws.writes() == {"create": 0, "delete": 0}
    assert len(ws.live()) == 2

    forced = ws.run("apply", "--auto-approve", "--force", fast=True)
    assert forced.exit_code == 0, forced
    assert ws.live() == []
    assert ws.owned() == {}
