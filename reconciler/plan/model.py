"""The plan as data: actions with reasons, conflicts, the safety check, and its JSON form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from reconciler.defaults import THRESHOLD
from reconciler.errors import PlanError, UnsafePlanError
from reconciler.manifest.spec import TokenSpec
from reconciler.util.text import plural
from reconciler.util.times import as_utc, format_time

FORMAT_VERSION = 1

ActionKind = Literal["create", "replace", "update", "delete", "retire", "adopt", "forget"]


@dataclass(frozen=True)
class KindInfo:
    """What every part of reconciler needs to know about one kind of action.

    ``order``: position among the actions of one name, which is both the plan's reading
    order and the order apply runs them in (a delete of an orphan left by an interrupted
    create comes before the create that takes its place). ``review``: position in the
    Markdown table, closest review first. ``destructive``: counts toward the safety
    threshold unless the action is routine. ``creates``: makes a token whose value is
    shown only once (needs a destination).
    """

    symbol: str
    order: int
    review: int
    past: str
    destructive: bool
    creates: bool


# Terraform's symbols where Terraform has the concept. "forget" uses ".", as Terraform's
# own forget action (removed blocks with destroy = false) does; "~" is an in-place update
# (same uid, same value). Within one name, deletes of what stands in the way (orphans,
# due previous generations) come first, so their names are free for a new generation.
# Summaries list kinds in this order.
KIND_TABLE: dict[ActionKind, KindInfo] = {
    "delete": KindInfo("-", order=0, review=1, past="deleted", destructive=True, creates=False),
    "retire": KindInfo("-", order=1, review=4, past="retired", destructive=True, creates=False),
    "forget": KindInfo(".", order=2, review=6, past="forgotten", destructive=False, creates=False),
    "adopt": KindInfo("=", order=3, review=5, past="adopted", destructive=False, creates=False),
    "update": KindInfo("~", order=4, review=2, past="updated", destructive=False, creates=False),
    "replace": KindInfo("-/+", order=5, review=0, past="replaced", destructive=True, creates=True),
    "create": KindInfo("+", order=6, review=3, past="created", destructive=False, creates=True),
}
KINDS: tuple[ActionKind, ...] = tuple(sorted(KIND_TABLE, key=lambda k: KIND_TABLE[k].order))

# Like octoDNS, the share threshold applies only from this many managed tokens on: removing
# one of three tokens is a normal edit, not a sign of a broken manifest directory.
MIN_TOKENS_FOR_THRESHOLD = 10


def _text_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True)
class LiveView:
    """The live token an action acts on, as the plan shows it (for a token already gone:
    what state recorded). Times are RFC 3339 text, as in the JSON output."""

    description: str
    scopes: tuple[str, ...]
    expired_at: str | None
    created_at: str | None
    live_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "live_name": self.live_name,
            "description": self.description,
            "scopes": list(self.scopes),
            "expired_at": self.expired_at,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveView:
        return cls(
            description=str(data.get("description") or ""),
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            expired_at=_text_or_none(data.get("expired_at")),
            created_at=_text_or_none(data.get("created_at")),
            live_name=_text_or_none(data.get("live_name")),
        )

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


@dataclass(frozen=True)
class SpecView:
    """The desired spec an action makes or adopts, in the manifest's spelling."""

    description: str
    scopes: tuple[str, ...]
    expires: str
    rotate_before: str | None
    # The name the new token gets (create, replace): NAME, or NAME-N while NAME is held.
    live_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "live_name": self.live_name,
            "description": self.description,
            "scopes": list(self.scopes),
            "expires": self.expires,
            "rotate_before": self.rotate_before,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpecView:
        return cls(
            description=str(data.get("description") or ""),
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            expires=str(data.get("expires") or "never"),
            rotate_before=_text_or_none(data.get("rotate_before")),
            live_name=_text_or_none(data.get("live_name")),
        )

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


