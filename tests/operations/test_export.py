"""Tests of reconciler.operations.export's choices, pure (select_exports at a fixed clock):
what is exported, counted or skipped and why; and the spec an export declares for a live
token, which the planner then adopts with no other action."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from support.planning import NOW, plan_for, spec, state_of, token

from reconciler.manifest.spec import Expiry
from reconciler.operations.export import Selection, schema_ref_for, select_exports, spec_of
from reconciler.state.model import OwnedToken, PendingCreate, PreviousGeneration

DAY = timedelta(days=1)


def reasons(selection: Selection) -> dict[str, str]:
    return {s.name: s.reason for s in selection.skipped}


def test_owned_and_expired_are_counted_the_rest_exported() -> None:
    state = state_of(("mine", "u1", spec("mine")))
    state = state.with_previous(PreviousGeneration(name="mine", live_name="mine-2", uid="u0"))
    live = [
        token("u0", "mine-2"),
        token("u1", "mine"),
        token("u2", "old", expired_at=NOW - DAY),
        token("u3", "flagged", expired_at=NOW + DAY, is_expired=True),
        token("u4", "hand-made", description="x"),
        token("u5", "gone").model_copy(update={"deleted_at": NOW}),
    ]
    selection = select_exports(live, state, set(), now=NOW)
    assert [t.name for t in selection.exported] == ["hand-made"]
    assert (selection.managed, selection.expired, selection.skipped) == (2, 2, ())
    included = select_exports(live, state, set(), now=NOW, include_expired=True)
    assert [t.name for t in included.exported] == ["flagged", "hand-made", "old"]
    assert included.expired == 0


def test_names_that_cannot_be_declared_are_skipped_with_the_reason() -> None:
    state = state_of(("rotated", "u1", spec("rotated")), pending=[])
    state = state.with_pending(PendingCreate(name="pend", started_at=NOW - DAY, live_name="pend-2"))
    live = [
        token("u1", "rotated"),
        token("u2", "declared"),
        token("u3", "pend-2"),
        token("u4", "rotated-3"),
        token("u5", "a" * 61),
        token("u6", "Upper"),
        token("u7", "twin"),
        token("u8", "twin"),
        token("u9", "odd-scope", scopes=["api", "admin"]),
        token("u10", "no-scope", scopes=[]),
        token("u11", "long", description="x" * 1025),
        token("u12", "rotated-x"),
        token("u13", "fine-2"),
    ]
    selection = select_exports(live, state, {"declared"}, now=NOW)
    found = reasons(selection)
    assert "the manifests declare this name already" in found["declared"]
    assert "interrupted create of pend" in found["pend-2"]
    assert "named like a generation of rotated" in found["rotated-3"]
    assert "not a valid manifest name" in found["a" * 61]
    assert "not a valid manifest name" in found["Upper"]
    assert "2 live tokens are named twin" in found["twin"]
    assert [s.uid for s in selection.skipped if s.name == "twin"] == ["u7", "u8"]
    assert "scope 'admin' is not one a manifest can declare" in found["odd-scope"]
    assert "no scopes" in found["no-scope"]
    assert "longer than the 1024 characters" in found["long"]
    # NAME-N only of a NAME state owns: these are tokens of their own.
    assert [t.name for t in selection.exported] == ["fine-2", "rotated-x"]


def test_a_live_name_state_records_for_another_token_is_skipped() -> None:
    """With duplicate names allowed, an unowned token may hold an owned generation's live
    name (or the owned one was deleted by hand and another made under its name)."""
    owned = state_of().with_token(
        OwnedToken(name="ci", uid="u1", spec=spec("ci"), live_name="ci-2")
    )
    owned = owned.with_previous(PreviousGeneration(name="db", live_name="db-7", uid="u9"))
    live = [token("u2", "ci-2"), token("u3", "db-7")]
    found = reasons(select_exports(live, owned, set(), now=NOW))
    assert "current generation" in found["ci-2"]
    assert "previous generation of db" in found["db-7"]


def test_search_is_a_part_of_the_name_in_any_case() -> None:
    live = [
        token("u1", "ci-deployer"),
        token("u2", "grafana"),
        token("u3", "old-ci", expired_at=NOW),
    ]
    selection = select_exports(live, state_of(), set(), now=NOW, search="CI")
    assert [t.name for t in selection.exported] == ["ci-deployer"]
    assert selection.expired == 1, "expired tokens outside the search are not counted"


def test_the_exported_spec_is_adopted_with_no_other_action() -> None:
    live = [
        token("u1", "fixed", 'say "hi"\n', ["read_cluster", "api"], expired_at=NOW + 40 * DAY),
        token("u2", "forever", scopes=["write_cluster"]),
    ]
    specs = [spec_of(t) for t in live]
    assert specs[0].expires == Expiry("at", at=NOW + 40 * DAY)
    assert specs[1].expires == Expiry.never()
    plan = plan_for(specs, live)
    assert [(a.kind, a.name) for a in plan.actions] == [("adopt", "fixed"), ("adopt", "forever")]
    assert plan.conflicts == ()


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        (None, "../schema/manifest.schema.json"),
        ("manifests/imported.yaml", "../schema/manifest.schema.json"),
        ("manifests/team/a.yaml", "../../schema/manifest.schema.json"),
        ("imported.yaml", "schema/manifest.schema.json"),
    ],
)
def test_schema_comment_points_at_the_repository_schema(out: str | None, expected: str) -> None:
    assert schema_ref_for(Path(out) if out else None) == expected
