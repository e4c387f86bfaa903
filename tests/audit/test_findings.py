"""Tests of reconciler.audit.findings: each finding at a fixed clock, managed tokens and
previous generations, undeclared, the summary, --fail-on names and the JSON document.
Pure: no API, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest
from support.planning import CREATED, NOW, spec, state_of, token

from reconciler.api.token import ApiToken
from reconciler.audit.findings import (
    FINDINGS,
    Audit,
    AuditPolicy,
    audit_tokens,
    parse_findings,
)
from reconciler.cli.inventory import FINDING_NAMES
from reconciler.manifest.spec import TokenSpec
from reconciler.state.model import PreviousGeneration, State

DAY = timedelta(days=1)


def audit_of(
    *live: ApiToken,
    state: State | None = None,
    declared: Mapping[str, TokenSpec] | None = None,
    policy: AuditPolicy | None = None,
) -> Audit:
    return audit_tokens(
        list(live), state or state_of(), declared or {}, now=NOW, policy=policy or AuditPolicy()
    )


def findings(audit: Audit) -> dict[str, tuple[str, ...]]:
    return {t.name: t.findings for t in audit.tokens}


def test_expiry_findings() -> None:
    result = audit_of(
        token("u1", "gone", scopes=["read_cluster"], expired_at=NOW - DAY, last_used_at=NOW),
        token("u2", "flagged", scopes=["read_cluster"], expired_at=NOW + DAY, is_expired=True),
        token("u3", "soon", scopes=["read_cluster"], expired_at=NOW + 14 * DAY, last_used_at=NOW),
        token("u4", "later", scopes=["read_cluster"], expired_at=NOW + 15 * DAY, last_used_at=NOW),
        token("u5", "forever", scopes=["read_cluster"], last_used_at=NOW),
    )
    found = findings(result)
    assert found["gone"] == ("expired", "unmanaged")
    assert found["flagged"][0] == "expired"  # the API's own flag counts
    assert found["soon"] == ("expiring", "unmanaged")  # 14 days is within 14 days
    assert found["later"] == ("unmanaged",)
    assert found["forever"] == ("never-expires", "unmanaged")


def test_use_findings_count_never_used_tokens_from_their_creation() -> None:
    old = NOW - 91 * DAY
    result = audit_of(
        token(
            "u1", "fresh", scopes=["read_cluster"], created_at=NOW - DAY, expired_at=NOW + 99 * DAY
        ),
        token("u2", "stale", scopes=["read_cluster"], created_at=old, expired_at=NOW + 99 * DAY),
        token(
            "u3",
            "used-long-ago",
            scopes=["read_cluster"],
            created_at=old,
            expired_at=NOW + 99 * DAY,
            last_used_at=NOW - 91 * DAY,
        ),
        token(
            "u4",
            "used-lately",
            scopes=["read_cluster"],
            created_at=old,
            expired_at=NOW + 99 * DAY,
            last_used_at=NOW - 90 * DAY,
        ),
    )
    found = findings(result)
    assert found["fresh"] == ("never-used", "unmanaged")
    assert found["stale"] == ("never-used", "unused", "unmanaged")
    assert found["used-long-ago"] == ("unused", "unmanaged")
    assert found["used-lately"] == ("unmanaged",)  # 90 days is not more than 90 days


def test_windows_come_from_the_policy() -> None:
    live = token(
        "u1", "t", scopes=["read_cluster"], expired_at=NOW + 20 * DAY, last_used_at=NOW - 10 * DAY
    )
    assert findings(audit_of(live))["t"] == ("unmanaged",)
    policy = AuditPolicy(expiring=30 * DAY, unused=5 * DAY)
    assert findings(audit_of(live, policy=policy))["t"] == ("expiring", "unused", "unmanaged")


def test_broad_scope_is_the_api_scope() -> None:
    result = audit_of(
        token(
            "u1",
            "broad",
            scopes=["read_cluster", "api"],
            expired_at=NOW + 99 * DAY,
            last_used_at=NOW,
        ),
        token(
            "u2", "narrow", scopes=["write_cluster"], expired_at=NOW + 99 * DAY, last_used_at=NOW
        ),
    )
    assert findings(result) == {"broad": ("broad-scope", "unmanaged"), "narrow": ("unmanaged",)}


def test_managed_undeclared_and_previous_generations() -> None:
    kept = spec("kept", rotate_before=14 * DAY)
    dropped = spec("dropped")
    state = state_of(("kept", "u1", kept), ("dropped", "u2", dropped))
    previous = PreviousGeneration(name="kept", live_name="kept", uid="u0", created_at=CREATED)
    state = state.with_previous(previous)
    live = [
        token("u0", "kept", expired_at=NOW + 5 * DAY, last_used_at=NOW),
        token("u1", "kept-2", expired_at=NOW + 60 * DAY, last_used_at=NOW),
        token("u2", "dropped", expired_at=NOW + 60 * DAY, last_used_at=NOW),
        token("u3", "stranger", expired_at=NOW + 60 * DAY, last_used_at=NOW),
    ]
    result = audit_of(*live, state=state, declared={"kept": kept})
    by_uid = {t.uid: t for t in result.tokens}
    assert by_uid["u0"].managed and by_uid["u0"].generation == "previous"
    assert by_uid["u0"].manifest_name == "kept"
    assert by_uid["u0"].findings == ("expiring", "broad-scope")
    assert by_uid["u1"].generation == "current" and by_uid["u1"].manifest_name == "kept"
    assert by_uid["u1"].rotate_before == 14 * DAY
    assert by_uid["u1"].findings == ("broad-scope",)
    assert by_uid["u2"].findings == ("broad-scope", "undeclared")
    assert not by_uid["u3"].managed and by_uid["u3"].manifest_name is None
    assert by_uid["u3"].findings == ("broad-scope", "unmanaged")
    assert [t.name for t in result.managed] == ["dropped", "kept", "kept-2"]


def test_deleted_tokens_are_not_audited() -> None:
    gone = token("u1", "gone").model_copy(update={"deleted_at": NOW})
    assert audit_of(gone).tokens == ()


def test_summary_counts_every_finding_and_with_any_selects() -> None:
    result = audit_of(
        token("u1", "a", expired_at=NOW - DAY),
        token("u2", "b", scopes=["read_cluster"], last_used_at=NOW),
    )
    summary = result.summary()
    assert list(summary) == list(FINDINGS)
    assert summary["unmanaged"] == 2 and summary["expired"] == 1 and summary["expiring"] == 0
    assert [t.name for t in result.with_any(("expired", "undeclared"))] == ["a"]
    assert result.with_any(()) == []


def test_parse_findings() -> None:
    assert parse_findings(["unused,expiring", " expired ", ""]) == ("expired", "expiring", "unused")
    assert parse_findings([]) == ()
    with pytest.raises(ValueError, match=r"unknown finding .expire..*expired, expiring"):
        parse_findings(["expire"])


def test_the_cli_names_every_finding() -> None:
    """The CLI lists the findings without importing this module (--help stays fast)."""
    assert tuple(FINDINGS) == FINDING_NAMES


def test_json_document() -> None:
    live = token("u1", "t", expired_at=NOW + 3 * DAY, last_used_at=NOW - DAY)
    data = audit_of(live).to_dict()
    assert data["format_version"] == 1
    assert data["generated_at"] == "2026-06-01T12:00:00Z"
    assert data["policy"] == {"expiring_days": 14, "unused_days": 90}
    assert data["tokens"] == [
        {
            "name": "t",
            "uid": "u1",
            "managed": False,
            "manifest_name": None,
            "generation": None,
            "scopes": ["api"],
            "created_at": "2026-05-22T12:00:00Z",
            "expired_at": "2026-06-04T12:00:00Z",
            "last_used_at": "2026-05-31T12:00:00Z",
            "findings": ["expiring", "broad-scope", "unmanaged"],
        }
    ]
    assert data["summary"]["expiring"] == 1