@dataclass(frozen=True)
class Action:
    """One change: what to do (``kind``) to which token, and why (``reasons``).

    - ``create``: make a token from ``spec`` named ``after.live_name``; ``uid`` is None.
    - ``replace``: a new generation: create a token from ``spec`` named
      ``after.live_name``, then retire ``uid`` (at once, or after the spec's overlap).
    - ``update``: change ``uid`` in place to match ``spec`` (same value).
    - ``delete``: delete ``uid``.
    - ``retire``: delete the previous generation ``uid`` and drop it from state.
    - ``adopt``: record the unowned ``uid`` in state as matching ``spec``; no API call.
    - ``forget``: drop the owned ``uid``, already gone from live and from the manifests,
      from state; no API call.

    ``before`` is a view of the live token (None for create); ``after`` is a view of the
    desired spec (None for delete and forget). ``routine`` marks housekeeping that the
    safety threshold ignores: a replace caused only by expiry or rotation, or the delete of
    a token left behind by an interrupted create. ``expiry_changed`` marks a replace whose
    new token gets another expiry (the policy changed, the token expired or is due for
    rotation), so renderers show the expiry beside the other changes; it is not in the
    JSON document, and reading one recovers it from the reasons (see EXPIRY_REASONS).
    """

    kind: ActionKind
    name: str
    uid: str | None
    spec: TokenSpec | None
    reasons: tuple[str, ...]
    before: LiveView | None = None
    after: SpecView | None = None
    routine: bool = False
    expiry_changed: bool = False
    # replace: retire the previous generation in the same run, whatever the overlap.
    retire_now: bool = False

    @property
    def live_name(self) -> str:
        """The name the token this action makes (or acts on) has at the API."""
        view = self.after if self.after is not None else self.before
        return (view.live_name if view is not None else None) or self.name

    @property
    def destructive(self) -> bool:
        """Whether this action counts toward the safety threshold (see Plan.check)."""
        return KIND_TABLE[self.kind].destructive and not self.routine

    @property
    def creates(self) -> bool:
        """Whether this action makes a new token (whose value is shown only once)."""
        return KIND_TABLE[self.kind].creates

    def sort_key(self) -> tuple[str, int, str]:
        return (self.name, KIND_TABLE[self.kind].order, self.uid or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "spec": self.spec.to_dict() if self.spec is not None else None,
            "reasons": list(self.reasons),
            "before": self.before.to_dict() if self.before is not None else None,
            "after": self.after.to_dict() if self.after is not None else None,
            "routine": self.routine,
            "destructive": self.destructive,
            "retire_now": self.retire_now,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        kind = str(data["kind"])
        if kind not in KIND_TABLE:
            raise ValueError(f"unknown action kind {kind!r}")
        spec = data.get("spec")
        uid = data.get("uid")
        reasons = tuple(str(r) for r in data["reasons"])
        return cls(
            kind=kind,
            name=str(data["name"]),
            uid=str(uid) if uid is not None else None,
            spec=TokenSpec.from_dict(dict(spec)) if spec is not None else None,
            reasons=reasons,
            before=LiveView.from_dict(data["before"]) if data.get("before") is not None else None,
            after=SpecView.from_dict(data["after"]) if data.get("after") is not None else None,
            routine=bool(data.get("routine", False)),
            expiry_changed=_names_expiry(reasons),
            retire_now=bool(data.get("retire_now", False)),
        )


@dataclass(frozen=True)
class Conflict:
    """A declared name held by a token reconciler does not own and cannot adopt as is."""

    name: str
    uid: str
    reason: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "reason": self.reason, "fix": self.fix}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conflict:
        return cls(
            name=str(data["name"]),
            uid=str(data["uid"]),
            reason=str(data["reason"]),
            fix=str(data["fix"]),
        )


# How the planner words the reasons that give a replaced token another expiry. The JSON
# document has no key of its own for Action.expiry_changed (its keys are a documented
# contract), so reading a saved plan recovers the flag from these.
EXPIRY_REASONS = ("expiry changed", "rotation due", "expired")


def _names_expiry(reasons: Iterable[str]) -> bool:
    return any(r.split(":", 1)[0] in EXPIRY_REASONS for r in reasons)


def _sorted_actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    return tuple(sorted(actions, key=Action.sort_key))


