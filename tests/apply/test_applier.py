"""The applier carrying out plans, through the real CLI against the local API over HTTP:
each row of the ownership table, replacements new-first, generations and overlap,
rotation, in-place updates, failures part-way, lost create answers, and the secrets file
forgetting the values of tokens that are gone.

Output, exit codes and secrets are checked on real subprocesses; setup steps run the same
``main()`` in this process to keep the file fast. What really exists is read from the
server's own store, and what the CLI did from its request stats. Tests marked
``env_connection`` reach the API through BentoML's variables, as a nightly CI job does.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.checks import assert_clean_error, ok
from support.cli import CliResult
from support.local_api import LocalApi, age_token, token_times
from support.workspace import CREATE_ROUTE, Workspace, WorkspaceFactory, token

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.apply.applier import CREATE_ATTEMPTS, Applier
from reconciler.apply.delivery import Deliveries
from reconciler.errors import SecretsError
from reconciler.manifest.spec import Expiry, TokenSpec
from reconciler.plan.model import MIN_TOKENS_FOR_THRESHOLD
from reconciler.plan.planner import build_plan
from reconciler.server.store import parse_db_time
from reconciler.state.backends import backend_for
from reconciler.state.journal import Journal
from reconciler.state.model import State
from reconciler.util.times import utcnow


def assert_state_matches_live(ws: Workspace) -> None:
    """Every owned uid is live under its name, and no live token of an owned name is
    unaccounted for (the state is the truth about what reconciler made)."""
    owned = ws.owned()
    live = {record.uid: record.name for record in ws.live()}
    for name, uid in owned.items():
        assert live.get(uid) == name, f"owned {name} ({uid}) is not live"
    for uid, name in live.items():
        assert owned.get(name, uid) == uid, f"live {name} ({uid}) beside the owned one"


def db_rows(api: LocalApi) -> dict[str, tuple[str, str | None]]:
    """uid -> (created_at, deleted_at) of every token ever stored, deleted ones included."""
    connection = sqlite3.connect(f"file:{api.db_path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT uid, created_at, deleted_at FROM tokens").fetchall()
    finally:
        connection.close()
    return {str(uid): (str(created), deleted) for uid, created, deleted in rows}


SECRETS = "secrets.json"
APPLY = ("apply", "--auto-approve", "--secrets-out", SECRETS)
AUTH_CURRENT = "/api/v1/auth/current"


def works(api: LocalApi, value: str) -> bool:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.get(AUTH_CURRENT, headers={"X-YATAI-API-TOKEN": value})
    return response.status_code == 200


def current(ws: Workspace, name: str) -> dict[str, Any]:
    return next(t for t in ws.state()["tokens"] if t["name"] == name)


POLICY = {"scopes": ["api"], "expires": "30d", "rotate_before": "14d"}
ACTION_LINE = re.compile(
    r"^  \S+\s+(?:create|replace|update|delete|retire|adopt|forget)\s{2,}(\S+)"
)
NIGHTLY = ("apply", "--auto-approve", "--secrets-out", "secrets.env")


def dotenv(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def live_for(ws: Workspace, uid: str, lifetime: timedelta, remaining: timedelta) -> None:
    """Make ``uid`` look created ``lifetime - remaining`` ago, expiring in ``remaining``
    (negative: expired that long ago)."""
    expires = utcnow() + remaining
    age_token(ws.api, uid, created_at=expires - lifetime, expired_at=expires)


def plan_lines(result: CliResult) -> dict[str, str]:
    """name -> its action line in a text plan."""
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = ACTION_LINE.match(line)
        if match:
            lines[match.group(1)] = line
    return lines


def _date(moment: datetime) -> str:
    return moment.date().isoformat()


# ---------------------------------------------------------------- the ownership table


def test_create_then_nothing_to_do(ws: Workspace) -> None:
    """Declared, not live -> create (secret delivered); then owned + matching -> no change."""
    ws.declare(
        token(
            "ci-deployer", ["write_cluster", "api"], description="Deploys from CI", expires="90d"
        ),
        token("reader", ["read_cluster"]),
    )
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert "+   create   ci-deployer" in plan.stdout
    assert "declared in manifests, does not exist yet" in plan.stdout
    assert (
        "Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget." in plan.stdout
    )
    assert plan.stderr == ""

    applied = ws.apply()
    assert applied.exit_code == 0, applied
    assert "Apply complete: 2 created." in applied.stdout
    assert f"New token values are in {ws.secrets_path}." in applied.stdout

    owned = ws.owned()
    assert set(owned) == {"ci-deployer", "reader"}
    live = {record.uid: record for record in ws.live()}
    assert set(live) == set(owned.values())
    deployer = live[owned["ci-deployer"]]
    assert sorted(deployer.scopes) == ["api", "write_cluster"]
    assert deployer.description == "Deploys from CI"
    assert deployer.expired_at is not None
    # Each delivered value is the secret of the token state records under that name.
    assert {name: ws.uid_of_secret(value) for name, value in ws.secrets().items()} == owned

    ws.api.reset_stats()
    again = ws.plan("--detailed-exitcode")
    assert again.exit_code == 0, again
    assert again.stdout.strip() == "No changes. 2 tokens match the manifests."
    assert ws.writes() == {"create": 0, "delete": 0}
    # An apply with nothing to do needs no secrets sink and says so plainly.
    nothing = ws.run("apply", "--auto-approve", fast=True)
    assert nothing.exit_code == 0, nothing
    assert "No changes." in nothing.stdout
    assert ws.writes() == {"create": 0, "delete": 0}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"scopes": ["api", "write_cluster"]}, "scopes changed: +write_cluster"),
        ({"description": "now documented"}, "description changed"),
        ({"expires": "30d"}, "expiry changed: never -> 30d after creation"),
    ],
    ids=["scopes", "description", "expiry"],
)
def test_owned_token_that_differs_is_replaced_new_first(
    ws: Workspace, change: dict[str, Any], reason: str
) -> None:
    before = ws.converge(token("svc"), token("other"))
    old_uid = before["svc"]
    ws.declare(token("svc", **{"scopes": ["api"], **change}), token("other"))

    # Scopes and description could be updated in place; --updates replace replaces.
    plan = ws.plan("--detailed-exitcode", "--updates", "replace")
    assert plan.exit_code == 2, plan
    line = next(text for text in plan.stdout.splitlines() if "replace" in text and "svc" in text)
    assert "-/+ replace" in line and old_uid in line and reason in line, plan
    assert (
        "Plan: 0 to create, 0 to update, 1 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget. 1 unchanged" in plan.stdout
    )

    applied = ws.apply("--updates", "replace", fast=True)
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 replaced." in applied.stdout
    new_uid = ws.owned()["svc"]
    assert new_uid != old_uid
    assert ws.owned()["other"] == before["other"]
    # Names are unique among live tokens: the new generation is svc-2 while svc lives.
    assert ws.live_by_name() == {"svc-2": [new_uid], "other": [before["other"]]}
    # The new token existed before the old one was deleted (there is no update endpoint,
    # and a gap would break whoever uses the token).
    rows = db_rows(ws.api)
    old_deleted = rows[old_uid][1]
    assert old_deleted is not None
    assert rows[new_uid][0] < old_deleted
    assert ws.uid_of_secret(ws.secrets()["svc"]) == new_uid

    assert ws.plan("--detailed-exitcode", "--updates", "replace", fast=True).exit_code == 0


def test_owned_token_removed_from_manifests_is_deleted(ws: Workspace) -> None:
    """Also: removing 1 of 3 managed tokens (33%) is allowed, below the threshold minimum."""
    owned = ws.converge(token("a"), token("b"), token("c"))
    ws.declare(token("a"), token("c"))

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert f"-   delete   b  {owned['b']}  removed from manifests" in plan.stdout
    applied = ws.run("apply", "--auto-approve", fast=True)  # deletes only: no sink needed
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 deleted." in applied.stdout
    assert set(ws.owned()) == {"a", "c"}
    assert ws.live_by_name() == {"a": [owned["a"]], "c": [owned["c"]]}


def test_owned_token_deleted_by_hand_is_recreated(ws: Workspace) -> None:
    owned = ws.converge(token("svc"))
    ws.delete_by_hand(owned["svc"])

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert "+   create   svc" in plan.stdout
    assert "deleted outside reconciler" in plan.stdout
    applied = ws.apply(fast=True)
    assert applied.exit_code == 0, applied
    new_uid = ws.owned()["svc"]
    assert new_uid != owned["svc"]
    assert ws.live_by_name() == {"svc": [new_uid]}
    assert ws.uid_of_secret(ws.secrets()["svc"]) == new_uid


def test_unowned_matching_token_is_adopted_without_api_writes(ws: Workspace) -> None:
    uid = ws.seed("legacy", ["read_cluster", "api"], description="made by hand")
    ws.declare(token("legacy", ["api", "read_cluster", "api"], description="made by hand"))

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert f"=   adopt    legacy  {uid}  not owned, matches the manifest" in plan.stdout
    ws.api.reset_stats()
    applied = ws.run("apply", "--auto-approve")  # nothing is created: no sink needed
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 adopted." in applied.stdout
    assert ws.writes() == {"create": 0, "delete": 0}
    assert ws.owned() == {"legacy": uid}
    assert ws.live_by_name() == {"legacy": [uid]}
    assert ws.plan("--detailed-exitcode", fast=True).exit_code == 0


def test_unowned_token_that_differs_is_a_conflict(ws: Workspace) -> None:
    uid = ws.seed("legacy", ["api"])
    ws.declare(token("legacy", ["read_cluster"]), token("fresh"))
    ws.api.reset_stats()

    plan = ws.plan("--detailed-exitcode")
    # A conflict is an error (1), not "changes pending" (2).
    assert_clean_error(
        plan,
        f"legacy ({uid}): not owned by reconciler and differs from the manifest",
        "scopes changed: +read_cluster -api",
        f"`reconciler import legacy {uid}`",
        "rename legacy in the manifests",
        "delete the token by hand",
    )
    assert "1 conflict: the plan cannot be applied until it is resolved." in plan.stdout

    applied = ws.apply()
    assert_clean_error(applied, "1 conflict must be resolved")
    assert "Applying" not in applied.stdout
    assert ws.writes() == {"create": 0, "delete": 0}
    assert ws.live_by_name() == {"legacy": [uid]}
    assert not ws.state_path.exists()


def test_unowned_undeclared_token_is_left_alone_unless_prune(ws: Workspace) -> None:
    stray = ws.seed("stray")
    ws.converge(token("svc"))
    assert ws.live_by_name()["stray"] == [stray]
    assert "stray" not in ws.owned()

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 0, plan
    assert plan.stdout.strip() == "No changes. 1 token matches the manifests. 1 unmanaged."
    summary = json.loads(ws.plan("--format", "json", fast=True).stdout)["summary"]
    assert (summary["unmanaged"], summary["delete"]) == (1, 0)

    pruning = ws.plan("--prune", "--detailed-exitcode")
    assert pruning.exit_code == 2, pruning
    assert f"-   delete   stray  {stray}  not declared (--prune)" in pruning.stdout
    applied = ws.run("apply", "--auto-approve", "--prune")
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 deleted." in applied.stdout
    assert list(ws.live_by_name()) == ["svc"]
    assert ws.plan("--prune", "--detailed-exitcode", fast=True).exit_code == 0


@pytest.mark.env_connection
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


# ---------------------------------------------------------------- new values need somewhere to go


def test_apply_refuses_creates_without_a_secrets_sink(ws: Workspace) -> None:
    ws.declare(token("a"), token("b"))
    ws.api.reset_stats()
    refused = ws.run("apply", "--auto-approve")
    assert_clean_error(refused, "creates 2 tokens", "--secrets-out FILE", "--discard-secrets")
    assert ws.writes() == {"create": 0, "delete": 0}
    assert ws.live() == []

    discarded = ws.run("apply", "--auto-approve", "--discard-secrets", fast=True)
    assert discarded.exit_code == 0, discarded
    assert "Apply complete: 2 created." in discarded.stdout
    assert "New token values" not in discarded.stdout
    assert sorted(ws.live_by_name()) == ["a", "b"]


def test_applier_refuses_creates_without_a_sink(local_api: LocalApi, tmp_path: Path) -> None:
    """The safety rule lives in the applier: no sink and no discard means no create at all."""
    spec = TokenSpec(name="no-sink", scopes=frozenset({"api"}), expires=Expiry.never())
    state = State.new(local_api.url)
    client = RestClient(endpoint=local_api.url, api_key=local_api.admin_key, timeout=30)
    try:
        api = ApiTokenAPI(client)
        plan = build_plan({"no-sink": spec}, api.list(), state, now=utcnow())
        backend = backend_for(str(tmp_path / "state.json"))
        with pytest.raises(SecretsError, match="--secrets-out FILE"):
            Applier(api, Journal(backend, state), Deliveries(())).run(plan)
        assert [t.name for t in api.list()] == []
        assert not (tmp_path / "state.json").exists()
        # Discarding is an explicit choice, and then the create goes ahead.
        result = Applier(api, Journal(backend, state), Deliveries((), discard=True)).run(plan)
        assert result.ok and [t.name for t in api.list()] == ["no-sink"]
    finally:
        client.close()


# ---------------------------------------------------------------- rotation and expiry


def test_rotation_due_replaces_without_tripping_the_threshold(ws: Workspace) -> None:
    """Owned tokens inside rotate_before are replaced; tokens created together come due
    together, so routine rotation is not held back by the safety threshold."""
    names = [f"svc-{n:02d}" for n in range(MIN_TOKENS_FOR_THRESHOLD)]
    owned = ws.converge(*(token(n, expires="30d", rotate_before="7d") for n in names))
    due = names[:6]
    soon = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    connection = sqlite3.connect(ws.api.db_path, timeout=10)
    try:
        with connection:
            connection.executemany(
                "UPDATE tokens SET expired_at = ? WHERE uid = ?",
                [(soon, owned[name]) for name in due],
            )
    finally:
        connection.close()

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert (
        "Plan: 0 to create, 0 to update, 6 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget. 4 unchanged" in plan.stdout
    )
    assert plan.stdout.count("rotation due: expires in") == 6
    assert "Warning" not in plan.stderr
    applied = ws.apply(fast=True)  # 60% of the managed tokens, no --force needed
    assert applied.exit_code == 0, applied
    assert "Apply complete: 6 replaced." in applied.stdout
    rotated = ws.owned()
    assert all(rotated[name] != owned[name] for name in due)
    assert all(rotated[name] == owned[name] for name in names[6:])
    # Names are unique among live tokens: a new generation is NAME-2 while NAME lives.
    live_names = {name: f"{name}-2" if name in due else name for name in names}
    assert ws.live_by_name() == {live_names[name]: [rotated[name]] for name in names}
    assert ws.plan("--detailed-exitcode", fast=True).exit_code == 0


@pytest.mark.env_connection
def test_nightly_apply_rotates_what_is_due_and_nothing_else(ws: Workspace) -> None:
    audit_date = (utcnow() + timedelta(days=40)).date().isoformat()
    ws.declare(
        {"name": "due", **POLICY},
        {"name": "expired", **POLICY},
        {"name": "short-lived", "scopes": ["api"], "expires": "7d"},
        {"name": "fresh", **POLICY},
        {"name": "forever", "scopes": ["api"]},
        {"name": "audit", "scopes": ["read_organization"], "expires": audit_date},
        {"name": "audit-soon", "scopes": ["api"], "expires": audit_date, "rotate_before": "60d"},
    )
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    before = ws.owned()
    month = timedelta(days=30)
    live_for(ws, before["due"], month, timedelta(days=3, hours=1))
    live_for(ws, before["expired"], month, -timedelta(days=1))
    live_for(ws, before["short-lived"], timedelta(days=7), -timedelta(hours=2))
    live_for(ws, before["fresh"], month, timedelta(days=20))

    plan = ok(ws.run("plan", "--detailed-exitcode"), 2)
    assert (
        "Plan: 0 to create, 0 to update, 3 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget. 4 unchanged" in plan.stdout
    )
    lines = plan_lines(plan)
    assert set(lines) == {"due", "expired", "short-lived"}
    assert lines["due"].endswith("rotation due: expires in 3d < rotate_before 14d")
    assert lines["expired"].endswith("  expired")
    assert lines["short-lived"].endswith("  expired")
    # Only expiry: no other attribute is said to change.
    assert "scopes:" not in plan.stdout and "description:" not in plan.stdout

    started = utcnow()
    applied = ok(ws.run(*NIGHTLY))
    assert "Apply complete: 3 replaced." in applied.stdout
    assert "New token values are in secrets.env." in applied.stdout
    after = ws.owned()
    rotated = {"due", "expired", "short-lived"}
    for name in before:
        if name not in rotated:
            assert after[name] == before[name], f"{name} was rotated but was not due"
    secrets = dotenv(ws.root / "secrets.env")
    assert sorted(secrets) == ["DUE", "EXPIRED", "SHORT_LIVED"]
    for name in rotated:
        old, new = before[name], after[name]
        assert new != old
        # The new generation may live as NAME-2 (names are unique among live tokens).
        live_uids = {uid for uids in ws.live_by_name().values() for uid in uids}
        assert new in live_uids and old not in live_uids, f"{name}: the old token is still live"
        # The new token existed before the old one was deleted.
        old_times, new_times = token_times(ws.api, old), token_times(ws.api, new)
        assert old_times["deleted_at"] is not None
        assert new_times["created_at"] is not None
        assert new_times["created_at"] <= old_times["deleted_at"]
        # The sink holds the new token's working value.
        principal = ws.api.store.authenticate(secrets[name.upper().replace("-", "_")])
        assert principal is not None and principal.token_uid == new
        # And its lifetime follows the policy from now.
        lifetime = timedelta(days=7) if name == "short-lived" else timedelta(days=30)
        expired_at = parse_db_time(new_times["expired_at"])
        assert expired_at is not None
        assert started + lifetime - timedelta(minutes=1) <= expired_at
        assert expired_at <= utcnow() + lifetime

    # The next night finds nothing to do.
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")


@pytest.mark.env_connection
def test_rotation_of_many_tokens_is_not_refused_by_the_safety_threshold(ws: Workspace) -> None:
    names = [f"svc-{n:02d}" for n in range(12)]
    ws.declare(*({"name": name, **POLICY} for name in names))
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    for uid in ws.owned().values():
        live_for(ws, uid, timedelta(days=30), timedelta(days=2, hours=1))
    applied = ok(ws.run(*NIGHTLY))
    assert "Apply complete: 12 replaced." in applied.stdout
    assert len(dotenv(ws.root / "secrets.env")) == 12
    # Whereas the same number of replacements from a manifest change needs --force.
    ws.declare(*({"name": name, **POLICY, "scopes": ["read_cluster"]} for name in names))
    refused = ws.call(*NIGHTLY, "--updates", "replace")
    assert refused.exit_code == 1 and "above the safety threshold" in refused.stderr


@pytest.mark.env_connection
def test_fixed_date_expiry(ws: Workspace) -> None:
    first = utcnow() + timedelta(days=100)
    ws.declare({"name": "audit", "scopes": ["read_organization"], "expires": _date(first)})
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    uid = ws.owned()["audit"]
    recorded = token_times(ws.api, uid)["expired_at"]
    assert recorded is not None and recorded.startswith(_date(first) + "T00:00:00")

    # A new end date in the manifests replaces the token, saying which dates.
    later = first + timedelta(days=90)
    ws.declare({"name": "audit", "scopes": ["read_organization"], "expires": _date(later)})
    plan = ok(ws.run("plan", "--detailed-exitcode", "--updates", "replace"), 2)
    assert (
        f"expiry changed: {_date(first)}T00:00:00Z -> {_date(later)}T00:00:00Z"
        in plan_lines(plan)["audit"]
    )
    ok(ws.run(*NIGHTLY, "--updates", "replace"))
    new_uid = ws.owned()["audit"]
    assert new_uid != uid
    new_expiry = token_times(ws.api, new_uid)["expired_at"]
    assert new_expiry is not None and new_expiry.startswith(_date(later) + "T00:00:00")

    # Two days before a fixed date, with rotate_before 14d: a replacement would expire at
    # the same moment, so there is nothing to rotate. (The simulated clock moves the token's
    # dates and the manifest's date alike.)
    soon = utcnow() + timedelta(days=2)
    age_token(ws.api, new_uid, created_at=soon - timedelta(days=190), expired_at=soon)
    ws.declare(
        {
            "name": "audit",
            "scopes": ["read_organization"],
            "expires": soon.isoformat(),
            "rotate_before": "14d",
        }
    )
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")

    # Once the date has passed the token is expired, and so would any replacement be:
    # reconciler does not replace it over and over.
    past = utcnow() - timedelta(days=1)
    age_token(ws.api, new_uid, created_at=past - timedelta(days=200), expired_at=past)
    ws.declare({"name": "audit", "scopes": ["read_organization"], "expires": past.isoformat()})
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")


# ---------------------------------------------------------------- generations and overlap


@pytest.mark.env_connection
@pytest.mark.parametrize("duplicates", [False, True], ids=["unique-names", "duplicate-names"])
def test_scope_and_description_change_update_in_place(
    make_ws: WorkspaceFactory, duplicates: bool
) -> None:
    ws = make_ws(allow_duplicate_names=duplicates)
    ws.declare(token("svc", description="old"))
    ws.setup(*APPLY)
    uid, value = ws.owned()["svc"], ws.secrets()["svc"]
    (ws.root / SECRETS).unlink()

    ws.declare(token("svc", description="new", scopes=["api", "read_cluster"]))
    plan = ok(ws.run("plan", "--detailed-exitcode"), 2)
    assert "~   update   svc" in plan.stdout and uid in plan.stdout
    assert "scopes changed: +read_cluster; description changed" in plan.stdout
    assert "Plan: 0 to create, 1 to update, 0 to replace, 0 to delete" in plan.stdout
    applied = ok(ws.run(*APPLY))
    assert "Apply complete: 1 updated." in applied.stdout
    assert ws.owned()["svc"] == uid and works(ws.api, value)
    sink = ws.root / SECRETS
    assert not sink.exists() or ws.secrets() == {}  # nothing delivered: nothing to do
    assert current(ws, "svc")["spec"]["description"] == "new"
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")


@pytest.mark.env_connection
def test_updates_replace_makes_generations_that_alternate_names(ws: Workspace) -> None:
    ws.declare(token("svc", description="one"))
    ws.setup(*APPLY)
    first_uid, first_value = ws.owned()["svc"], ws.secrets()["svc"]

    ws.declare(token("svc", description="two"))
    plan = ok(ws.run("plan", "--updates", "replace"))
    assert "-/+ replace  svc → svc-2" in plan.stdout
    ok(ws.run(*APPLY, "--updates", "replace"))
    second = current(ws, "svc")
    assert second["live_name"] == "svc-2" and second["proven"] is True
    assert ws.live_by_name() == {"svc-2": [second["uid"]]}
    assert not works(ws.api, first_value) and works(ws.api, ws.secrets()["svc"])
    assert first_uid not in json.dumps(ws.state())

    # The next generation takes the manifest name again.
    ok(ws.run(*APPLY, "--replace", "svc"))
    third = current(ws, "svc")
    assert third["live_name"] == "svc" and ws.live_by_name() == {"svc": [third["uid"]]}
    assert ws.secrets()["svc"] != first_value and works(ws.api, ws.secrets()["svc"])


@pytest.mark.env_connection
def test_no_update_route_fails_with_the_hint_and_loses_nothing(
    make_ws: WorkspaceFactory,
) -> None:
    ws = make_ws(update_route=False)
    ws.declare(token("svc", description="old"))
    ws.setup(*APPLY)
    uid, value = ws.owned()["svc"], ws.secrets()["svc"]
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


@pytest.mark.env_connection
def test_overlap_keeps_the_previous_generation_until_it_ends(ws: Workspace) -> None:
    ws.declare(token("svc", description="one", overlap="3s"))
    ws.setup(*APPLY)
    old_uid, old_value = ws.owned()["svc"], ws.secrets()["svc"]

    ws.declare(token("svc", description="two", overlap="3s"))
    ok(ws.run(*APPLY, "--updates", "replace"))
    new_value = ws.secrets()["svc"]
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


@pytest.mark.env_connection
def test_replace_retires_at_once_whatever_the_overlap(ws: Workspace) -> None:
    ws.declare(token("svc", overlap="1h"))
    ws.setup(*APPLY)
    old_value = ws.secrets()["svc"]
    ok(ws.run(*APPLY, "--replace", "svc"))
    assert not works(ws.api, old_value) and works(ws.api, ws.secrets()["svc"])
    assert ws.state()["previous"] == []

    unknown = ws.run("plan", "--replace", "nope")
    assert unknown.exit_code == 1 and "--replace nope" in unknown.stderr


@pytest.mark.env_connection
def test_a_value_refused_at_auth_current_keeps_the_previous_generation(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.setup(*APPLY)
    old_uid, old_value = ws.owned()["svc"], ws.secrets()["svc"]

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
    assert not works(ws.api, old_value) and works(ws.api, ws.secrets()["svc"])
    assert ws.state()["previous"] == [] and current(ws, "svc")["proven"] is True
    assert len([u for uids in ws.live_by_name().values() for u in uids]) == 1


@pytest.mark.env_connection
def test_a_name_held_by_an_unmanaged_token_is_skipped(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.setup(*APPLY)
    other = ws.seed("svc-2", scopes=())
    ok(ws.run(*APPLY, "--replace", "svc"))
    assert current(ws, "svc")["live_name"] == "svc-3"
    assert ws.live_by_name()["svc-2"] == [other]


@pytest.mark.env_connection
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


@pytest.mark.env_connection
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


@pytest.mark.env_connection
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


# ---------------------------------------------------------------- failures part-way


@pytest.fixture
def fail_nth_create(ws: Workspace) -> Iterator[Any]:
    """``fail_nth_create(n)``: the n-th create to reach the API from now on is answered 400
    (nothing created), through the server's own fault injection."""
    injector = ws.api.server.injector
    original = injector.count_request

    def arm(n: int, status: int = 400) -> None:
        creates = itertools.count(1)

        def count_request(route: str) -> None:
            original(route)
            if route == CREATE_ROUTE and next(creates) == n:
                injector.update(fail_next=1, fail_status=status)

        injector.count_request = count_request  # type: ignore[method-assign]

    yield arm
    injector.count_request = original  # type: ignore[method-assign]


