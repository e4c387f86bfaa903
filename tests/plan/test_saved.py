"""Saved plans (reconciler.plan.saved): what they hold, that they are applied exactly as
planned, and every way they go stale, through the real CLI against the local API (`plan
--out FILE`, `apply FILE`, `show FILE`); then the plan file and its checks on their own,
on real files."""

from __future__ import annotations

import json
import stat
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from support.checks import failed, ok
from support.ci_docs import AUDIT, DEPLOYER, GRAFANA
from support.local_api import age_token
from support.planning import plan_for, spec, state_of, token
from support.workspace import Workspace

from reconciler.api.token import ApiToken
from reconciler.errors import PlanError
from reconciler.plan.saved import (
    PLANFILE_VERSION,
    SavedPlan,
    affected_tokens,
    check_fresh,
    is_plan_file,
    read_plan_file,
    write_plan_file,
)
from reconciler.util.times import utcnow

# Commands run as a user or a CI job types them: the API from BentoML's variables, the
# state at its default place.
pytestmark = pytest.mark.env_connection


def secrets_in(path: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_saved_plan_round_trip_applies_exactly_what_was_planned(ws: Workspace) -> None:
    (ws.root / "reconciler.yaml").write_text("updates: replace\n", encoding="utf-8")
    ws.declare(DEPLOYER, GRAFANA)
    planned = ok(ws.run("plan", "--out", "plan.json"))
    assert "Saved the plan to plan.json. Apply it with: reconciler apply plan.json" in (
        planned.stderr
    )
    planfile = ws.root / "plan.json"
    assert stat.S_IMODE(planfile.stat().st_mode) == 0o600
    # show renders the saved plan exactly as plan rendered it, in every format.
    for fmt in ("text", "markdown", "json"):
        shown = ok(ws.run("show", "plan.json", "--format", fmt)).stdout
        again = ok(ws.call("plan", "--format", fmt, "--lock=false")).stdout
        if fmt == "json":  # made at another moment
            shown_data, again_data = json.loads(shown), json.loads(again)
            assert shown_data.pop("created_at") != again_data.pop("created_at")
            # No state yet: each plan names the fresh lineage a first apply would start.
            assert shown_data.pop("state")["serial"] == again_data.pop("state")["serial"] == 0
            assert shown_data == again_data
        else:
            assert shown == again
    assert ok(ws.call("show", "plan.json")).stdout == planned.stdout

    # The manifests change after planning: the saved plan still does what it said.
    ws.declare({**DEPLOYER, "description": "Edited later"}, GRAFANA, AUDIT)
    applied = ok(ws.run("apply", "plan.json", "--secrets-out", "secrets.json"))
    assert "Apply complete: 2 created." in applied.stdout
    assert sorted(ws.live_by_name()) == ["ci-deployer", "grafana-reader"]
    assert sorted(secrets_in(ws.root / "secrets.json")) == ["ci-deployer", "grafana-reader"]
    state = ws.state()
    assert {t["name"]: t["spec"]["description"] for t in state["tokens"]} == {
        "ci-deployer": "Deploys bentos",
        "grafana-reader": "Dashboards",
    }
    # A fresh plan now sees the later edits.
    fresh = ok(ws.call("plan", "--detailed-exitcode"), 2)
    assert (
        "Plan: 1 to create, 0 to update, 1 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget." in fresh.stdout
    )


def test_saved_plan_holds_no_secret(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "plan.json"))
    ok(ws.call("apply", "plan.json", "--secrets-out", "secrets.json"))
    ws.declare({**DEPLOYER, "scopes": ["api", "read_cluster"]})
    ok(ws.run("plan", "--out", "plan2.json"))
    value = secrets_in(ws.root / "secrets.json")["ci-deployer"]
    for name in ("plan.json", "plan2.json"):
        text = (ws.root / name).read_text(encoding="utf-8")
        assert value not in text
        assert ws.api.admin_key not in text
        assert "rct_" not in text  # the local API's token value prefix
        data = json.loads(text)
        assert data["kind"] == "reconciler-plan"
        assert data["planfile_version"] == 1
        assert data["plan"]["format_version"] == 1


