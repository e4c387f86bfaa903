"""Generations, in-place updates and overlap end to end, through the real CLI against the
local API over HTTP with unique names enforced (Yatai's behaviour, the default), and again
with duplicate names allowed where behaviour could differ.

A token's value is checked the way its consumers use it: a request to /auth/current sent
with that value (200 = it works)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from support.cli import CliResult
from support.local_api import LocalApi
from support.workspace import Workspace, WorkspaceFactory, token

# Commands run as a CI job types them: the API from BentoML's variables.
pytestmark = pytest.mark.env_connection

SECRETS = "secrets.json"
APPLY = ("apply", "--auto-approve", "--secrets-out", SECRETS)
AUTH_CURRENT = "/api/v1/auth/current"


def ok(result: CliResult, *codes: int) -> CliResult:
    assert result.exit_code in (codes or (0,)), str(result)
    return result


def works(api: LocalApi, value: str) -> bool:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.get(AUTH_CURRENT, headers={"X-YATAI-API-TOKEN": value})
    return response.status_code == 200


def secrets(ws: Workspace) -> dict[str, str]:
    data: dict[str, str] = json.loads((ws.root / SECRETS).read_text(encoding="utf-8"))
    return data


def current(ws: Workspace, name: str) -> dict[str, Any]:
    return next(t for t in ws.state()["tokens"] if t["name"] == name)


@pytest.mark.parametrize("duplicates", [False, True], ids=["unique-names", "duplicate-names"])
def test_scope_and_description_change_update_in_place(
    make_ws: WorkspaceFactory, duplicates: bool
) -> None:
    ws = make_ws(allow_duplicate_names=duplicates)
    ws.declare(token("svc", description="old"))
    ws.setup(*APPLY)
    uid, value = ws.owned()["svc"], secrets(ws)["svc"]
    (ws.root / SECRETS).unlink()

    ws.declare(token("svc", description="new", scopes=["api", "read_cluster"]))
    plan = ok(ws.run("plan", "--detailed-exitcode"), 2)
    assert "~   update   svc" in plan.stdout and uid in plan.stdout
    assert "scopes changed: +read_cluster; description changed" in plan.stdout
    assert "Plan: 0 to create, 0 to replace, 1 to update, 0 to delete" in plan.stdout
    applied = ok(ws.run(*APPLY))
    assert "Apply complete: 1 updated." in applied.stdout
    assert ws.owned()["svc"] == uid and works(ws.api, value)
    sink = ws.root / SECRETS
    assert not sink.exists() or secrets(ws) == {}  # nothing delivered: nothing to do
    assert current(ws, "svc")["spec"]["description"] == "new"
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")


def test_updates_replace_makes_generations_that_alternate_names(ws: Workspace) -> None:
    ws.declare(token("svc", description="one"))
    ws.setup(*APPLY)
    first_uid, first_value = ws.owned()["svc"], secrets(ws)["svc"]

    ws.declare(token("svc", description="two"))
    plan = ok(ws.run("plan", "--updates", "replace"))
    assert "-/+ replace  svc → svc-2" in plan.stdout
    ok(ws.run(*APPLY, "--updates", "replace"))
    second = current(ws, "svc")
    assert second["live_name"] == "svc-2" and second["proven"] is True
    assert ws.live_by_name() == {"svc-2": [second["uid"]]}
    assert not works(ws.api, first_value) and works(ws.api, secrets(ws)["svc"])
    assert first_uid not in json.dumps(ws.state())

    # The next generation takes the manifest name again.
    ok(ws.run(*APPLY, "--replace", "svc"))
    third = current(ws, "svc")
    assert third["live_name"] == "svc" and ws.live_by_name() == {"svc": [third["uid"]]}
    assert secrets(ws)["svc"] != first_value and works(ws.api, secrets(ws)["svc"])


def test_no_update_route_fails_with_the_hint_and_loses_nothing(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws(update_route=False)
    ws.declare(token("svc", description="old"))
    ws.setup(*APPLY)
    uid, value = ws.owned()["svc"], secrets(ws)["svc"]
    before = ws.state()

    ws.declare(token("svc", description="new"))
    failed = ws.run(*APPLY)
    assert failed.exit_code == 1, failed
    assert "--updates replace" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr
    assert ws.state()["tokens"] == before["tokens"] and works(ws.api, value)

    ok(ws.run(*APPLY, "--updates", "replace"))
    assert current(ws, "svc")["live_name"] == "svc-2" and ws.owned()["svc"] != uid
    assert ws.run("plan", "--updates", "replace", "--detailed-exitcode").exit_code == 0


def test_overlap_keeps_the_previous_generation_until_it_ends(ws: Workspace) -> None:
    ws.declare(token("svc", description="one", overlap="3s"))
    ws.setup(*APPLY)
    old_uid, old_value = ws.owned()["svc"], secrets(ws)["svc"]

    ws.declare(token("svc", description="two", overlap="3s"))
    ok(ws.run(*APPLY, "--updates", "replace"))
    new_value = secrets(ws)["svc"]
    assert works(ws.api, old_value) and works(ws.api, new_value)
    [previous] = ws.state()["previous"]
    assert previous["uid"] == old_uid and previous["retire_after"] is not None

    kept = ok(ws.run("plan", "--detailed-exitcode", "--updates", "replace"))
    assert f"svc: previous generation svc {old_uid} kept until" in kept.stdout
    time.sleep(3.5)
    due = ok(ws.run("plan", "--detailed-exitcode", "--updates", "replace"), 2)
    assert "-   retire   svc" in due.stdout and old_uid in due.stdout
    applied = ok(ws.run(*APPLY, "--updates", "replace"))
    assert "1 retired" in applied.stdout
    assert not works(ws.api, old_value) and works(ws.api, new_value)
    assert ws.state()["previous"] == []


def test_replace_retires_at_once_whatever_the_overlap(ws: Workspace) -> None:
    ws.declare(token("svc", overlap="1h"))
    ws.setup(*APPLY)
    old_value = secrets(ws)["svc"]
    ok(ws.run(*APPLY, "--replace", "svc"))
    assert not works(ws.api, old_value) and works(ws.api, secrets(ws)["svc"])
    assert ws.state()["previous"] == []

    unknown = ws.run("plan", "--replace", "nope")
    assert unknown.exit_code == 1 and "--replace nope" in unknown.stderr


def test_a_value_refused_at_auth_current_keeps_the_previous_generation(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.setup(*APPLY)
    old_uid, old_value = ws.owned()["svc"], secrets(ws)["svc"]

    ws.api.set_faults(refuse_auth_current=True)
    failed = ws.run(*APPLY, "--replace", "svc")
    assert failed.exit_code == 1, failed
    assert "not accepted by the API" in failed.stdout + failed.stderr
    # (/auth/current refuses every value while the fault is on: ask the store.)
    assert ws.api.store.authenticate(old_value) is not None
    [previous] = ws.state()["previous"]
    assert previous["uid"] == old_uid and "not accepted" in previous["held"]
    assert current(ws, "svc")["proven"] is False
    plan = ok(ws.run("plan"))
    assert "its value was not accepted by the API at /auth/current" in plan.stdout

    ws.api.reset_faults()
    ok(ws.run(*APPLY))
    assert not works(ws.api, old_value) and works(ws.api, secrets(ws)["svc"])
    assert ws.state()["previous"] == [] and current(ws, "svc")["proven"] is True
    assert len([u for uids in ws.live_by_name().values() for u in uids]) == 1


def test_a_name_held_by_an_unmanaged_token_is_skipped(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.setup(*APPLY)
    other = ws.seed("svc-2", scopes=())
    ok(ws.run(*APPLY, "--replace", "svc"))
    assert current(ws, "svc")["live_name"] == "svc-3"
    assert ws.live_by_name()["svc-2"] == [other]


def test_plan_json_has_update_retire_and_live_names(ws: Workspace) -> None:
    ws.declare(token("a"), token("b", overlap="1s"))
    ws.setup(*APPLY)
    ws.declare(token("a", description="changed"), token("b", overlap="1s"))
    data = json.loads(ok(ws.run("plan", "--format", "json", "--replace", "b")).stdout)
    kinds = {a["name"]: a for a in data["actions"]}
    assert kinds["a"]["kind"] == "update" and kinds["a"]["after"]["live_name"] == "a"
    assert kinds["b"]["kind"] == "replace" and kinds["b"]["after"]["live_name"] == "b-2"
    assert data["summary"]["update"] == 1 and data["summary"]["retire"] == 0
    assert data["notes"] == []

    ok(ws.run(*APPLY, "--updates", "replace"))  # b is unchanged; a replaced: a-2
    ok(ws.run(*APPLY, "--replace", "a"))
    time.sleep(0.1)
    assert current(ws, "a")["live_name"] == "a"


def test_version_1_state_migrates_on_the_next_write(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.setup(*APPLY)
    v2 = ws.state()
    owned = v2["tokens"][0]
    v1 = {
        "format_version": 1,
        "serial": v2["serial"],
        "lineage": v2["lineage"],
        "endpoint": v2["endpoint"],
        "tokens": [
            {
                "name": "svc",
                "uid": owned["uid"],
                "spec": {k: v for k, v in owned["spec"].items() if k != "overlap"},
                "created_at": owned["created_at"],
                "expired_at": owned["expired_at"],
            }
        ],
        "pending_creates": [],
        "retired": [],
    }
    ws.state_path.write_text(json.dumps(v1, indent=2), encoding="utf-8")
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")
    assert ws.state()["format_version"] == 1  # plan writes nothing
    ok(ws.run(*APPLY, "--replace", "svc"))
    migrated = ws.state()
    assert migrated["format_version"] == 2 and migrated["lineage"] == v2["lineage"]
    assert current(ws, "svc")["live_name"] == "svc-2"


def test_past_fixed_expiry_warns_in_validate_and_is_refused_by_plan(ws: Workspace) -> None:
    ws.declare(token("old", expires="2020-01-01"))
    checked = ok(ws.run("validate"))
    assert "Warning:" in checked.stderr and "2020-01-01" in checked.stderr
    refused = ws.run("plan")
    assert refused.exit_code == 1
    assert "tokens.yaml:2: token old" in refused.stderr and "born expired" in refused.stderr
    assert not ws.state_path.exists()


def test_manifest_names_leave_room_for_the_generation_suffix(ws: Workspace) -> None:
    ws.declare(token("a" * 61), token("ok", expires="1h30m", rotate_before="30m", overlap="5m"))
    result = ws.run("validate")
    assert result.exit_code == 1 and "at most 60" in result.stderr
    ws.declare(token("ok", expires="1h30m", rotate_before="90m"))
    result = ws.run("validate")
    assert result.exit_code == 1 and "rotate_before (90m) must be shorter" in result.stderr


def test_removing_a_token_deletes_every_generation(ws: Workspace) -> None:
    ws.declare(token("a", overlap="1h"), token("b"))
    ws.setup(*APPLY)
    ok(ws.run(*APPLY, "--updates", "replace", "--replace", "a"))
    ws.declare(token("a", description="changed", overlap="1h"), token("b"))
    ok(ws.run(*APPLY, "--updates", "replace"))
    assert len(ws.state()["previous"]) == 1
    ws.declare(token("b"))
    plan = ok(ws.run("plan"))
    assert "-   retire   a (a-2)" in plan.stdout and "-   delete   a " in plan.stdout
    ok(ws.run(*APPLY))
    assert set(ws.live_by_name()) == {"b"} and ws.state()["previous"] == []
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")


def test_adopting_many_tokens_makes_no_request_per_token_and_one_state_write(
    ws: Workspace,
) -> None:
    names = [f"svc-{n:02d}" for n in range(25)]
    for name in names:
        ws.seed(name, scopes=["api"])
    ws.declare(*(token(name) for name in names))
    ws.api.reset_stats()
    applied = ok(ws.run("apply", "--auto-approve"))
    assert "Apply complete: 25 adopted." in applied.stdout
    requests = ws.api.stats()["requests"]
    assert not any(route.startswith("GET /api/v1/api_tokens/") for route in requests), requests
    assert ws.state()["serial"] == 1  # one write for every adoption
    assert sorted(ws.owned()) == names