def test_failure_part_way_leaves_true_state_and_the_next_apply_converges(
    ws: Workspace, fail_nth_create: Any
) -> None:
    names = [f"svc-{n:02d}" for n in range(10)]
    ws.declare(*(token(name) for name in names))
    fail_nth_create(5)

    failed = ws.apply("--parallelism", "2")
    assert failed.exit_code == 1, failed
    assert "Traceback" not in failed.output
    owned = ws.owned()
    created = len(owned)
    assert 4 <= created <= 5, failed
    assert f"Apply stopped: {created} created." in failed.stderr
    assert "  failed: create svc-" in failed.stderr
    assert "rejected the request (HTTP 400)" in failed.stderr
    not_started = 10 - created - 1
    assert f"  not started ({not_started}): create svc-" in failed.stderr
    assert "run apply again to converge" in failed.stderr
    assert "FAILED" in failed.stdout  # the progress line of the failed action

    # State is the truth: every owned uid is live, nothing live is unaccounted for, no
    # create is left pending (a 400 created nothing), every created value was delivered.
    assert_state_matches_live(ws)
    assert ws.live_by_name() == {name: [uid] for name, uid in owned.items()}
    assert ws.state()["pending_creates"] == []
    first_secrets = ws.secrets()
    assert {name: ws.uid_of_secret(value) for name, value in first_secrets.items()} == owned

    plan = ws.plan("--detailed-exitcode", fast=True)
    assert plan.exit_code == 2, plan
    assert f"Plan: {10 - created} to create, 0 to update, 0 to replace, 0 to delete" in plan.stdout

    again = ws.apply(fast=True)
    assert again.exit_code == 0, again
    assert f"Apply complete: {10 - created} created." in again.stdout
    final = ws.plan("--detailed-exitcode")
    assert final.exit_code == 0, final
    assert final.stdout.strip() == "No changes. 10 tokens match the manifests."

    owned = ws.owned()
    assert ws.live_by_name() == {name: [owned[name]] for name in names}
    secrets = ws.secrets()
    assert {name: ws.uid_of_secret(value) for name, value in secrets.items()} == owned
    # Values delivered by the failed run are still in the file, unchanged.
    assert {name: secrets[name] for name in first_secrets} == first_secrets


