"""Tests of reconciler.plan.planner: the ownership table, prune, pending creates, expiry
and rotation; pure (no API, no clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from support.planning import CREATED, NOW, only, owned_world, plan_for, spec, state_of, token

from reconciler.state.model import PendingCreate

# ---------------------------------------------------------------- the ownership table


def test_owned_and_matching_is_unchanged() -> None:
    s = spec("ci", "Deploys", ["api", "write_cluster"])
    plan = plan_for(
        [s], [token("u1", "ci", "Deploys", ["write_cluster", "api"])], state_of(("ci", "u1", s))
    )
    assert plan.actions == ()
    assert not plan.has_changes
    assert (plan.unchanged, plan.unmanaged, plan.owned_count, plan.desired_count) == (1, 0, 1, 1)


def test_scope_order_and_duplicates_do_not_matter() -> None:
    s = spec("ci", scopes=["write_cluster", "api", "api"])
    live = token("u1", "ci", scopes=["api", "write_cluster", "write_cluster"])
    assert plan_for([s], [live], state_of(("ci", "u1", s))).unchanged == 1


def test_owned_scope_change_is_replace_with_plus_minus_reason() -> None:
    s = spec("ci", scopes=["api", "read_cluster"])
    plan = plan_for(
        [s],
        [token("u1", "ci", scopes=["api", "write_cluster"])],
        state_of(("ci", "u1", s)),
        updates="replace",
    )
    action = only(plan)
    assert action.kind == "replace"
    assert action.uid == "u1"
    assert action.spec == s
    assert action.reasons == ("scopes changed: +read_cluster -write_cluster",)
    assert action.destructive and not action.routine
    assert action.before is not None and action.before["scopes"] == ["api", "write_cluster"]
    assert action.after is not None and action.after["scopes"] == ["api", "read_cluster"]


def test_owned_description_change_is_replace() -> None:
    s = spec("ci", "new text")
    action = only(
        plan_for([s], [token("u1", "ci", "old text")], state_of(("ci", "u1", s)), updates="replace")
    )
    assert (action.kind, action.reasons) == ("replace", ("description changed",))


def test_several_differences_are_all_reasons() -> None:
    s = spec("ci", "new", ["read_cluster"], expires="2027-01-01")
    live = token("u1", "ci", "old", ["api"])
    action = only(plan_for([s], [live], state_of(("ci", "u1", s))))
    assert action.reasons == (
        "scopes changed: +read_cluster -api",
        "description changed",
        "expiry changed: never -> 2027-01-01T00:00:00Z",
    )


def test_owned_not_desired_is_delete() -> None:
    s = spec("old")
    action = only(
        plan_for(
            [spec("other")],
            [token("u1", "old"), token("u2", "other")],
            state_of(("old", "u1", s), ("other", "u2", spec("other"))),
        )
    )
    assert (action.kind, action.name, action.uid) == ("delete", "old", "u1")
    assert action.reasons == ("removed from manifests",)
    assert action.spec is None and action.after is None and action.before is not None


def test_owned_missing_from_live_and_desired_is_create() -> None:
    s = spec("ci")
    action = only(plan_for([s], [], state_of(("ci", "u-gone", s))))
    assert (action.kind, action.uid, action.reasons) == (
        "create",
        None,
        ("deleted outside reconciler",),
    )
    assert action.before is None and action.after is not None


def test_owned_missing_from_live_and_not_desired_is_forget() -> None:
    action = only(plan_for([], [], state_of(("ci", "u-gone", spec("ci")))))
    assert (action.kind, action.uid) == ("forget", "u-gone")
    assert not action.destructive
    assert action.after is None


def test_unowned_matching_is_adopted() -> None:
    s = spec("ci", "Deploys", ["api"])
    action = only(plan_for([s], [token("u9", "ci", "Deploys", ["api"])]))
    assert (action.kind, action.uid, action.reasons) == (
        "adopt",
        "u9",
        ("not owned, matches the manifest",),
    )
    assert action.spec == s


def test_unowned_differing_is_a_conflict_with_the_fix() -> None:
    plan = plan_for([spec("ci", scopes=["api"])], [token("u9", "ci", scopes=["write_cluster"])])
    assert plan.actions == ()
    (conflict,) = plan.conflicts
    assert (conflict.name, conflict.uid) == ("ci", "u9")
    assert "scopes changed: +api -write_cluster" in conflict.reason
    assert "reconciler import ci u9" in conflict.fix
    assert "rename" in conflict.fix and "by hand" in conflict.fix


def test_several_unowned_with_a_declared_name_is_ambiguous() -> None:
    plan = plan_for([spec("ci")], [token("u1", "ci"), token("u2", "ci")])
    assert plan.actions == ()
    assert [c.uid for c in plan.conflicts] == ["u1", "u2"]
    assert all("2 tokens not owned by reconciler" in c.reason for c in plan.conflicts)
    assert "reconciler import ci u2" in plan.conflicts[1].fix


def test_unowned_not_desired_is_unmanaged_and_left_alone() -> None:
    plan = plan_for([], [token("u1", "someone-else")])
    assert plan.actions == () and plan.unmanaged == 1


def test_new_name_is_create() -> None:
    action = only(plan_for([spec("ci")], []))
    assert action.kind == "create"
    assert action.reasons == ("declared in manifests, does not exist yet",)


def test_owned_gone_but_unowned_namesake_matches_is_adopted_not_duplicated() -> None:
    s = spec("ci")
    action = only(plan_for([s], [token("u2", "ci")], state_of(("ci", "u-gone", s))))
    assert (action.kind, action.uid) == ("adopt", "u2")
    assert action.reasons[0] == "the owned token was deleted outside reconciler"


def test_unowned_namesake_of_owned_token_is_unmanaged() -> None:
    s = spec("ci")
    plan = plan_for([s], [token("u1", "ci"), token("u2", "ci")], state_of(("ci", "u1", s)))
    assert plan.actions == () and plan.unchanged == 1 and plan.unmanaged == 1


def test_deleted_live_tokens_are_ignored() -> None:
    gone = token("u1", "ci").model_copy(update={"deleted_at": NOW})
    assert only(plan_for([spec("ci")], [gone])).kind == "create"


# ---------------------------------------------------------------- prune


def test_prune_deletes_undeclared_unowned_tokens() -> None:
    plan = plan_for([], [token("u1", "stray")], prune=True)
    action = only(plan)
    assert (action.kind, action.uid, action.reasons) == (
        "delete",
        "u1",
        ("not declared (--prune)",),
    )
    assert plan.unmanaged == 0
    assert action.destructive


def test_prune_deletes_unowned_duplicate_of_declared_owned_name() -> None:
    s = spec("ci")
    plan = plan_for(
        [s], [token("u1", "ci"), token("u2", "ci")], state_of(("ci", "u1", s)), prune=True
    )
    action = only(plan)
    assert (action.kind, action.uid) == ("delete", "u2")
    assert "duplicate" in action.reasons[0]


def test_prune_does_not_touch_adoptable_or_conflicting_tokens() -> None:
    plan = plan_for(
        [spec("a"), spec("b", scopes=["read_cluster"])],
        [token("u1", "a"), token("u2", "b")],
        prune=True,
    )
    assert [a.kind for a in plan.actions] == ["adopt"]
    assert [c.name for c in plan.conflicts] == ["b"]


# ---------------------------------------------------------------- pending creates


def test_pending_orphan_is_deleted_and_name_created_never_adopted() -> None:
    s = spec("ci")
    started = NOW - timedelta(minutes=5)
    orphan = token("u-orphan", "ci", created_at=started + timedelta(seconds=1))
    plan = plan_for([s], [orphan], state_of(pending=[PendingCreate("ci", started)]))
    assert [(a.kind, a.uid) for a in plan.actions] == [("delete", "u-orphan"), ("create", None)]
    delete = plan.actions[0]
    assert delete.reasons == ("left by an interrupted create: its secret was never delivered",)
    assert delete.routine and not delete.destructive


def test_pending_orphan_tolerates_server_clock_skew() -> None:
    started = NOW - timedelta(minutes=5)
    orphan = token("u-o", "ci", created_at=started - timedelta(seconds=90))
    plan = plan_for([], [orphan], state_of(pending=[PendingCreate("ci", started)]))
    assert only(plan).kind == "delete"


def test_token_older_than_pending_create_is_not_an_orphan() -> None:
    started = NOW - timedelta(minutes=5)
    old = token("u-old", "ci", created_at=started - timedelta(hours=1))
    plan = plan_for([spec("ci")], [old], state_of(pending=[PendingCreate("ci", started)]))
    assert only(plan).kind == "adopt"


def test_pending_orphan_during_replace_keeps_the_replace() -> None:
    s = spec("ci", "new")
    started = NOW - timedelta(minutes=1)
    live = [token("u-old", "ci", "old"), token("u-new", "ci", "new", created_at=NOW)]
    plan = plan_for(
        [s],
        live,
        state_of(("ci", "u-old", s), pending=[PendingCreate("ci", started)]),
        updates="replace",
    )
    assert [(a.kind, a.uid) for a in plan.actions] == [("delete", "u-new"), ("replace", "u-old")]


def test_pending_without_live_token_is_ignored() -> None:
    plan = plan_for([spec("ci")], [], state_of(pending=[PendingCreate("ci", NOW)]))
    assert only(plan).kind == "create"


# ---------------------------------------------------------------- expiry and rotation


def test_duration_policy_in_sync_when_expiring_no_later_than_creation_plus_duration() -> None:
    s = spec("ci", expires="90d")
    earlier = token("u1", "ci", expired_at=CREATED + timedelta(days=30))
    exact = token("u1", "ci", expired_at=CREATED + timedelta(days=90))
    assert plan_for([s], [earlier], state_of(("ci", "u1", s))).unchanged == 1
    assert plan_for([s], [exact], state_of(("ci", "u1", s))).unchanged == 1


def test_duration_policy_later_expiry_or_never_is_replaced() -> None:
    s = spec("ci", expires="30d")
    later = token("u1", "ci", expired_at=CREATED + timedelta(days=90))
    action = only(plan_for([s], [later], state_of(("ci", "u1", s))))
    assert action.kind == "replace"
    assert action.reasons[0].startswith("expiry changed:")
    assert "creation + 30d" in action.reasons[0]
    never = only(plan_for([s], [token("u1", "ci")], state_of(("ci", "u1", s))))
    assert never.reasons == ("expiry changed: never -> 30d after creation",)
    assert never.destructive


def test_absolute_expiry() -> None:
    s = spec("ci", expires="2027-01-31")
    right = token("u1", "ci", expired_at=datetime(2027, 1, 31, tzinfo=timezone.utc))
    wrong = token("u1", "ci", expired_at=datetime(2027, 2, 1, tzinfo=timezone.utc))
    assert plan_for([s], [right], state_of(("ci", "u1", s))).unchanged == 1
    action = only(plan_for([s], [wrong], state_of(("ci", "u1", s))))
    assert action.reasons == ("expiry changed: 2027-02-01T00:00:00Z -> 2027-01-31T00:00:00Z",)


def test_never_policy_replaces_an_expiring_token() -> None:
    s = spec("ci")
    live = token("u1", "ci", expired_at=NOW + timedelta(days=5))
    action = only(plan_for([s], [live], state_of(("ci", "u1", s))))
    assert action.reasons == ("expiry changed: 2026-06-06T12:00:00Z -> never",)


def test_expired_token_is_replaced_routinely() -> None:
    s = spec("ci", expires="90d")
    live = token(
        "u1", "ci", created_at=NOW - timedelta(days=91), expired_at=NOW - timedelta(days=1)
    )
    action = only(plan_for([s], [live], state_of(("ci", "u1", s))))
    assert (action.kind, action.reasons) == ("replace", ("expired",))
    assert action.routine and not action.destructive


def test_is_expired_flag_counts_even_before_expired_at() -> None:
    s = spec("ci", expires="90d")
    live = token("u1", "ci", expired_at=NOW + timedelta(days=1), is_expired=True)
    assert only(plan_for([s], [live], state_of(("ci", "u1", s)))).reasons == ("expired",)


def test_rotation_due_inside_rotate_before() -> None:
    s = spec("ci", expires="90d", rotate_before=timedelta(days=14))
    expires = CREATED + timedelta(days=90)
    live = token("u1", "ci", expired_at=expires)
    owned = state_of(("ci", "u1", s))
    assert plan_for([s], [live], owned, now=expires - timedelta(days=15)).unchanged == 1
    action = only(plan_for([s], [live], owned, now=expires - timedelta(days=3)))
    assert action.reasons == ("rotation due: expires in 3d < rotate_before 14d",)
    assert action.routine


def test_rotation_with_spec_change_is_not_routine() -> None:
    s = spec("ci", "new", expires="90d", rotate_before=timedelta(days=14))
    live = token("u1", "ci", "old", expired_at=NOW + timedelta(days=2))
    action = only(plan_for([s], [live], state_of(("ci", "u1", s))))
    assert action.reasons[-1].startswith("rotation due")
    assert action.destructive


def test_fixed_date_in_the_past_is_not_replaced_forever() -> None:
    # A new token would be just as expired: replacing it every run helps nobody.
    s = spec("ci", expires="2026-01-01", rotate_before=timedelta(days=14))
    live = token("u1", "ci", expired_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert plan_for([s], [live], state_of(("ci", "u1", s))).unchanged == 1


def test_adopting_an_expired_token_says_it_will_be_replaced() -> None:
    s = spec("ci", expires="90d")
    live = token(
        "u1", "ci", created_at=NOW - timedelta(days=91), expired_at=NOW - timedelta(days=1)
    )
    action = only(plan_for([s], [live]))
    assert action.kind == "adopt"
    assert action.reasons[-1] == "expired: the next plan will replace it"


# ---------------------------------------------------------------- scale


def test_plans_ten_thousand_tokens_with_one_percent_drift() -> None:
    specs, live, state = owned_world(10_000)
    drifted = [
        spec(s.name, "drift", ["read_cluster"], "90d", timedelta(days=14)) if i % 100 == 0 else s
        for i, s in enumerate(specs)
    ]
    plan = plan_for(drifted, live, state, updates="replace")
    # Scale correctness only; speed is measured in bench/, not asserted here.
    assert plan.summary()["replace"] == 100 and plan.unchanged == 9_900