def test_saved_plan_is_applied_without_confirmation_but_needs_a_sink(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "plan.json"))
    # No terminal, no --auto-approve: a saved plan is the approval, but a create still needs
    # somewhere to put its secret.
    failed(ws.run("apply", "plan.json"), "--secrets-out FILE", "--discard-secrets")
    assert ws.live_by_name() == {}
    assert not ws.state_path.exists()
    done = ok(ws.run("apply", "plan.json", "--discard-secrets"))
    assert "Apply complete: 1 created." in done.stdout
    assert list(ws.live_by_name()) == ["ci-deployer"]
    # Applying from manifests still asks (and refuses without a terminal).
    ws.declare(DEPLOYER, GRAFANA)
    failed(ws.run("apply", "--secrets-out", "s.json"), "stdin is not a terminal")
    assert list(ws.live_by_name()) == ["ci-deployer"]


def test_saved_plan_refuses_prune_at_apply_time(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "plan.json"))
    failed(ws.run("apply", "plan.json", "--prune", "--discard-secrets"), "--prune")
    assert ws.live_by_name() == {}


def test_saved_plan_without_changes_applies_as_a_no_op(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    serial = ws.state()["serial"]
    ok(ws.call("plan", "--out", "plan.json", "--detailed-exitcode"))
    applied = ok(ws.run("apply", "plan.json"))
    assert "No changes." in applied.stdout
    assert ws.state()["serial"] == serial


def test_plan_file_may_have_any_name(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "tokens.plan.out"))
    assert (
        "Apply complete: 1 created."
        in ok(ws.call("apply", "tokens.plan.out", "--discard-secrets")).stdout
    )


def test_plan_with_conflict_leaves_no_plan_file(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ws.seed("ci-deployer", description="hand made", scopes=["api"])
    result = ws.run("plan", "--out", "plan.json", "--detailed-exitcode")
    failed(result, "1 conflict must be resolved", "reconciler import ci-deployer")
    assert "not owned by reconciler and differs from the manifest" in result.stdout
    assert not (ws.root / "plan.json").exists()


# ---------------------------------------------------------------- stale plans


def _applied_base(ws: Workspace) -> None:
    """Owned ci-deployer and grafana-reader; manifests then ask to replace ci-deployer and
    create audit."""
    ws.declare(DEPLOYER, GRAFANA)
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    ws.declare({**DEPLOYER, "scopes": ["api", "write_cluster"]}, GRAFANA, AUDIT)
    # A scope change replaces (as on an API without the update route), not updates.
    (ws.root / "reconciler.yaml").write_text("updates: replace\n", encoding="utf-8")


def _assert_stale(ws: Workspace, *needles: str) -> None:
    def snapshot() -> tuple[object, ...]:
        exists = ws.state_path.exists()
        return (ws.live_by_name(), exists and ws.state_path.read_bytes())

    before = snapshot()
    stderr = failed(
        ws.run("apply", "plan.json", "--discard-secrets"), "saved plan is stale", *needles
    )
    assert "reconciler plan --out" in stderr
    assert snapshot() == before, "a stale plan changed something"


def test_stale_plan_when_state_serial_moved(ws: Workspace) -> None:
    _applied_base(ws)
    ok(ws.call("plan", "--out", "plan.json"))
    serial = ws.state()["serial"]
    ok(ws.call("state", "rm", "grafana-reader", "--yes"))  # any write moves the serial
    _assert_stale(
        ws, f"the state changed since the plan was made (serial {serial} -> {serial + 1})"
    )


def test_stale_plan_when_state_lineage_changed(ws: Workspace) -> None:
    _applied_base(ws)
    ok(ws.call("plan", "--out", "plan.json"))
    data = ws.state()
    old_lineage = data["lineage"]
    data["lineage"] = str(uuid.uuid4())  # another state file, same serial
    ws.state_path.write_text(json.dumps(data), encoding="utf-8")
    _assert_stale(ws, f"the state lineage changed ({old_lineage} -> {data['lineage']})")


def test_stale_plan_when_state_vanished_or_appeared(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "first.json"))  # made with no state at all
    _applied_base(ws)
    failed(
        ws.run("apply", "first.json", "--discard-secrets"),
        "a state was written since the plan was made (none then, serial",
    )
    ok(ws.call("plan", "--out", "plan.json"))
    serial = ws.state()["serial"]
    ws.state_path.rename(ws.root / "elsewhere.json")
    _assert_stale(ws, f"the state is gone (the plan was made from serial {serial})")