def test_a_lost_create_answer_is_recovered_within_the_run(ws: Workspace) -> None:
    ws.declare(token("a"), token("b"), token("c"))
    ws.api.set_faults(lose_next_creates=1)
    applied = ws.apply()
    assert applied.exit_code == 0, applied
    assert "Apply complete: 3 created." in applied.stdout
    owned = ws.owned()
    # The token whose answer was lost (its value unknown to anyone) is gone; one per name.
    assert ws.live_by_name() == {name: [uid] for name, uid in owned.items()}
    assert ws.state()["pending_creates"] == []
    assert {name: ws.uid_of_secret(v) for name, v in ws.secrets().items()} == owned


def test_create_answers_lost_every_time_fail_the_run_and_the_next_cleans_up(
    ws: Workspace,
) -> None:
    ws.declare(token("a"), token("b"), token("c"))
    ws.api.set_faults(lose_next_creates=CREATE_ATTEMPTS)
    failed = ws.apply("--parallelism", "1")
    assert failed.exit_code == 1, failed
    assert "Traceback" not in failed.output
    assert "  failed: create a: " in failed.stderr
    assert "may have been created" in failed.stderr
    assert "not started (2): create b, create c" in failed.stderr

    # The last attempt left a token nobody has the value of; state remembers the attempt.
    assert [p["name"] for p in ws.state()["pending_creates"]] == ["a"]
    (orphan,) = ws.live_by_name()["a"]
    assert_state_matches_live(ws)
    assert ws.owned() == {}
    assert ws.secrets() == {}

    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan
    assert f"-   delete   a  {orphan}  left by an interrupted create" in plan.stdout
    assert "an earlier create of it was interrupted" in plan.stdout

    again = ws.apply(fast=True)
    assert again.exit_code == 0, again
    owned = ws.owned()
    assert set(owned) == {"a", "b", "c"}
    assert ws.live_by_name() == {name: [uid] for name, uid in owned.items()}
    assert orphan not in owned.values()
    assert ws.state()["pending_creates"] == []
    assert {name: ws.uid_of_secret(v) for name, v in ws.secrets().items()} == owned
    assert ws.plan("--detailed-exitcode", fast=True).exit_code == 0


