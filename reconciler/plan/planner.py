"""The planner: a pure function from desired specs, live tokens and state to a Plan."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from reconciler.api.token import ApiToken
from reconciler.errors import PlanError
from reconciler.manifest.spec import TokenSpec
from reconciler.plan.generations import assign_live_names, expiry_notes, plan_previous
from reconciler.plan.model import Action, Conflict, LiveView, Plan, SpecView
from reconciler.state.model import ORPHAN_CLOCK_SKEW, ORPHAN_MAX_LAG, OwnedToken, State
from reconciler.util.times import as_utc, format_duration, format_time, humanize

Updates = Literal["in-place", "replace"]


REASON_NEW = "declared in manifests, does not exist yet"
REASON_NEW_AFTER_ORPHAN = "declared in manifests; an earlier create of it was interrupted"
REASON_DELETED_OUTSIDE = "deleted outside reconciler"
REASON_REMOVED = "removed from manifests"
REASON_FORGET = "deleted outside reconciler and removed from manifests"
REASON_PRUNE = "not declared (--prune)"
REASON_PRUNE_DUPLICATE = "not owned, duplicate of a declared token (--prune)"
REASON_ADOPT = "not owned, matches the manifest"
REASON_ORPHAN = "left by an interrupted create: its secret was never delivered"
REASON_EXPIRED = "expired"
REASON_UNPROVEN = "its value was not accepted by the API at /auth/current"
REASON_FORCED = "--replace: a new generation now, the previous one retired at once"


def _spec_view(spec: TokenSpec) -> SpecView:
    return SpecView(
        description=spec.description,
        scopes=tuple(sorted(spec.scopes)),
        expires=spec.expires.text(),
        rotate_before=(
            format_duration(spec.rotate_before) if spec.rotate_before is not None else None
        ),
    )


def _time_text(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _live_view(token: ApiToken) -> LiveView:
    return LiveView(
        description=token.description,
        scopes=tuple(sorted(set(token.scopes))),
        expired_at=_time_text(token.expired_at),
        created_at=_time_text(token.created_at),
        live_name=token.name,
    )


def _recorded_view(owned: OwnedToken) -> LiveView:
    return LiveView(
        description=owned.spec.description,
        scopes=tuple(sorted(owned.spec.scopes)),
        expired_at=_time_text(owned.expired_at),
        created_at=_time_text(owned.created_at),
        live_name=owned.live_name,
    )


def _is_expired(token: ApiToken, now: datetime) -> bool:
    return token.is_expired or (token.expired_at is not None and token.expired_at <= now)


def _lifetime_reason(spec: TokenSpec, token: ApiToken, now: datetime) -> str | None:
    """'expired' or 'rotation due: ...' when a fresh token would fix it, else None.

    A replacement only helps when the new token would itself be valid and outside
    rotate_before; otherwise (a fixed date already past or near, or rotate_before not
    shorter than the duration) every plan would replace the token again, forever.
    """
    fresh = spec.expires.expired_at_for_new_token(now)
    if _is_expired(token, now):
        if fresh is None or fresh > now:
            return REASON_EXPIRED
        return None
    if spec.rotate_before is None or token.expired_at is None:
        return None
    remaining = token.expired_at - now
    if remaining >= spec.rotate_before:
        return None
    if fresh is not None and fresh - now < spec.rotate_before:
        return None
    return (
        f"rotation due: expires in {humanize(remaining)} < rotate_before "
        f"{humanize(spec.rotate_before)}"
    )


class _Comparison:
    """Compares desired specs with live tokens: plain equality for all, deepdiff for the
    few that differ, batched in a single DeepDiff call (it is costly per call)."""

    def __init__(self) -> None:
        self._desired: dict[str, dict[str, Any]] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._expiry: dict[str, str] = {}

    def add(self, key: str, spec: TokenSpec, token: ApiToken) -> bool:
        """Register a pair under ``key``; True when they already match."""
        expiry = spec.expires.mismatch(token.created_at, token.expired_at)
        desired = {"description": spec.description, "scopes": set(spec.scopes)}
        live = {"description": token.description, "scopes": set(token.scopes)}
        if expiry is None and desired == live:
            return True
        if desired != live:
            self._desired[key] = desired
            self._live[key] = live
        if expiry is not None:
            self._expiry[key] = expiry
        return False

    def expiry_differs(self, key: str) -> bool:
        return key in self._expiry

    def reasons(self) -> dict[str, list[str]]:
        """Human reasons for every registered pair that differs, by key."""
        added: dict[str, list[str]] = defaultdict(list)
        removed: dict[str, list[str]] = defaultdict(list)
        described: set[str] = set()
        if self._desired:
            # Imported here: a plan with nothing to compare need not pay for deepdiff.
            from deepdiff import DeepDiff

            diff = DeepDiff(self._live, self._desired, ignore_order=True, view="tree")
            for report, items in diff.items():
                for item in items:
                    path = item.path(output_format="list")
                    key, attribute = str(path[0]), str(path[1])
                    if attribute == "description":
                        described.add(key)
                    elif report == "set_item_added":
                        added[key].append(str(item.t2))
                    elif report == "set_item_removed":
                        removed[key].append(str(item.t1))
        result: dict[str, list[str]] = {}
        for key in self._desired.keys() | self._expiry.keys():
            reasons: list[str] = []
            if key in added or key in removed:
                change = [f"+{s}" for s in sorted(added.get(key, ()))]
                change += [f"-{s}" for s in sorted(removed.get(key, ()))]
                reasons.append("scopes changed: " + " ".join(change))
            if key in described:
                reasons.append("description changed")
            if key in self._expiry:
                reasons.append(self._expiry[key])
            result[key] = reasons
        return result


def _conflict_fix(name: str, uid: str) -> str:
    return (
        f"adopt it with `reconciler import {name} {uid}` (the next plan then updates it in "
        "place to match the manifest, or replaces it when its expiry needs a new token), "
        f"rename {name} in the manifests, or delete the token by hand"
    )


def _ambiguous_fix(name: str, uid: str) -> str:
    return (
        f"keep one: adopt it with `reconciler import {name} {uid}` and delete the others by "
        f"hand, or rename {name} in the manifests"
    )


def _stamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _live_digest(live: Sequence[ApiToken]) -> str:
    """A fingerprint of everything about the live tokens that planning looks at."""
    rows = sorted(
        (
            t.uid,
            t.name,
            t.description,
            sorted(set(t.scopes)),
            _stamp(t.created_at),
            _stamp(t.expired_at),
            t.is_expired,
        )
        for t in live
    )
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


@dataclass
class _Planning:
    """What the steps of build_plan share: the inputs, indexed, and what they decided."""

    desired: Mapping[str, TokenSpec]
    state: State
    now: datetime
    prune: bool
    updates: Updates
    forced: frozenset[str]
    present: list[ApiToken]
    by_uid: dict[str, ApiToken]
    # Live tokens not owned, by name; steps take out the ones they decide about.
    unowned: dict[str, list[ApiToken]]
    actions: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    unchanged: int = 0
    unmanaged: int = 0
    pruned: int = 0
    owned_count: int = 0
    orphaned_names: set[str] = field(default_factory=set)
    # Owned names whose token is gone while an unowned one of that name exists.
    displaced: set[str] = field(default_factory=set)
    comparison: _Comparison = field(default_factory=lambda: _Comparison())
    compared: dict[str, tuple[str, TokenSpec, ApiToken]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_plan(
    desired: Mapping[str, TokenSpec],
    live: Sequence[ApiToken],
    state: State,
    *,
    now: datetime,
    prune: bool = False,
    updates: Updates = "in-place",
    replace: frozenset[str] = frozenset(),
) -> Plan:
    """Decide what to do, following the ownership table (docs/design.md section 3).
    Pure: no I/O, no clock.

    ``desired`` maps name to spec; ``live`` is every token the credentials can list;
    ``state`` says which of them reconciler owns; ``now`` is the moment expiry and
    rotation are judged against. Never deletes or replaces a token it does not own, except
    an orphan of an interrupted create (state.pending) and, with ``prune``, any unowned
    token not declared (or duplicating a declared name that is owned).

    ``updates="replace"`` makes every in-place update a replacement (an API without the
    update route); ``replace`` names owned tokens to replace now (``--replace``), their
    previous generations retired at once. PlanError when one of them is not owned.
    """
    _check_forced(replace, desired, state)
    planning = _index(desired, live, state, as_utc(now), prune)
    planning.updates, planning.forced = updates, replace
    # Orphans of interrupted creates go first: they are never adopted, and once they are
    # set aside the name is planned as if they did not exist.
    _plan_orphans(planning)
    previous, notes = plan_previous(state, desired, planning.by_uid, planning.now, replace)
    planning.actions.extend(previous)
    planning.notes.extend(notes)
    _plan_owned(planning)
    _plan_declared(planning)
    _plan_compared(planning)
    _plan_leftovers(planning)
    acted = {a.name for a in planning.actions if a.kind in ("replace", "delete", "forget")}
    planning.notes.extend(expiry_notes(state, desired, planning.by_uid, planning.now, acted))
    actions = assign_live_names(planning.actions, planning.present, desired.keys())
    return Plan(
        notes=tuple(planning.notes),
        actions=tuple(actions),
        conflicts=tuple(planning.conflicts),
        unchanged=planning.unchanged,
        unmanaged=planning.unmanaged,
        owned_count=planning.owned_count,
        desired_count=len(desired),
        created_at=planning.now,
        state_lineage=state.lineage,
        state_serial=state.serial,
        live_digest=_live_digest(planning.present),
        threshold_base=planning.owned_count + planning.pruned,
    )


def _check_forced(forced: frozenset[str], desired: Mapping[str, TokenSpec], state: State) -> None:
    unknown = sorted(n for n in forced if n not in desired or n not in state.tokens)
    if unknown:
        managed = sorted(n for n in desired if n in state.tokens)
        close = [m for n in unknown for m in difflib.get_close_matches(n, managed, n=1)]
        hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
        raise PlanError(
            f"--replace {', '.join(unknown)}: not a token reconciler owns and the manifests "
            f"declare{hint}; --replace takes the name of a managed token (see `reconciler "
            "state list`)"
        )


def _index(
    desired: Mapping[str, TokenSpec],
    live: Sequence[ApiToken],
    state: State,
    now: datetime,
    prune: bool,
) -> _Planning:
    present = [t for t in live if t.deleted_at is None]
    owned_uids = state.owned_uids()
    unowned: dict[str, list[ApiToken]] = defaultdict(list)
    for token in present:
        if token.uid not in owned_uids:
            unowned[token.name].append(token)
    return _Planning(
        desired=desired,
        state=state,
        now=now,
        prune=prune,
        updates="in-place",
        forced=frozenset(),
        present=present,
        by_uid={t.uid: t for t in present},
        unowned=unowned,
    )


def _plan_orphans(p: _Planning) -> None:
    """Delete what an interrupted create left: same name, made around its start."""
    for name, pending in p.state.pending.items():
        live_name = pending.live_name
        candidates = p.unowned.get(live_name)
        if not candidates:
            continue
        cutoff = pending.started_at - ORPHAN_CLOCK_SKEW
        latest = pending.started_at + ORPHAN_MAX_LAG
        orphans = [
            t for t in candidates if t.created_at is not None and cutoff <= t.created_at <= latest
        ]
        if not orphans:
            continue
        p.orphaned_names.add(name)
        orphan_uids = {t.uid for t in orphans}
        p.unowned[live_name] = [t for t in candidates if t.uid not in orphan_uids]
        for token in orphans:
            # Under the manifest name: apply runs it before that name's create.
            p.actions.append(_delete(token, REASON_ORPHAN, routine=True, name=name))


def _plan_owned(p: _Planning) -> None:
    """Each owned token: delete, forget, recreate, or compare with its spec."""
    for name, owned in p.state.tokens.items():
        current = p.by_uid.get(owned.uid)
        spec = p.desired.get(name)
        if current is not None:
            p.owned_count += 1
            if spec is None:
                p.actions.append(_delete(current, REASON_REMOVED, name=name))
            else:
                p.compared[name] = ("replace", spec, current)
                p.comparison.add(name, spec, current)
            _plan_beside_owned(p, name, declared=spec is not None)
        elif spec is None:
            p.actions.append(
                Action(
                    kind="forget",
                    name=name,
                    uid=owned.uid,
                    spec=None,
                    reasons=(REASON_FORGET,),
                    before=_recorded_view(owned),
                )
            )
        elif not p.unowned.get(name):
            p.actions.append(_create(spec, REASON_DELETED_OUTSIDE))
        else:
            # The owned token is gone but another of that name exists: it is judged like
            # any unowned token (adopt or conflict) rather than duplicated by a create.
            p.displaced.add(name)


def _plan_beside_owned(p: _Planning, name: str, *, declared: bool) -> None:
    """Same-named unowned tokens beside an owned one are someone else's business, unless
    --prune claims everything."""
    for other in p.unowned.pop(name, []):
        if p.prune:
            p.pruned += 1
            reason = REASON_PRUNE_DUPLICATE if declared else REASON_PRUNE
            p.actions.append(_delete(other, reason))
        else:
            p.unmanaged += 1


def _plan_declared(p: _Planning) -> None:
    """Each declared name reconciler does not (or no longer) own: create, adopt or conflict."""
    for name, spec in p.desired.items():
        if name in p.state.tokens and name not in p.displaced:
            continue
        candidates = p.unowned.pop(name, [])
        if not candidates:
            reason = REASON_NEW_AFTER_ORPHAN if name in p.orphaned_names else REASON_NEW
            p.actions.append(_create(spec, reason))
        elif len(candidates) > 1:
            uids = ", ".join(sorted(t.uid for t in candidates))
            for token in candidates:
                p.conflicts.append(
                    Conflict(
                        name=name,
                        uid=token.uid,
                        reason=(
                            f"{len(candidates)} tokens not owned by reconciler are named "
                            f"{name} ({uids}); reconciler cannot tell which to adopt"
                        ),
                        fix=_ambiguous_fix(name, token.uid),
                    )
                )
        else:
            p.compared[name] = ("adopt", spec, candidates[0])
            p.comparison.add(name, spec, candidates[0])


def _plan_compared(p: _Planning) -> None:
    """Owned tokens that differ are replaced; unowned ones are adopted or conflict."""
    reasons_by_name = p.comparison.reasons()
    for name, (role, spec, token) in p.compared.items():
        differences = reasons_by_name.get(name, [])
        lifetime = _lifetime_reason(spec, token, p.now)
        if role == "replace":
            action = _owned_change(p, name, spec, token, differences, lifetime)
            if action is None:
                p.unchanged += 1
            else:
                p.actions.append(action)
        elif differences:
            p.conflicts.append(
                Conflict(
                    name=name,
                    uid=token.uid,
                    reason="not owned by reconciler and differs from the manifest: "
                    + "; ".join(differences),
                    fix=_conflict_fix(name, token.uid),
                )
            )
        else:
            p.actions.append(_adopt(name, spec, token, lifetime, displaced=name in p.displaced))


def _owned_change(
    p: _Planning,
    name: str,
    spec: TokenSpec,
    token: ApiToken,
    differences: list[str],
    lifetime: str | None,
) -> Action | None:
    """The action an owned, live token needs: None, an in-place update, or a replacement
    (a new generation), with the reasons that say why."""
    owned = p.state.tokens[name]
    reasons = [*differences, *([lifetime] if lifetime else [])]
    routine = not differences
    if name in p.forced:
        reasons, routine = [REASON_FORCED, *reasons], True
    elif not owned.proven:
        reasons, routine = [REASON_UNPROVEN, *reasons], True
    elif not reasons:
        return None
    elif lifetime is None and p.updates == "in-place":
        blocker = _update_blocker(p, name, spec)
        if blocker is None:
            return _change(
                "update", name, spec, token, reasons, expiry=p.comparison.expiry_differs(name)
            )
        reasons = [*reasons, *([blocker] if blocker else [])]
    return dataclasses.replace(
        _change(
            "replace",
            name,
            spec,
            token,
            reasons,
            expiry=lifetime is not None or p.comparison.expiry_differs(name),
        ),
        routine=routine,
        retire_now=name in p.forced or not owned.proven,
    )


def _update_blocker(p: _Planning, name: str, spec: TokenSpec) -> str | None:
    """Why the update route cannot make the token match (so it is replaced), or None.

    An update must never leave a token invalid or due: only a fixed expiry in the future,
    outside rotate_before, can be sent; PATCH cannot clear an expiry, and a duration policy
    is measured from creation, which an update does not change."""
    if not p.comparison.expiry_differs(name):
        return None
    expires = spec.expires
    if expires.kind != "at":
        # "expiry changed: ... -> never" or "... creation + 90d" already says why: PATCH
        # cannot clear an expiry, and a duration counts from creation.
        return ""
    assert expires.at is not None
    if expires.at <= p.now:
        return "the new expiry is in the past, so an update would leave the token invalid"
    if spec.rotate_before is not None and expires.at - p.now < spec.rotate_before:
        return "the new expiry is inside rotate_before, so a new token replaces it"
    return None


def _change(
    kind: Literal["update", "replace"],
    name: str,
    spec: TokenSpec,
    token: ApiToken,
    reasons: list[str],
    *,
    expiry: bool,
) -> Action:
    after = _spec_view(spec)
    if kind == "update":
        after = dataclasses.replace(after, live_name=token.name)
    return Action(
        kind=kind,
        name=name,
        uid=token.uid,
        spec=spec,
        reasons=tuple(reasons),
        before=_live_view(token),
        after=after,
        expiry_changed=expiry,
    )


def _adopt(
    name: str, spec: TokenSpec, token: ApiToken, lifetime: str | None, *, displaced: bool
) -> Action:
    reasons = [REASON_ADOPT]
    if displaced:
        reasons.insert(0, f"the owned token was {REASON_DELETED_OUTSIDE}")
    if lifetime is not None:
        reasons.append(f"{lifetime}: the next plan will replace it")
    return Action(
        kind="adopt",
        name=name,
        uid=token.uid,
        spec=spec,
        reasons=tuple(reasons),
        before=_live_view(token),
        after=_spec_view(spec),
    )


def _plan_leftovers(p: _Planning) -> None:
    """Unowned tokens nobody declared: left alone, or deleted with --prune."""
    for tokens in p.unowned.values():
        for token in tokens:
            if p.prune:
                p.pruned += 1
                p.actions.append(_delete(token, REASON_PRUNE))
            else:
                p.unmanaged += 1


def _create(spec: TokenSpec, reason: str) -> Action:
    return Action(
        kind="create",
        name=spec.name,
        uid=None,
        spec=spec,
        reasons=(reason,),
        after=_spec_view(spec),
    )


def _delete(
    token: ApiToken, reason: str, *, routine: bool = False, name: str | None = None
) -> Action:
    return Action(
        kind="delete",
        name=name or token.name,
        uid=token.uid,
        spec=None,
        reasons=(reason,),
        before=_live_view(token),
        routine=routine,
    )