def test_stale_plan_when_affected_live_tokens_changed(ws: Workspace) -> None:
    _applied_base(ws)
    owned = ws.owned()
    ok(ws.call("plan", "--out", "plan.json"))
    # Tokens the plan does not touch may change freely: still fresh.
    ws.seed("someone-elses", scopes=())
    ws.delete_by_hand(owned["grafana-reader"])
    # ...but not those it touches: the one it replaces, and the name it creates.
    ws.delete_by_hand(owned["ci-deployer"])
    intruder = ws.seed("audit", description="made by hand", scopes=["api"])
    _assert_stale(
        ws,
        f"a token named audit ({intruder}) was created",
        f"ci-deployer ({owned['ci-deployer']}) was deleted",
    )
    assert "grafana-reader" not in failed(ws.call("apply", "plan.json", "--discard-secrets"))


def test_stale_plan_names_the_changed_attributes(ws: Workspace) -> None:
    _applied_base(ws)
    uid = ws.owned()["ci-deployer"]
    ok(ws.call("plan", "--out", "plan.json"))
    age_token(ws.api, uid, created_at=utcnow(), expired_at=utcnow() + timedelta(days=3))
    _assert_stale(ws, f"ci-deployer ({uid}) changed its expiry")


def test_untouched_live_changes_do_not_make_a_plan_stale(ws: Workspace) -> None:
    _applied_base(ws)
    ok(ws.call("plan", "--out", "plan.json"))
    ws.seed("someone-elses", scopes=())
    applied = ok(ws.run("apply", "plan.json", "--secrets-out", "s.json"))
    assert "Apply complete: 1 replaced, 1 created." in applied.stdout or (
        "Apply complete: 1 created, 1 replaced." in applied.stdout
    )
    assert sorted(secrets_in(ws.root / "s.json")) == ["audit", "ci-deployer"]


def test_stale_plan_for_another_endpoint(ws: Workspace) -> None:
    _applied_base(ws)
    ok(ws.call("plan", "--out", "plan.json"))
    # The same server under another name is another endpoint as far as state is concerned.
    other = ws.api.url.replace("127.0.0.1", "localhost")
    failed(
        ws.run("apply", "plan.json", "--endpoint", other, "--discard-secrets"),
        f"saved plan is for endpoint {ws.api.url}, not {other}",
    )
    # With a separate state file for that endpoint, the endpoint is still what is refused.
    stderr = failed(
        ws.call(
            "apply", "plan.json", "--endpoint", other, "--state", "other.json", "--discard-secrets"
        ),
        "saved plan is for endpoint",
    )
    assert "belongs to endpoint" not in stderr
    assert not (ws.root / "other.json").exists()


# ---------------------------------------------------------------- the plan file itself

ENDPOINT = "https://cloud.example.com"


def _saved(live: list[ApiToken]) -> SavedPlan:
    """A plan replacing ci (its description changed) and creating new, against ``live``."""
    state = state_of(("ci", "u1", spec("ci", "old")), ("keep", "u2", spec("keep")))
    plan = plan_for([spec("ci", "new"), spec("keep"), spec("new")], live, state)
    return SavedPlan(plan, ENDPOINT, "digest-1", affected=affected_tokens(plan, live))


