"""Saved plans: a versioned JSON file that apply carries out only if nothing moved since."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.api.token import ApiToken
from reconciler.errors import PlanError
from reconciler.plan.model import Plan
from reconciler.state.model import State
from reconciler.util import atomicfile
from reconciler.util.jsonload import load_json
from reconciler.util.text import plain
from reconciler.util.times import format_time

PLANFILE_VERSION = 1
KIND = "reconciler-plan"


@dataclass(frozen=True)
class SavedPlan:
    """A plan plus what it was made against. Holds no secret, so it is safe as a CI
    artifact; it does name token uids.

    ``affected`` is a snapshot of the live tokens the plan touches (see affected_tokens):
    applying the saved plan is refused when any of them changed, appeared or vanished.
    ``manifest_digest`` is informational: the plan, not the manifests, is what apply
    carries out, so editing manifests after planning does not change a saved plan."""

    plan: Plan
    endpoint: str
    manifest_digest: str
    prune: bool = False
    affected: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "planfile_version": PLANFILE_VERSION,
            "reconciler_version": __version__,
            "endpoint": self.endpoint,
            "manifest_digest": self.manifest_digest,
            "prune": self.prune,
            "affected_tokens": list(self.affected),
            "plan": self.plan.to_dict(),
        }


def _row(token: ApiToken) -> dict[str, Any]:
    return {
        "uid": token.uid,
        "name": token.name,
        "description": token.description,
        "scopes": sorted(set(token.scopes)),
        "expired_at": format_time(token.expired_at) if token.expired_at else None,
    }


def affected_tokens(plan: Plan, live: Sequence[ApiToken]) -> tuple[dict[str, Any], ...]:
    """The live tokens the plan touches, as comparable rows (uid, name, description,
    scopes, expired_at): those named by an action or a conflict, and those whose uid an
    action names. Other tokens may change freely between plan and apply."""
    names = {a.name for a in plan.actions} | {c.name for c in plan.conflicts}
    # The live names new generations get: one taken since makes the plan stale.
    names |= {a.live_name for a in plan.actions if a.creates}
    uids = {a.uid for a in plan.actions if a.uid}
    rows = [_row(t) for t in live if t.deleted_at is None and (t.name in names or t.uid in uids)]
    return tuple(sorted(rows, key=lambda r: (r["name"], r["uid"])))


_FIELDS = (("description", "description"), ("scopes", "scopes"), ("expired_at", "expiry"))


def _name(row: dict[str, Any]) -> str:
    # Live names are anyone's text: keep control characters out of the terminal.
    return plain(str(row["name"]))


def _live_changes(saved: SavedPlan, live: Sequence[ApiToken]) -> list[str]:
    """What happened to the tokens the plan touches, one phrase per token."""
    before = {str(row["uid"]): row for row in saved.affected}
    after = {row["uid"]: row for row in affected_tokens(saved.plan, live)}
    changes: list[str] = []

    def order(uid: str) -> tuple[str, str]:
        return (str((after.get(uid) or before[uid])["name"]), uid)

    for uid in sorted(before.keys() | after.keys(), key=order):
        old, new = before.get(uid), after.get(uid)
        if new is None:
            assert old is not None
            changes.append(f"{_name(old)} ({uid}) was deleted")
        elif old is None:
            changes.append(f"a token named {_name(new)} ({uid}) was created")
        elif old != new:
            fields = [label for key, label in _FIELDS if old.get(key) != new[key]]
            changes.append(f"{_name(new)} ({uid}) changed its {', '.join(fields) or 'data'}")
    return changes


def write_plan_file(path: Path, saved: SavedPlan) -> None:
    """Save the plan (mode 0600) so that ``path`` is at every instant the old file or the
    complete new plan, even if the run is killed while writing."""
    # Key order as to_dict gives it (kind first: is_plan_file looks at the file's head).
    data = json.dumps(saved.to_dict(), indent=2) + "\n"
    try:
        target = atomicfile.resolve(path)
        atomicfile.remove_stale_temps(target)
        atomicfile.atomic_write(target, data)
    except OSError as exc:
        raise PlanError(f"{path}: cannot write the plan ({exc.strerror})") from None


def _load(path: Path) -> Any:
    try:
        raw = atomicfile.read_regular(path)
    except OSError as exc:
        raise PlanError(f"{path}: not a readable plan file ({exc.strerror})") from None
    if raw is None:
        raise PlanError(f"{path}: no such plan file")
    try:
        return load_json(raw)
    except ValueError as exc:
        raise PlanError(f"{path}: not a readable plan file ({exc})") from None


def is_plan_file(path: Path) -> bool:
    """Whether ``path`` is a saved plan (as opposed to a manifest): a file, not named like
    a manifest, that starts as write_plan_file starts one (whatever its name: plan.json,
    tokens.plan, plan.out)."""
    if not path.is_file() or path.suffix.lower() in (".yaml", ".yml"):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and (
        KIND.encode() in head or b'"planfile_version"' in head
    )


def read_plan_file(path: Path) -> SavedPlan:
    data = _load(path)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise PlanError(f"{path}: not a reconciler plan file (made by `reconciler plan --out`)")
    version = data.get("planfile_version")
    if not isinstance(version, int) or version > PLANFILE_VERSION:
        raise PlanError(
            f"{path}: plan file version {version} is not one this reconciler understands "
            f"({PLANFILE_VERSION}); make the plan again with this version"
        )
    try:
        return SavedPlan(
            plan=Plan.from_dict(data["plan"], source=str(path)),
            endpoint=str(data["endpoint"]),
            manifest_digest=str(data["manifest_digest"]),
            prune=bool(data.get("prune", False)),
            affected=tuple(dict(row) for row in data["affected_tokens"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: plan file is damaged ({type(exc).__name__}: {exc})") from None


def check_endpoint(saved: SavedPlan, endpoint: str) -> None:
    """Refuse a saved plan made against another endpoint (before its state is even read)."""
    if saved.endpoint != endpoint:
        raise PlanError(
            f"saved plan is for endpoint {saved.endpoint}, not {endpoint}; apply it with "
            f"--endpoint {saved.endpoint}, or make a new plan for this endpoint"
        )


def _state_changes(plan: Plan, state: State) -> list[str]:
    planned = plan.state_serial or 0
    if planned == 0 and state.serial == 0:
        return []  # no state then, none now: the fresh lineages mean nothing
    if planned == 0:
        return [
            f"a state was written since the plan was made (none then, serial {state.serial} now)"
        ]
    if state.serial == 0:
        return [f"the state is gone (the plan was made from serial {planned})"]
    if plan.state_lineage is not None and plan.state_lineage != state.lineage:
        return [
            f"the state lineage changed ({plan.state_lineage} -> {state.lineage}): this is "
            "another state file"
        ]
    if planned != state.serial:
        return [f"the state changed since the plan was made (serial {planned} -> {state.serial})"]
    return []


def check_fresh(saved: SavedPlan, *, endpoint: str, state: State, live: Sequence[ApiToken]) -> None:
    """Refuse a saved plan, naming every reason, when it no longer describes reality: another
    endpoint, another state version, or a change to a live token the plan touches."""
    check_endpoint(saved, endpoint)
    problems = _state_changes(saved.plan, state)
    changes = _live_changes(saved, live)
    if changes:
        problems.append(
            "live tokens the plan touches changed since it was made: " + "; ".join(changes)
        )
    if problems:
        raise PlanError(
            "saved plan is stale: " + "; ".join(problems) + ". Run `reconciler plan --out` "
            "again and review the new plan."
        )
