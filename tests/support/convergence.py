"""What "converged" and "recoverable" mean, checked against the local API's own database.

Shared by the chaos, fault and concurrency tests. ``user_workspace`` is one user's setup
(manifest, state file, secrets file) against one local API; ``check_converged`` is the
guarantee after a successful apply, ``check_recoverable`` the one at any instant of an
interrupted apply.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from reconciler.server.store import parse_db_time
from support.local_api import LocalApi
from support.workspace import Workspace

# planner.ORPHAN_CLOCK_SKEW: a live token created this long before a pending create started
# may still be that create's orphan.
ORPHAN_SKEW = timedelta(minutes=2)


def user_workspace(root: Path, api: LocalApi) -> Workspace:
    """One reconciler user's files against ``api`` as these tests drive them: runs in this
    process, applies 4 calls at a time, new values into ``secrets/new-tokens.json``."""
    return Workspace(root, api, secrets="secrets/new-tokens.json", fast=True, parallelism=4)


@dataclass(frozen=True)
class Recoverable:
    owned_live: int
    orphans: int
    retired_live: int


def check_recoverable(ws: Workspace) -> Recoverable:
    """What must hold at any instant of an interrupted apply: state is readable and every
    live token is either owned, a previous generation of a replacement, or the orphan of
    a recorded pending create (matched by the exact live name it sent) that the next plan
    deletes. Nothing else may exist: that would be a token nobody will ever clean up,
    whose secret may be lost."""
    state = ws.read_state()
    live = ws.live()
    if state is None:
        assert not live, f"no state was written, yet {len(live)} tokens exist"
        return Recoverable(0, 0, 0)
    owned = {t.uid for t in state.tokens.values()}
    retired = set(state.previous)
    pending_by_live_name = {p.live_name: p for p in state.pending.values()}
    orphans = 0
    strays: list[str] = []
    for token in live:
        if token.uid in owned or token.uid in retired:
            continue
        pending = pending_by_live_name.get(token.name)
        created = parse_db_time(token.created_at)
        assert created is not None
        if pending is not None and created >= pending.started_at - ORPHAN_SKEW:
            orphans += 1
            continue
        strays.append(f"{token.name} {token.uid}")
    assert not strays, f"live tokens neither owned nor pending orphans: {strays}"
    return Recoverable(
        owned_live=sum(1 for t in live if t.uid in owned),
        orphans=orphans,
        retired_live=sum(1 for t in live if t.uid in retired),
    )


def check_converged(ws: Workspace) -> None:
    """The guarantee after a successful apply: exactly one current generation per declared
    name, live under the live name state records, proven; besides them only previous
    generations still inside their overlap, and nothing else; nothing pending; and the
    secrets file holds, for every name, a value that authenticates as that very token."""
    declared = set(ws.specs)
    live = ws.live()
    counts = Counter(t.name for t in live)
    duplicates = {name: n for name, n in counts.items() if n > 1}
    assert not duplicates, f"duplicate live tokens: {duplicates}"
    live_by_uid = {t.uid: t for t in live}

    state = ws.read_state()
    assert state is not None
    assert not state.pending, f"pending creates left in state: {sorted(state.pending)}"
    assert set(state.tokens) == declared, (
        f"missing: {sorted(declared - set(state.tokens))}, "
        f"extra: {sorted(set(state.tokens) - declared)}"
    )
    now = datetime.now(timezone.utc)
    for uid, generation in state.previous.items():
        assert uid in live_by_uid, f"previous generation {uid} is gone but still in state"
        due = generation.retire_after is None or generation.retire_after <= now
        assert not due, f"previous generation {uid} of {generation.name} is overdue"
    current = {owned.uid for owned in state.tokens.values()}
    extra = [t.name for t in live if t.uid not in current and t.uid not in state.previous]
    assert not extra, f"live tokens neither current nor previous generations: {extra}"
    by_name = {}
    for name, owned in state.tokens.items():
        token = live_by_uid.get(owned.uid)
        assert token is not None, f"{name}: state owns {owned.uid}, which is not live"
        assert token.name == owned.live_name and owned.proven, name
        by_name[name] = token
        # The live token is the truth. The spec state recorded may lag it when a kill came
        # between an in-place update and its record: the next plan compares live tokens,
        # finds them matching, and nothing is lost.
        assert set(token.scopes) == set(ws.specs[name]["scopes"]), name

    sink = ws.sink_values()
    undelivered: list[str] = []
    for name, token in by_name.items():
        value = sink.get(name)
        principal = ws.api.store.authenticate(value) if value else None
        if principal is None or principal.token_uid != token.uid:
            undelivered.append(name)
    assert not undelivered, f"live tokens whose value is not in the secrets file: {undelivered}"


def check_no_changes(ws: Workspace) -> None:
    result = ws.plan("--detailed-exitcode")
    assert result.code == 0, result