LIVE = [token("u1", "ci", "old"), token("u2", "keep"), token("u3", "bystander")]


def test_a_plan_file_reads_back_as_it_was_written(tmp_path: Path) -> None:
    saved = _saved(LIVE)
    path = tmp_path / "tokens.plan"
    write_plan_file(path, saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert is_plan_file(path)
    again = read_plan_file(path)
    assert again == saved
    data = json.loads(path.read_text(encoding="utf-8"))
    assert (data["kind"], data["planfile_version"]) == ("reconciler-plan", PLANFILE_VERSION)


def test_a_manifest_or_another_json_file_is_not_a_plan_file(tmp_path: Path) -> None:
    manifest = tmp_path / "plan.yaml"
    write_plan_file(manifest, _saved(LIVE))  # the content of a plan, named like a manifest
    other = tmp_path / "other.json"
    other.write_text('{"tokens": []}\n', encoding="utf-8")
    assert not is_plan_file(manifest)
    assert not is_plan_file(other)
    assert not is_plan_file(tmp_path)
    assert not is_plan_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such plan file"),
        ("not json at all", "not a readable plan file"),
        ('{"tokens": []}', "not a reconciler plan file (made by `reconciler plan --out`)"),
        ('{"kind": "reconciler-plan", "planfile_version": 99}', "plan file version 99 is not"),
        ('{"kind": "reconciler-plan", "planfile_version": 1}', "plan file is damaged (KeyError"),
    ],
    ids=["missing", "not-json", "other-kind", "newer", "damaged"],
)
def test_what_is_not_a_plan_this_version_reads_is_refused(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        read_plan_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment in str(caught.value)


def test_the_snapshot_holds_only_the_tokens_the_plan_touches() -> None:
    rows = affected_tokens(_saved(LIVE).plan, LIVE)
    # ci is replaced (by uid and name), new is created (its name); keep is unchanged and
    # bystander unmanaged, so either may change freely.
    assert [(row["name"], row["uid"]) for row in rows] == [("ci", "u1")]
    assert rows[0] == {
        "uid": "u1",
        "name": "ci",
        "description": "old",
        "scopes": ["api"],
        "expired_at": None,
    }


def test_a_fresh_plan_passes_and_untouched_tokens_may_change() -> None:
    saved = _saved(LIVE)
    state = state_of(("ci", "u1", spec("ci", "old")), ("keep", "u2", spec("keep")))
    check_fresh(saved, endpoint=ENDPOINT, state=state, live=LIVE)
    moved = [LIVE[0], token("u2", "keep", "edited by hand"), token("u4", "stranger")]
    check_fresh(saved, endpoint=ENDPOINT, state=state, live=moved)


def test_a_stale_plan_names_every_reason() -> None:
    saved = _saved(LIVE)
    state = replace(
        state_of(("ci", "u1", spec("ci", "old")), ("keep", "u2", spec("keep"))), serial=4
    )
    live = [token("u1", "ci", "old", ["api", "read_cluster"]), token("u9", "new"), LIVE[1]]
    with pytest.raises(PlanError) as caught:
        check_fresh(saved, endpoint=ENDPOINT, state=state, live=live)
    message = str(caught.value)
    assert message.startswith("saved plan is stale: ")
    assert "the state changed since the plan was made (serial 3 -> 4)" in message
    assert "ci (u1) changed its scopes" in message
    assert "a token named new (u9) was created" in message
    assert message.endswith("Run `reconciler plan --out` again and review the new plan.")

    with pytest.raises(PlanError) as elsewhere:
        check_fresh(saved, endpoint="http://127.0.0.1:1", state=state, live=LIVE)
    assert str(elsewhere.value).startswith(f"saved plan is for endpoint {ENDPOINT}, not http")
