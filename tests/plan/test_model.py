"""Tests of reconciler.plan.model: the plan as data (order, summary, its JSON document)
and the safety check; pure."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from support.planning import CREATED, owned_world, plan_for, spec, state_of, token

from reconciler.errors import PlanError
from reconciler.plan.model import Plan


def test_actions_are_ordered_by_name_then_kind_whatever_the_input_order() -> None:
    desired = [spec(n) for n in ("b", "a", "c")]
    live = [token("u-c", "c"), token("u-x", "x")]
    plans = [
        plan_for(desired, live, prune=True),
        plan_for(list(reversed(desired)), list(reversed(live)), prune=True),
    ]
    assert plans[0].to_dict()["actions"] == plans[1].to_dict()["actions"]
    assert [(a.name, a.kind) for a in plans[0].actions] == [
        ("a", "create"),
        ("b", "create"),
        ("c", "adopt"),
        ("x", "delete"),
    ]


def test_summary_counts_every_kind() -> None:
    plan = plan_for([spec("a")], [token("u-x", "x")], state_of(("g", "u-g", spec("g"))), prune=True)
    assert plan.summary() == {
        "create": 1,
        "replace": 0,
        "update": 0,
        "delete": 1,
        "retire": 0,
        "adopt": 0,
        "forget": 1,
    }


def test_plan_round_trips_through_dict_and_json() -> None:
    s = spec("ci", "d", ["api", "read_cluster"], expires="90d", rotate_before=timedelta(days=7))
    plan = plan_for(
        [s, spec("new"), spec("clash", scopes=["write_cluster"])],
        [token("u1", "ci", "old"), token("u2", "clash")],
        state_of(("ci", "u1", s), ("gone", "u3", spec("gone"))),
    )
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["format_version"] == 1
    again = Plan.from_dict(data)
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    assert (again.state_lineage, again.state_serial) == ("lineage-1", 3)
    assert again.live_digest == plan.live_digest and plan.live_digest


def test_plan_holds_no_secret() -> None:
    live = token("u1", "ci").model_copy(update={"token": "s3cr3t-value"})
    plan = plan_for([spec("ci")], [live])
    assert "s3cr3t" not in json.dumps(plan.to_dict())


def test_from_dict_refuses_newer_or_corrupt_plans() -> None:
    data = plan_for([spec("ci")], []).to_dict()
    with pytest.raises(PlanError, match="newer"):
        Plan.from_dict({**data, "format_version": 99}, source="p.json")
    with pytest.raises(PlanError, match="corrupt"):
        Plan.from_dict({**data, "actions": [{"kind": "explode"}]}, source="p.json")
    with pytest.raises(PlanError, match="not a reconciler plan"):
        Plan.from_dict([], source="p.json")


def test_live_digest_changes_with_live_tokens() -> None:
    a = plan_for([spec("ci")], [token("u1", "ci")])
    b = plan_for([spec("ci")], [token("u1", "ci", "changed")])
    assert a.live_digest != b.live_digest


def test_expiry_change_is_data_on_the_action_and_survives_a_saved_plan() -> None:
    """Renderers read Action.expiry_changed, not reason text; a plan read back from its JSON
    document has the same flags (and typed before/after views) as the one written."""
    s = spec("ci", expires="90d", rotate_before=timedelta(days=14))
    other = spec("other", "new description")
    expires = CREATED + timedelta(days=90)
    live = [token("u1", "ci", expired_at=expires), token("u2", "other", "old")]
    owned = state_of(("ci", "u1", s), ("other", "u2", spec("other", "old")))
    plan = plan_for([s, other], live, owned, now=expires - timedelta(days=3))
    flags = {a.name: a.expiry_changed for a in plan.actions}
    assert flags == {"ci": True, "other": False}
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert "expiry_changed" not in plan.to_dict()["actions"][0]


# ---------------------------------------------------------------- the safety check


def test_check_passes_small_changes() -> None:
    specs, live, state = owned_world(10)
    plan = plan_for(specs[:7], live, state)
    assert plan.summary()["delete"] == 3
    plan.check()


def test_check_refuses_too_many_deletes_unless_forced() -> None:
    specs, live, state = owned_world(10)
    plan = plan_for(specs[:6], live, state)
    with pytest.raises(PlanError) as info:
        plan.check()
    message = str(info.value)
    assert "4 of 10" in message and "30%" in message and "--force" in message
    plan.check(force=True)
    plan.check(threshold=0.5)


def test_check_counts_spec_change_replaces() -> None:
    specs, live, state = owned_world(10)
    changed = [spec(s.name, "new", expires="90d") if i < 4 else s for i, s in enumerate(specs)]
    with pytest.raises(PlanError, match="delete or replace 4 of 10"):
        plan_for(changed, live, state, updates="replace").check()


def test_check_ignores_rotation_and_expiry_replaces() -> None:
    specs, live, state = owned_world(10)
    plan = plan_for(specs, live, state, now=CREATED + timedelta(days=85))
    assert plan.summary()["replace"] == 10
    plan.check()
    expired = plan_for(specs, live, state, now=CREATED + timedelta(days=91))
    assert expired.summary()["replace"] == 10
    expired.check()


def test_check_refuses_any_delete_when_manifests_declare_nothing() -> None:
    specs, live, _ = owned_world(1)
    plan = plan_for([], live, state_of((specs[0].name, "u0", specs[0])))
    with pytest.raises(PlanError, match="declare no token at all") as info:
        plan.check(threshold=1.0)
    assert "--force" in str(info.value)
    plan.check(force=True)


def test_check_refuses_conflicts_even_when_forced() -> None:
    plan = plan_for([spec("ci", scopes=["read_cluster"])], [token("u9", "ci")])
    for force in (False, True):
        with pytest.raises(PlanError) as info:
            plan.check(force=force)
        assert "1 conflict" in str(info.value)
        assert "reconciler import ci u9" in str(info.value)


def test_check_counts_prune_deletes_against_owned_plus_pruned() -> None:
    plan = plan_for([], [token("u1", "stray")], prune=True)
    with pytest.raises(PlanError):
        plan.check()
    specs, live, state = owned_world(10)
    plan = plan_for(specs, [*live, token("ux", "stray")], state, prune=True)
    assert plan.threshold_base == 11
    plan.check()
