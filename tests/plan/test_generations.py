"""The planner's decisions about updates, generations, previous generations and notes
(pure: no API, no clock). The same behaviour end to end is in tests/apply/test_applier.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from support.planning import CREATED, NOW, spec, state_of, token

from reconciler.api.token import ApiToken
from reconciler.errors import PlanError
from reconciler.manifest.spec import TokenSpec
from reconciler.plan.generations import choose_live_name
from reconciler.plan.model import Plan
from reconciler.plan.planner import build_plan
from reconciler.plan.render import render_text
from reconciler.state.codec import decode_state, encode_state
from reconciler.state.model import OwnedToken, PendingCreate, PreviousGeneration, State
from reconciler.util.times import parse_duration


def plan(specs: list[TokenSpec], live: list[ApiToken], state: State, **kwargs: object) -> Plan:
    return build_plan({s.name: s for s in specs}, live, state, now=NOW, **kwargs)  # type: ignore[arg-type]


def with_previous(state: State, *generations: PreviousGeneration) -> State:
    for generation in generations:
        state = state.with_previous(generation)
    return state


def test_live_name_is_the_manifest_name_when_free_else_the_lowest_free_suffix() -> None:
    assert choose_live_name("ci", taken=set(), declared=set(), chosen=set()) == "ci"
    assert choose_live_name("ci", taken={"ci"}, declared=set(), chosen=set()) == "ci-2"
    assert choose_live_name("ci", taken={"ci", "ci-2"}, declared=set(), chosen=set()) == "ci-3"
    assert choose_live_name("ci", taken={"ci"}, declared={"ci-2"}, chosen=set()) == "ci-3"


def test_fixed_expiry_change_in_the_future_is_an_update() -> None:
    at = NOW + timedelta(days=100)
    s = spec("ci", expires=at.isoformat())
    live = token("u1", "ci", expired_at=NOW + timedelta(days=50))
    [action] = plan([s], [live], state_of(("ci", "u1", s))).actions
    assert (action.kind, action.uid, action.expiry_changed) == ("update", "u1", True)
    assert not action.destructive


@pytest.mark.parametrize(
    ("expires", "rotate_before", "why"),
    [
        ((NOW - timedelta(days=1)).isoformat(), None, "in the past"),
        ((NOW + timedelta(days=3)).isoformat(), timedelta(days=14), "inside rotate_before"),
    ],
    ids=["past", "inside-rotate-before"],
)
def test_an_update_never_leaves_a_token_invalid_or_due(
    expires: str, rotate_before: timedelta | None, why: str
) -> None:
    s = spec("ci", expires=expires, rotate_before=rotate_before)
    live = token("u1", "ci", expired_at=NOW + timedelta(days=50))
    [action] = plan([s], [live], state_of(("ci", "u1", s))).actions
    assert action.kind == "replace" and why in action.reasons[-1]


def test_updates_replace_turns_an_update_into_a_new_generation() -> None:
    s = spec("ci", "new")
    [action] = plan(
        [s], [token("u1", "ci", "old")], state_of(("ci", "u1", s)), updates="replace"
    ).actions
    assert action.kind == "replace" and action.live_name == "ci-2"
    assert "ci → ci-2" in render_text(Plan(actions=(action,)), color=False)


def test_a_name_held_by_an_unmanaged_token_is_skipped() -> None:
    live = [token("u1", "ci", expired_at=NOW - timedelta(hours=1)), token("x", "ci-2")]
    s = spec("ci", expires="30d")
    [action] = [a for a in plan([s], live, state_of(("ci", "u1", s))).actions if a.creates]
    assert action.live_name == "ci-3"


def test_previous_generation_kept_with_a_note_then_retired() -> None:
    s = spec("ci")
    state = with_previous(
        state_of(("ci", "u2", s)),
        PreviousGeneration("ci", "ci", "u1", retire_after=NOW + timedelta(hours=1)),
    )
    live = [token("u1", "ci"), token("u2", "ci-2")]
    kept = plan([s], live, state)
    assert not kept.has_changes
    assert kept.notes == ("ci: previous generation ci u1 kept until 2026-06-01T13:00:00Z",)
    later = build_plan({"ci": s}, live, state, now=NOW + timedelta(hours=2))
    [retire] = later.actions
    assert (retire.kind, retire.uid, retire.routine, retire.destructive) == (
        "retire",
        "u1",
        True,
        False,
    )
    # A new generation then takes the name the retired one frees.
    forced = build_plan(
        {"ci": s}, live, state, now=NOW + timedelta(hours=2), replace=frozenset({"ci"})
    )
    assert {a.kind: a.live_name for a in forced.actions} == {"retire": "ci", "replace": "ci"}


def test_previous_generation_gone_is_forgotten_and_unproven_current_is_replaced() -> None:
    s = spec("ci")
    state = with_previous(
        State(
            endpoint="local",
            tokens={"ci": OwnedToken("ci", "u2", s, live_name="ci-2", proven=False)},
        ),
        PreviousGeneration("ci", "ci", "u1", held="refused"),
        PreviousGeneration("ci", "ci-3", "u0"),
    )
    result = plan([s], [token("u1", "ci"), token("u2", "ci-2")], state)
    kinds = {a.uid: a.kind for a in result.actions}
    assert kinds == {"u0": "forget", "u2": "replace"}
    assert "ci: previous generation ci u1 kept: refused" in result.notes
    replace = next(a for a in result.actions if a.kind == "replace")
    assert replace.retire_now and "/auth/current" in replace.reasons[0]


def test_replace_of_an_unknown_or_unowned_name_is_an_error() -> None:
    with pytest.raises(PlanError, match="--replace ghost"):
        plan([spec("ci")], [], state_of(), replace=frozenset({"ghost"}))


def test_expired_and_expiring_tokens_get_notes() -> None:
    s = spec("old", expires=(NOW - timedelta(days=1)).isoformat())
    soon = spec("soon", expires="30d")
    live = [
        token("u1", "old", expired_at=NOW - timedelta(days=1)),
        token(
            "u2", "soon", created_at=NOW - timedelta(days=27), expired_at=NOW + timedelta(days=3)
        ),
    ]
    result = plan([s, soon], live, state_of(("old", "u1", s), ("soon", "u2", soon)))
    assert not result.has_changes
    assert result.notes == (
        "old: expired on 2026-05-31T12:00:00Z: it no longer authenticates",
        "soon: expires on 2026-06-04T12:00:00Z, within 7d",
    )


def test_orphans_match_the_exact_live_name_and_free_it() -> None:
    s = spec("ci", expires="30d")
    started = NOW - timedelta(minutes=1)
    live = [
        token("u1", "ci", expired_at=NOW - timedelta(hours=1)),
        token("orphan", "ci-2", created_at=NOW),
    ]
    state = state_of(("ci", "u1", s), pending=[PendingCreate("ci", started, "ci-2")])
    result = plan([s], live, state)
    assert [(a.kind, a.name, a.uid) for a in result.actions] == [
        ("delete", "ci", "orphan"),
        ("replace", "ci", "u1"),
    ]
    assert result.actions[1].live_name == "ci-2"


def test_version_1_state_migrates_and_is_written_as_version_2() -> None:
    v1 = {
        "format_version": 1,
        "serial": 4,
        "lineage": "l-1",
        "endpoint": "local",
        "tokens": [
            {
                "name": "ci",
                "uid": "u2",
                "spec": {"name": "ci", "scopes": ["api"], "expires": "90d"},
                "created_at": CREATED.isoformat(),
                "expired_at": None,
            }
        ],
        "pending_creates": [{"name": "ci", "started_at": NOW.isoformat()}],
        "retired": [{"name": "ci", "uid": "u1", "spec": {"name": "ci", "scopes": ["api"]}}],
    }
    state = decode_state(json.dumps(v1).encode(), source="s.json")
    assert state.tokens["ci"].live_name == "ci" and state.tokens["ci"].proven
    assert state.pending["ci"].live_name == "ci"
    assert state.previous["u1"].retire_after is None
    written = json.loads(encode_state(state))
    assert written["format_version"] == 2 and "retired" not in written
    assert decode_state(encode_state(state), source="s.json") == state


def test_overlap_round_trips_through_state_and_plans() -> None:
    s = TokenSpec(name="ci", overlap=parse_duration("1h30m"))
    assert TokenSpec.from_dict(s.to_dict()) == s and s.to_dict()["overlap"] == "1h30m"
