"""The plan use case: what `reconciler plan` and `reconciler show` do, without click.

with Session(SessionSettings(endpoint="local")) as session:
    planned = make_plan(session, PlanRequest(paths=("manifests",)))
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.defaults import MANIFESTS
from reconciler.errors import PlanError, UnsafePlanError
from reconciler.manifest.loader import Manifests
from reconciler.manifest.loader import load_manifests as load
from reconciler.plan.model import Plan
from reconciler.plan.planner import build_plan
from reconciler.plan.routing import creates_have_destinations, plan_destinations
from reconciler.plan.saved import SavedPlan, affected_tokens, read_plan_file, write_plan_file
from reconciler.session import Session
from reconciler.util.times import utcnow

if TYPE_CHECKING:
    from reconciler.api.token import ApiToken
    from reconciler.state.model import State


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: manifest files or directories (default: manifests/)."""

    paths: Sequence[str] = ()
    prune: bool = False
    lock: bool = True
    lock_timeout: float = 0.0
    #: "replace" makes every in-place update a replacement (an API without the route);
    #: None: $RECONCILER_UPDATES, then reconciler.yaml, then in-place.
    updates: str | None = None
    #: Managed token names to replace now, previous generations retired at once.
    replace: Sequence[str] = ()


@dataclass(frozen=True)
class Planned:
    """A fresh plan and what it was made from."""

    plan: Plan
    manifest_digest: str
    state: State
    live: Sequence[ApiToken]


def load_manifests(paths: Sequence[str]) -> Manifests:
    """Offline and first, so a bad manifest fails before anything is contacted or created."""
    return load(tuple(paths) or MANIFESTS)


def plan_from(
    session: Session,
    manifests: Manifests,
    *,
    prune: bool,
    updates: str,
    replace: Sequence[str],
) -> Planned:
    """The plan for ``manifests`` against the live tokens and state (the caller holds
    the lock); ``updates`` is the resolved update mode."""
    state = session.read_state()
    live = session.api.list()
    now = utcnow()
    plan = build_plan(
        manifests.tokens,
        live,
        state,
        now=now,
        prune=prune,
        updates="replace" if updates == "replace" else "in-place",
        replace=frozenset(replace),
    )
    refuse_born_expired(plan, manifests, now)
    return Planned(plan, manifests.digest, state, live)


def refuse_born_expired(plan: Plan, manifests: Manifests, now: datetime) -> None:
    """A create or replace whose new token would expire before it is made is refused: it
    would not authenticate, and the next plan would say nothing is wrong."""
    for action in plan.actions:
        spec = action.spec
        if not action.creates or spec is None or spec.expires.at is None:
            continue
        if spec.expires.at > now:
            continue
        file, line = manifests.locations.get(action.name, ("manifests", 0))
        raise PlanError(
            f"{file}:{line}: token {action.name}: expires {spec.expires.text()} is in "
            f"the past, so the token the plan would {action.kind} would be born expired; set "
            "a later date, or a duration such as expires: 90d"
        )


def make_plan(session: Session, request: PlanRequest) -> Planned:
    """What apply would change. Read-only (it holds the state lock while reading, unless
    ``request.lock`` is False)."""
    manifests = load_manifests(request.paths)
    updates = session.updates(request.updates)  # reconciler.yaml read before the lock
    locked: AbstractContextManager[object] = (
        session.backend.lock("plan", request.lock_timeout) if request.lock else nullcontext()
    )
    with locked:
        return plan_from(
            session,
            manifests,
            prune=request.prune,
            updates=updates,
            replace=request.replace,
        )


def save_plan(session: Session, planned: Planned, out: Path, *, prune: bool) -> None:
    """Write ``planned`` for a later ``apply``; refused (nothing written) when it has
    conflicts, so there is never a plan file that cannot be applied."""
    planned.plan.check(force=True)
    saved = SavedPlan(
        plan=planned.plan,
        endpoint=session.endpoint_id,
        manifest_digest=planned.manifest_digest,
        prune=prune,
        affected=affected_tokens(planned.plan, planned.live),
    )
    write_plan_file(out, saved)


def read_plan(path: Path) -> SavedPlan:
    """A saved plan, checked for its format (``reconciler show``); offline."""
    return read_plan_file(path)


def unsafe_reason(plan: Plan) -> str | None:
    """What apply's safety check would refuse this plan for (None when it would not), so
    plan, run in pull requests, can say it before the deploy job does."""
    try:
        plan.check()
    except UnsafePlanError as exc:
        return exc.reason
    return None


def planned_destinations(session: Session, plan: Plan) -> dict[str, list[str]] | None:
    """Where the plan's creates will deliver: deliver_to, else reconciler.yaml's secrets:
    (apply's --secrets-out is not known yet); None when nothing is configured."""
    if not any(a.creates for a in plan.actions):
        return None
    return plan_destinations(plan, session.configured_destinations()) or None


def needs_destination(session: Session, plan: Plan) -> bool:
    """Whether apply of this plan needs --secrets-out: creates that neither their
    deliver_to: nor reconciler.yaml's secrets: give a destination."""
    if not any(a.creates for a in plan.actions):
        return False
    return not creates_have_destinations(plan, session.configured_destinations())