# ---------------------------------------------------------------- the secrets file forgets


def test_values_of_deleted_and_replaced_tokens_leave_the_secrets_file(ws: Workspace) -> None:
    ws.declare(token("ci-deployer"), token("reader"), token("old-job"))
    assert ws.apply().exit_code == 0
    first = ws.secrets()
    assert set(first) == {"ci-deployer", "reader", "old-job"}
    ws.declare(
        token("ci-deployer", ["read_cluster"]), token("reader", ["read_cluster"])
    )  # replace both, delete one
    result = ws.apply("--prune", "--updates", "replace")  # replace, not update in place
    assert result.exit_code == 0, result
    values = ws.secrets()
    assert set(values) == {"ci-deployer", "reader"}
    assert all(values[name] != first[name] for name in values)
    for value in first.values():
        assert value not in ws.secrets_path.read_text()
        assert value not in result.output
    store = ws.api.store
    assert all(store.authenticate(value) is not None for value in values.values())


def test_deleting_an_unowned_duplicate_keeps_the_owned_value(make_ws: WorkspaceFactory) -> None:
    # An unowned token of the same name only exists on a server that allows duplicates.
    ws = make_ws(allow_duplicate_names=True)
    ws.declare(token("reader"))
    assert ws.apply().exit_code == 0
    value = ws.secrets()["reader"]
    store = ws.api.store
    store.create_token(store.default_user, "reader", description="", scopes=["api"])
    result = ws.apply()
    assert result.exit_code == 0, result
    assert ws.secrets() == {"reader": value}
    assert store.authenticate(value) is not None
