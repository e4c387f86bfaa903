"""Saved plans: a versioned JSON file that apply carries out only if nothing moved since."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import PlanError
from reconciler.plan import Plan
from reconciler.state import State
from reconciler.token import ApiToken

PLANFILE_VERSION = 1
KIND = "reconciler-plan"


@dataclass(frozen=True)
class SavedPlan:
    """A plan plus what it was made against. Holds no secret, so it is safe as a CI
    artifact; it does name token uids."""

    plan: Plan
    endpoint: str
    manifest_digest: str
    prune: bool = False
    affected_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "planfile_version": PLANFILE_VERSION,
            "endpoint": self.endpoint,
            "manifest_digest": self.manifest_digest,
            "prune": self.prune,
            "affected_fingerprint": self.affected_fingerprint,
            "plan": self.plan.to_dict(),
        }


def affected_fingerprint(plan: Plan, live: Sequence[ApiToken]) -> str:
    """A digest of the live tokens the plan touches: those named by an action or conflict
    and those whose uid an action names. Other tokens may change freely meanwhile."""
    names = {a.name for a in plan.actions} | {c.name for c in plan.conflicts}
    uids = {a.uid for a in plan.actions if a.uid}
    rows = sorted(
        [
            t.uid,
            t.name,
            t.description,
            sorted(set(t.scopes)),
            t.expired_at.isoformat() if t.expired_at else None,
        ]
        for t in live
        if t.deleted_at is None and (t.name in names or t.uid in uids)
    )
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def write_plan_file(path: Path, saved: SavedPlan) -> None:
    data = json.dumps(saved.to_dict(), indent=2, sort_keys=True) + "\n"
    temp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(temp, path)
    except OSError as exc:
        raise PlanError(f"{path}: cannot write the plan ({exc.strerror})") from None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable plan file ({type(exc).__name__})") from None


def is_plan_file(path: Path) -> bool:
    """Whether ``path`` is a saved plan (as opposed to a manifest)."""
    if not path.is_file() or path.suffix not in (".json", ".plan", ".tfplan", ""):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return KIND.encode() in head or b'"planfile_version"' in head


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
            affected_fingerprint=str(data.get("affected_fingerprint", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: plan file is damaged ({type(exc).__name__}: {exc})") from None


def check_fresh(saved: SavedPlan, *, endpoint: str, state: State, live: Sequence[ApiToken]) -> None:
    """Refuse a saved plan, naming every reason, when it no longer describes reality."""
    problems: list[str] = []
    plan = saved.plan
    if saved.endpoint != endpoint:
        problems.append(f"it was made for endpoint {saved.endpoint}, not {endpoint}")
    never_written = plan.state_serial == 0 and state.serial == 0
    if never_written:
        pass  # planned and applied against no state at all: lineages are both fresh
    elif plan.state_lineage is not None and plan.state_lineage != state.lineage:
        problems.append(
            f"the state lineage changed ({plan.state_lineage} -> {state.lineage}): this is "
            "another state file"
        )
    elif plan.state_serial is not None and plan.state_serial != state.serial:
        problems.append(
            f"the state changed since the plan was made (serial {plan.state_serial} -> "
            f"{state.serial})"
        )
    if affected_fingerprint(plan, live) != saved.affected_fingerprint:
        problems.append("live tokens the plan touches changed since it was made")
    if problems:
        raise PlanError(
            "saved plan is stale: " + "; ".join(problems) + ". Run `reconciler plan --out` "
            "again and review the new plan."
        )
