"""Where the new values of a plan go: a token's own ``deliver_to:``, else the run's list;
offline (parsing only), so plan can show it and apply can refuse before anything."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from reconciler.destinations.parse import parse_destination
from reconciler.errors import SecretsError
from reconciler.util.text import plural

if TYPE_CHECKING:
    from reconciler.manifest.spec import TokenSpec
    from reconciler.plan.model import Plan


def entries_for(spec: TokenSpec | None, run: Sequence[str]) -> tuple[str, ...]:
    """The destination texts of one token: its own ``deliver_to``, else the run's."""
    if spec is not None and spec.deliver_to:
        return spec.deliver_to
    return tuple(run)


def creates_have_destinations(plan: Plan, run: Sequence[str]) -> bool:
    """Whether every token the plan creates has somewhere to deliver its value."""
    return all(entries_for(a.spec, run) for a in plan.actions if a.creates)


def describe_entries(entries: Iterable[str]) -> list[str]:
    """How plan output names destinations: parsed (no store contacted), no credentials."""
    return [parse_destination(text).describe() for text in entries]


def plan_destinations(plan: Plan, run: Sequence[str]) -> dict[str, list[str]]:
    """For each token the plan creates, where its new value will go (describe() texts)."""
    return {
        a.name: describe_entries(entries_for(a.spec, run))
        for a in plan.actions
        if a.creates and entries_for(a.spec, run)
    }


def require_destinations(plan: Plan, run: Sequence[str], *, discard: bool) -> None:
    """Refuse a plan that creates tokens whose values, shown only once, would be lost."""
    creates = sum(1 for a in plan.actions if a.creates)
    if not creates or discard or creates_have_destinations(plan, run):
        return
    values = "values are" if creates != 1 else "value is"
    raise SecretsError(
        f"the plan creates {plural(creates, 'token')} whose {values} shown only once: "
        "pass --secrets-out FILE (or vault://MOUNT/PATH, aws-sm://PATH, exec:COMMAND; "
        "or secrets: in reconciler.yaml, deliver_to: in the manifest) to receive them, or "
        "--discard-secrets if nobody needs them"
    )
