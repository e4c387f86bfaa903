"""Expiry and rotation end to end: a nightly apply replaces what is due, says why, and
leaves everything else alone.

Time is simulated without sleeping: after a token is created, ``age_token`` rewrites its
created_at/expired_at in the local API's database, which is what the API (and so
reconciler) sees once that much time has passed. Moving a manifest's fixed date back by the
same amount is the equivalent for ``expires: <date>``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.cli import CliResult
from support.local_api import age_token, token_times
from support.workspace import Workspace

from reconciler.server.store import parse_db_time
from reconciler.util.times import utcnow

# Commands run as a CI job types them: the API from BentoML's variables.
pytestmark = pytest.mark.env_connection

POLICY = {"scopes": ["api"], "expires": "30d", "rotate_before": "14d"}
ACTION_LINE = re.compile(
    r"^  \S+\s+(?:create|replace|update|delete|retire|adopt|forget)\s{2,}(\S+)"
)
NIGHTLY = ("apply", "--auto-approve", "--secrets-out", "secrets.env")


def ok(result: CliResult, *codes: int) -> CliResult:
    assert result.exit_code in (codes or (0,)), str(result)
    return result


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
    assert "Plan: 0 to create, 3 to replace, 0 to delete, 0 to adopt. 4 unchanged" in plan.stdout
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


def _date(moment: datetime) -> str:
    return moment.date().isoformat()


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
