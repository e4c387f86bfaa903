"""The findings of an audit: every live token of the key's user judged for expiry, use,
scope and ownership, as an IAM credential report does. Pure: no I/O, the clock is given."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.api.token import ApiToken
from reconciler.manifest.spec import TokenSpec
from reconciler.state.model import State
from reconciler.util.times import as_utc, format_time

FORMAT_VERSION = 1

#: Every finding, in the order reports list them, with what it means.
FINDINGS: dict[str, str] = {
    "expired": "has expired: it no longer authenticates",
    "expiring": "expires within the --expiring-days window",
    "never-expires": "has no expiry date",
    "never-used": "has never been used (no last_used_at)",
    "unused": "not used for more than --unused-days (never used counts from its creation)",
    "broad-scope": "holds the api scope, which grants everything the user may do",
    "unmanaged": "not in state: no manifest keeps it",
    "undeclared": "in state, but no manifest declares it any more: the next apply deletes it",
}

#: The scope that grants everything (Yatai's "api").
BROAD_SCOPE = "api"

Generation = Literal["current", "previous"]


@dataclass(frozen=True)
class AuditPolicy:
    """The windows findings are judged with (--expiring-days, --unused-days)."""

    expiring: timedelta = timedelta(days=14)
    unused: timedelta = timedelta(days=90)


@dataclass(frozen=True)
class AuditedToken:
    """One live token as the audit saw it, with its findings (in FINDINGS order)."""

    name: str
    uid: str
    managed: bool
    scopes: tuple[str, ...]
    created_at: datetime | None
    expired_at: datetime | None
    last_used_at: datetime | None
    findings: tuple[str, ...]
    #: The manifest name of a managed token (its live name may be NAME-2), else None.
    manifest_name: str | None = None
    #: For a managed token: its current generation, or a previous one kept through its
    #: overlap.
    generation: Generation | None = None
    #: The rotation window a managed token's spec declares (for the lifetime chart).
    rotate_before: timedelta | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "managed": self.managed,
            "manifest_name": self.manifest_name,
            "generation": self.generation,
            "scopes": list(self.scopes),
            "created_at": _time(self.created_at),
            "expired_at": _time(self.expired_at),
            "last_used_at": _time(self.last_used_at),
            "findings": list(self.findings),
        }


def _days(window: timedelta) -> int | float:
    days = window / timedelta(days=1)
    return int(days) if days.is_integer() else days


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


@dataclass(frozen=True)
class Audit:
    """Every live token of the key's user, judged at ``generated_at`` under ``policy``."""

    generated_at: datetime
    policy: AuditPolicy
    tokens: tuple[AuditedToken, ...]

    def summary(self) -> dict[str, int]:
        """How many tokens have each finding (every finding, zeros included)."""
        counts = dict.fromkeys(FINDINGS, 0)
        for token in self.tokens:
            for finding in token.findings:
                counts[finding] += 1
        return counts

    def with_any(self, findings: Collection[str]) -> list[AuditedToken]:
        """The tokens that have at least one of ``findings``."""
        return [t for t in self.tokens if any(f in findings for f in t.findings)]

    @property
    def managed(self) -> list[AuditedToken]:
        return [t for t in self.tokens if t.managed]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON document (``format_version`` 1; keys are only ever added)."""
        return {
            "format_version": FORMAT_VERSION,
            "generated_at": format_time(self.generated_at),
            "policy": {
                "expiring_days": _days(self.policy.expiring),
                "unused_days": _days(self.policy.unused),
            },
            "tokens": [token.to_dict() for token in self.tokens],
            "summary": self.summary(),
        }


def parse_findings(values: Iterable[str]) -> tuple[str, ...]:
    """Finding names from ``--fail-on`` values (comma-separated, repeatable), in FINDINGS
    order. ValueError naming the valid ones for an unknown name."""
    chosen = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(chosen - FINDINGS.keys())
    if unknown:
        raise ValueError(
            f"unknown finding {', '.join(repr(u) for u in unknown)}: use one or more of "
            f"{', '.join(FINDINGS)}, separated by commas"
        )
    return tuple(name for name in FINDINGS if name in chosen)


def _findings(
    token: ApiToken, *, now: datetime, policy: AuditPolicy, owned: bool, declared: bool
) -> tuple[str, ...]:
    found: list[str] = []
    expired_at = token.expired_at
    if token.is_expired or (expired_at is not None and expired_at <= now):
        found.append("expired")
    elif expired_at is not None and expired_at - now <= policy.expiring:
        found.append("expiring")
    if expired_at is None and not token.is_expired:
        found.append("never-expires")
    last_used = token.last_used_at
    if last_used is None:
        found.append("never-used")
    # Never used counts from creation: a token made a year ago and never used has not been
    # used for a year, which is what a scheduled check of unused tokens is after.
    since = last_used if last_used is not None else token.created_at
    if since is not None and now - since > policy.unused:
        found.append("unused")
    if BROAD_SCOPE in token.scopes:
        found.append("broad-scope")
    if not owned:
        found.append("unmanaged")
    elif not declared:
        found.append("undeclared")
    return tuple(found)


def audit_tokens(
    live: Sequence[ApiToken],
    state: State,
    declared: Mapping[str, TokenSpec],
    *,
    now: datetime,
    policy: AuditPolicy | None = None,
) -> Audit:
    """Judge every live token: managed or not (``state``), still declared or not
    (``declared``, the manifests by name), and its expiry and use at ``now``."""
    policy = policy or AuditPolicy()
    now = as_utc(now)
    current = {owned.uid: name for name, owned in state.tokens.items()}
    audited: list[AuditedToken] = []
    for token in sorted(live, key=lambda t: (t.name, t.uid)):
        if token.deleted_at is not None:
            continue
        manifest_name: str | None = current.get(token.uid)
        generation: Generation | None = "current" if manifest_name is not None else None
        if manifest_name is None and token.uid in state.previous:
            manifest_name, generation = state.previous[token.uid].name, "previous"
        owned = manifest_name is not None
        spec = _spec_of(manifest_name, declared, state)
        audited.append(
            AuditedToken(
                name=token.name,
                uid=token.uid,
                managed=owned,
                scopes=tuple(sorted(set(token.scopes))),
                created_at=token.created_at,
                expired_at=token.expired_at,
                last_used_at=token.last_used_at,
                findings=_findings(
                    token,
                    now=now,
                    policy=policy,
                    owned=owned,
                    declared=manifest_name in declared,
                ),
                manifest_name=manifest_name,
                generation=generation,
                rotate_before=spec.rotate_before if spec is not None else None,
            )
        )
    return Audit(generated_at=now, policy=policy, tokens=tuple(audited))


def _spec_of(name: str | None, declared: Mapping[str, TokenSpec], state: State) -> TokenSpec | None:
    """The spec a managed token is kept to: its manifest's, else the one state recorded."""
    if name is None:
        return None
    if name in declared:
        return declared[name]
    owned = state.tokens.get(name)
    return owned.spec if owned is not None else None
