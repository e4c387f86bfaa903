"""End-to-end tests of `plan` and `apply` through the real CLI against the local API over HTTP.

Output, exit codes and secrets are checked on real subprocesses; setup steps run the same
``main()`` in-process (``fast=True``) to keep the file fast. What really
exists is read from the server's own store, and what the CLI did from its request stats.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support.cli import CliResult, run_cli_subprocess
from support.local_api import LocalApi
from support.workspace import CREATE_ROUTE, Workspace, token

from reconciler.apply.applier import CREATE_ATTEMPTS
from reconciler.destinations.file import dotenv_key
from reconciler.plan.model import MIN_TOKENS_FOR_THRESHOLD


def assert_clean_error(result: CliResult, *fragments: str) -> None:
    """Exit 1, one 'Error:' on stderr with every fragment, and no traceback."""
    assert result.exit_code == 1, result
    assert "Error: " in result.stderr, result
    assert "Traceback" not in result.output, result
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} missing\n{result}"


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
    assert "Plan: 2 to create, 0 to replace, 0 to delete, 0 to adopt." in plan.stdout
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
    assert "Plan: 0 to create, 1 to replace, 0 to delete, 0 to adopt. 1 unchanged" in plan.stdout

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


# ---------------------------------------------------------------- exit codes


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


# ---------------------------------------------------------------- safety


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
    assert "Plan: 0 to create, 6 to replace, 0 to delete, 0 to adopt. 4 unchanged" in plan.stdout
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


# ---------------------------------------------------------------- invalid manifests

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


# ---------------------------------------------------------------- approval and secrets


def test_apply_without_auto_approve_refuses_when_stdin_is_not_a_terminal(ws: Workspace) -> None:
    ws.declare(token("svc"))
    ws.api.reset_stats()
    refused = ws.run("apply", "--secrets-out", str(ws.secrets_path), input="yes\n")
    assert_clean_error(refused, "stdin is not a terminal", "--auto-approve")
    assert ws.writes() == {"create": 0, "delete": 0}
    assert ws.live() == []
    assert not ws.state_path.exists()


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


@pytest.mark.parametrize(
    ("filename", "extra"),
    [
        ("new-tokens.json", []),
        ("new-tokens.env", []),
        ("new-tokens.txt", ["--secrets-format", "dotenv"]),
    ],
    ids=["json", "dotenv-by-extension", "dotenv-by-flag"],
)
def test_secrets_out_formats_and_mode(ws: Workspace, filename: str, extra: list[str]) -> None:
    ws.declare(token("ci-deployer"), token("reader", ["read_cluster"]))
    target = ws.root / "out" / filename
    applied = ws.run("apply", "--auto-approve", "--secrets-out", str(target), *extra)
    assert applied.exit_code == 0, applied
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text(encoding="utf-8")
    if filename.endswith(".json"):
        values = json.loads(text)
    else:
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        values = dict(line.split("=", 1) for line in lines)
        assert (
            set(values)
            == {dotenv_key("ci-deployer"), dotenv_key("reader")}
            == {
                "CI_DEPLOYER",
                "READER",
            }
        )
        values = {"ci-deployer": values["CI_DEPLOYER"], "reader": values["READER"]}
    assert {name: ws.uid_of_secret(value) for name, value in values.items()} == ws.owned()


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
    assert f"Plan: {10 - created} to create, 0 to replace, 0 to delete" in plan.stdout

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


# ---------------------------------------------------------------- no leaks


def test_no_secret_value_or_api_key_leaks_anywhere(ws: Workspace) -> None:
    outputs: list[CliResult] = []
    ws.declare(token("ci-deployer", ["api"]), token("reader", ["read_cluster"]))
    outputs.append(ws.apply("-v"))
    ws.declare(token("ci-deployer", ["api", "write_cluster"]), token("reader", ["read_cluster"]))
    plan_file = ws.root / "plan.json"
    outputs.append(ws.plan("--out", str(plan_file), "-vv"))
    outputs.append(ws.plan("--format", "json"))
    outputs.append(ws.plan("--format", "markdown"))
    outputs.append(ws.run("show", str(plan_file)))
    outputs.append(
        ws.run("apply", "--auto-approve", "--secrets-out", str(ws.secrets_path), str(plan_file))
    )
    # The key from the environment rather than a flag, and an API failure's error path.
    ws.declare(token("ci-deployer", ["api"]), token("reader", ["read_cluster"]))
    ws.api.set_faults(fail_next=100, fail_status=500)
    env_connection = {
        "BENTO_CLOUD_API_ENDPOINT": ws.api.url,
        "BENTO_CLOUD_API_KEY": ws.api.admin_key,
    }
    outputs.append(
        run_cli_subprocess(
            "--state", str(ws.state_path), "plan", "-vv", cwd=ws.root, env=env_connection
        )
    )
    ws.api.reset_faults()
    outputs.append(ws.run("state", "list"))
    outputs.append(ws.run("state", "show", "ci-deployer"))

    assert [r.exit_code for r in outputs] == [0, 0, 0, 0, 0, 0, 1, 0, 0], outputs
    assert "HTTP 500" in outputs[6].stderr
    assert "Traceback" in outputs[6].stderr  # -vv shows it: it must not carry the key either
    secrets = ws.secrets()
    # reader once, ci-deployer twice (created, then replaced): three values in all.
    assert set(secrets) == {"ci-deployer", "reader"}
    forbidden = {*secrets.values(), ws.api.admin_key}
    files = [ws.state_path, plan_file, *ws.state_path.parent.iterdir()]
    assert ws.state_path.with_name(ws.state_path.name + ".backup") in files
    texts = {f"output of {r.args}": r.output for r in outputs}
    texts |= {str(path): path.read_text(encoding="utf-8") for path in files}
    for where, text in texts.items():
        for value in forbidden:
            assert value not in text, f"a secret leaked into {where}"
        assert "rct_" not in text, f"something like a token value is in {where}"


# ---------------------------------------------------------------- no setup needed


def test_endpoint_local_works_in_a_fresh_directory(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "tokens.yaml").write_text(
        "tokens:\n  - name: ci-deployer\n    scopes: [api]\n    expires: 90d\n",
        encoding="utf-8",
    )
    plan = run_cli_subprocess("--endpoint", "local", "plan", "--detailed-exitcode", cwd=tmp_path)
    assert plan.exit_code == 2, plan
    assert "+   create   ci-deployer" in plan.stdout
    applied = run_cli_subprocess(
        "--endpoint", "local", "apply", "--auto-approve", "--secrets-out", "s.json", cwd=tmp_path
    )
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 created." in applied.stdout
    assert (tmp_path / "state" / "local-api.sqlite3").is_file()
    state = json.loads((tmp_path / "state" / "tokens.state.json").read_text(encoding="utf-8"))
    assert state["endpoint"] == "local"
    assert [t["name"] for t in state["tokens"]] == ["ci-deployer"]
    assert "rct_" not in applied.output
    again = run_cli_subprocess("--endpoint", "local", "plan", "--detailed-exitcode", cwd=tmp_path)
    assert again.exit_code == 0, again
    assert "No changes. 1 token matches the manifests." in again.stdout


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
