"""The planner's inputs as tests build them (specs, live tokens, states) at a fixed NOW,
and plans made of them: pure data, no API and no clock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from reconciler.api.token import ApiToken
from reconciler.manifest.spec import Expiry, TokenSpec
from reconciler.plan.model import Action, Plan
from reconciler.plan.planner import Updates, build_plan
from reconciler.state.model import OwnedToken, PendingCreate, State

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(days=10)


def spec(
    name: str,
    description: str = "",
    scopes: Iterable[str] = ("api",),
    expires: str = "never",
    rotate_before: timedelta | None = None,
) -> TokenSpec:
    return TokenSpec(
        name=name,
        description=description,
        scopes=frozenset(scopes),
        expires=Expiry.parse(expires),
        rotate_before=rotate_before,
    )


def token(
    uid: str,
    name: str,
    description: str = "",
    scopes: Iterable[str] = ("api",),
    *,
    created_at: datetime = CREATED,
    expired_at: datetime | None = None,
    is_expired: bool = False,
    last_used_at: datetime | None = None,
) -> ApiToken:
    return ApiToken.model_validate(
        {
            "uid": uid,
            "name": name,
            "description": description,
            "scopes": list(scopes),
            "created_at": created_at,
            "expired_at": expired_at,
            "is_expired": is_expired,
            "last_used_at": last_used_at,
        }
    )


def state_of(*owned: tuple[str, str, TokenSpec], pending: Iterable[PendingCreate] = ()) -> State:
    return State(
        endpoint="local",
        lineage="lineage-1",
        serial=3,
        tokens={name: OwnedToken(name=name, uid=uid, spec=s) for name, uid, s in owned},
        pending={p.name: p for p in pending},
    )


def plan_for(
    desired: Iterable[TokenSpec],
    live: Iterable[ApiToken],
    state: State | None = None,
    *,
    now: datetime = NOW,
    prune: bool = False,
    updates: Updates = "in-place",
) -> Plan:
    return build_plan(
        {s.name: s for s in desired},
        list(live),
        state if state is not None else state_of(),
        now=now,
        prune=prune,
        updates=updates,
    )


def only(plan: Plan) -> Action:
    assert len(plan.actions) == 1, plan.actions
    return plan.actions[0]


def owned_world(count: int) -> tuple[list[TokenSpec], list[ApiToken], State]:
    specs = [
        spec(f"t{i:02d}", expires="90d", rotate_before=timedelta(days=14)) for i in range(count)
    ]
    live = [
        token(f"u{i}", s.name, expired_at=CREATED + timedelta(days=90)) for i, s in enumerate(specs)
    ]
    return specs, live, state_of(*((s.name, f"u{i}", s) for i, s in enumerate(specs)))