@dataclass(frozen=True)
class Plan:
    """A finished plan. Pure data: no I/O, no secrets (so a saved plan is safe to upload).

    ``owned_count`` is how many state tokens were found live; ``desired_count`` how many
    tokens the manifests declare; ``unchanged`` how many owned tokens already match;
    ``unmanaged`` how many live tokens are neither owned nor acted on. ``state_lineage``,
    ``state_serial`` and ``live_digest`` identify what the plan was made from, so that
    applying a saved plan can refuse it when state or live tokens moved since.
    """

    actions: tuple[Action, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    unchanged: int = 0
    unmanaged: int = 0
    owned_count: int = 0
    desired_count: int = 0
    created_at: datetime | None = None
    state_lineage: str | None = None
    state_serial: int | None = None
    live_digest: str | None = None
    threshold_base: int = field(default=0)
    # What the user should know that is no action: previous generations kept through their
    # overlap, tokens expired or about to. Never counted as changes.
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Deterministic order whatever the caller passed: saved plans and diffs of rendered
        # plans stay stable between runs.
        object.__setattr__(self, "actions", _sorted_actions(self.actions))
        object.__setattr__(
            self, "conflicts", tuple(sorted(self.conflicts, key=lambda c: (c.name, c.uid)))
        )
        if self.threshold_base < self.owned_count:
            object.__setattr__(self, "threshold_base", self.owned_count)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def summary(self) -> dict[str, int]:
        """How many actions of each kind (every kind present, zeros included)."""
        counts: dict[str, int] = dict.fromkeys(KIND_TABLE, 0)
        for action in self.actions:
            counts[action.kind] += 1
        return counts

    def check(self, threshold: float = THRESHOLD, *, force: bool = False) -> None:
        """Raise PlanError when this plan must not be applied.

        Conflicts always block (``force`` does not override them: resolving one needs a
        decision only the user can make). Unless ``force``, a plan is also refused when
        its destructive actions (deletes and replaces, see Action.destructive) exceed
        ``threshold`` of the tokens it manages, or when the manifests declare no token at
        all and anything would be deleted (an empty or mis-pointed manifest directory).

        Decision: replaces caused only by expiry or by ``rotate_before`` do not count, nor
        do deletes of tokens left by an interrupted create. Tokens created together expire
        together, and a nightly rotation of many of them must not be refused every night;
        the threshold guards against manifest mistakes, which show up as spec-change
        replaces and deletes. The base is ``owned_count``, plus with ``--prune`` the
        unowned tokens it would delete, since --prune claims those too.
        """
        if self.conflicts:
            count = len(self.conflicts)
            lines = [
                f"{plural(count, 'conflict')} must be resolved before this plan can be applied:"
            ]
            for conflict in self.conflicts:
                lines.append(f"  {conflict.name} ({conflict.uid}): {conflict.reason}")
                lines.append(f"    fix: {conflict.fix}")
            raise PlanError("\n".join(lines))
        if force:
            return
        destructive = [a for a in self.actions if a.destructive]
        if not destructive:
            return
        if self.desired_count == 0 and any(a.kind == "delete" for a in destructive):
            deletes = sum(1 for a in destructive if a.kind == "delete")
            raise UnsafePlanError(
                f"the manifests declare no token at all and the plan would delete "
                f"{plural(deletes, 'token')}. If that is really intended, re-run with --force."
            )
        base = self.threshold_base
        if base >= MIN_TOKENS_FOR_THRESHOLD and len(destructive) > threshold * base:
            share = f" ({len(destructive) / base:.0%})" if base else ""
            raise UnsafePlanError(
                f"the plan would delete or replace {len(destructive)} of "
                f"{plural(base, 'managed token')}{share}, above the safety "
                f"threshold of {threshold:.0%}. Check the manifests; if the plan is right, "
                "re-run with --force."
            )

    def to_dict(self) -> dict[str, Any]:
        """The saved-plan and JSON-output document (see reconciler.render.render_json)."""
        return {
            "format_version": FORMAT_VERSION,
            "created_at": format_time(self.created_at) if self.created_at else None,
            "state": {"lineage": self.state_lineage, "serial": self.state_serial},
            "live_digest": self.live_digest,
            "summary": {
                **self.summary(),
                "unchanged": self.unchanged,
                "unmanaged": self.unmanaged,
                "conflicts": len(self.conflicts),
            },
            "owned_count": self.owned_count,
            "desired_count": self.desired_count,
            "threshold_base": self.threshold_base,
            "actions": [action.to_dict() for action in self.actions],
            "conflicts": [conflict.to_dict() for conflict in self.conflicts],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "plan") -> Plan:
        """Read a saved plan; anything malformed or too new is a PlanError naming source."""
        if not isinstance(data, dict) or not isinstance(data.get("format_version"), int):
            raise PlanError(f"{source}: not a reconciler plan (no format_version)")
        version = data["format_version"]
        if version > FORMAT_VERSION:
            raise PlanError(
                f"{source}: plan format {version} is newer than this reconciler understands "
                f"({FORMAT_VERSION}); upgrade reconciler or make the plan again"
            )
        try:
            created = data.get("created_at")
            state = data.get("state") or {}
            serial = state.get("serial")
            return cls(
                actions=tuple(Action.from_dict(item) for item in data["actions"]),
                conflicts=tuple(Conflict.from_dict(item) for item in data["conflicts"]),
                unchanged=int(data["summary"]["unchanged"]),
                unmanaged=int(data["summary"]["unmanaged"]),
                owned_count=int(data["owned_count"]),
                desired_count=int(data["desired_count"]),
                created_at=(
                    as_utc(datetime.fromisoformat(str(created).replace("Z", "+00:00")))
                    if created
                    else None
                ),
                state_lineage=state.get("lineage"),
                state_serial=int(serial) if serial is not None else None,
                live_digest=data.get("live_digest"),
                threshold_base=int(data.get("threshold_base", 0)),
                notes=tuple(str(n) for n in data.get("notes") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(
                f"{source}: plan file is corrupt ({type(exc).__name__}: {exc}); make the plan again"
            ) from None
