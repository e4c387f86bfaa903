"""`reconciler audit`: every live token of the key's user, managed or not, with its
findings. Reads state without the lock and writes nothing.

with Session(SessionSettings(endpoint="local")) as session:
    report = audit(session, AuditRequest(expiring_days=30))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from reconciler.audit.findings import Audit, AuditPolicy, audit_tokens
from reconciler.defaults import EXPIRING_DAYS, MANIFESTS, UNUSED_DAYS
from reconciler.errors import ConfigError
from reconciler.manifest.loader import load_manifests
from reconciler.manifest.spec import TokenSpec
from reconciler.session import Session
from reconciler.util.times import utcnow


@dataclass(frozen=True)
class AuditRequest:
    """The manifests (default: manifests/) that tell `undeclared`, and the windows of
    `expiring` and `unused`."""

    paths: Sequence[str] = ()
    expiring_days: int = EXPIRING_DAYS
    unused_days: int = UNUSED_DAYS


def _manifests_here(paths: Sequence[str]) -> bool:
    return bool(paths) or any(Path(p).exists() for p in MANIFESTS)


def audit(session: Session, request: AuditRequest) -> Audit:
    """List every live token and judge it (state read without the lock; nothing written).

    The manifests (for `undeclared`) are read first, offline. Without PATHS and without
    manifests/, nothing is declared: fine while state owns nothing (an organisation not yet
    taken over), an error otherwise (every owned token would look undeclared, when the
    likelier story is a run outside the repository)."""
    declared: Mapping[str, TokenSpec] = {}
    if _manifests_here(request.paths):
        declared = load_manifests(tuple(request.paths) or MANIFESTS).tokens
    state = session.read_state()
    if state.tokens and not _manifests_here(request.paths):
        raise ConfigError(
            f"no manifests: {MANIFESTS[0]}/ does not exist here, and audit compares the "
            "tokens state owns with them; run audit from the repository root, or pass the "
            "manifest files or folders"
        )
    live = session.api.list()
    policy = AuditPolicy(
        expiring=timedelta(days=request.expiring_days),
        unused=timedelta(days=request.unused_days),
    )
    return audit_tokens(live, state, declared, now=utcnow(), policy=policy)
