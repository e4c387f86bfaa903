"""Token generations in a plan: live names (NAME, NAME-2, ...), previous generations kept
through their overlap, and the notes a plan carries about them and about expiries.

Names are unique among a user's live tokens (Yatai's unique index), so a replacement cannot
create its new token under the name the old one still holds: the new generation takes the
manifest name when it is free, else the lowest free NAME-N.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta

from reconciler.api.token import ApiToken
from reconciler.manifest.spec import TokenSpec
from reconciler.plan.model import Action, LiveView
from reconciler.state.model import PreviousGeneration, State
from reconciler.util.times import format_duration, format_time, parse_duration

# Owned tokens expiring within this (or their rotate_before) get a plan note.
EXPIRY_NOTICE: timedelta = parse_duration("7d")

REASON_RETIRE_DUE = "previous generation: its overlap ended"
REASON_RETIRE_AT_ONCE = "previous generation: its successor is proven"
REASON_RETIRE_REMOVED = "previous generation of a token removed from manifests"
REASON_RETIRE_FORCED = "previous generation (--replace retires it at once)"
REASON_PREVIOUS_GONE = "previous generation already gone (expired or deleted)"


def choose_live_name(
    name: str,
    taken: Collection[str] | Callable[[str], bool],
    declared: Collection[str],
    chosen: Collection[str],
) -> str:
    """``name`` when no live token holds it, else ``name-N`` with the lowest N >= 2 that no
    live token holds, no manifest declares and no other action of the plan chose.
    ``taken`` is the set of held names, or a function telling whether a name is held."""
    held = taken if callable(taken) else taken.__contains__
    if not held(name) and name not in chosen:
        return name
    n = 2
    while True:
        candidate = f"{name}-{n}"
        if not held(candidate) and candidate not in declared and candidate not in chosen:
            return candidate
        n += 1


def assign_live_names(
    actions: list[Action], present: Iterable[ApiToken], declared: Collection[str]
) -> list[Action]:
    """Give every create and replace the live name its new token gets. Tokens that an
    earlier action of the same name deletes (orphans, retired generations) free their
    names: apply runs a name's actions in order."""
    holders: dict[str, set[str]] = {}
    for token in present:
        holders.setdefault(token.name, set()).add(token.uid)
    freed: dict[str, set[str]] = {}
    for action in actions:
        if action.kind in ("delete", "retire") and action.uid is not None:
            freed.setdefault(action.name, set()).add(action.uid)
    chosen: set[str] = set()
    out: list[Action] = []
    for action in actions:
        if action.creates and action.after is not None:
            gone = freed.get(action.name, set())

            def held(candidate: str, gone: set[str] = gone) -> bool:
                return bool(holders.get(candidate, set()) - gone)

            live_name = choose_live_name(action.name, held, declared, chosen)
            chosen.add(live_name)
            action = dataclasses.replace(
                action, after=dataclasses.replace(action.after, live_name=live_name)
            )
        out.append(action)
    return out


def _view(generation: PreviousGeneration, token: ApiToken | None) -> LiveView:
    expired = token.expired_at if token is not None else generation.expired_at
    created = token.created_at if token is not None else generation.created_at
    return LiveView(
        description=token.description if token is not None else "",
        scopes=tuple(sorted(set(token.scopes))) if token is not None else (),
        expired_at=format_time(expired) if expired is not None else None,
        created_at=format_time(created) if created is not None else None,
        live_name=generation.live_name,
    )


def _retire(generation: PreviousGeneration, token: ApiToken, reason: str) -> Action:
    return Action(
        kind="retire",
        name=generation.name,
        uid=generation.uid,
        spec=None,
        reasons=(reason,),
        before=_view(generation, token),
        routine=True,
    )


def plan_previous(
    state: State,
    desired: Mapping[str, TokenSpec],
    by_uid: Mapping[str, ApiToken],
    now: datetime,
    forced: Collection[str],
) -> tuple[list[Action], list[str]]:
    """Actions and notes for every previous generation: dropped from state when gone,
    retired when its token left the manifests, when its overlap ended (or there was none)
    and its successor is proven, or at once with --replace; otherwise kept, with a note."""
    actions: list[Action] = []
    notes: list[str] = []
    for uid, generation in sorted(state.previous.items(), key=lambda kv: (kv[1].name, kv[0])):
        token = by_uid.get(uid)
        if token is None:
            actions.append(
                Action(
                    kind="forget",
                    name=generation.name,
                    uid=uid,
                    spec=None,
                    reasons=(REASON_PREVIOUS_GONE,),
                    before=_view(generation, None),
                    routine=True,
                )
            )
            continue
        current = state.tokens.get(generation.name)
        successor_ok = current is not None and current.proven and current.uid in by_uid
        if generation.name not in desired:
            actions.append(_retire(generation, token, REASON_RETIRE_REMOVED))
        elif generation.name in forced:
            actions.append(_retire(generation, token, REASON_RETIRE_FORCED))
        elif not successor_ok:
            why = generation.held or "its successor's value is not proven to work yet"
            notes.append(
                f"{generation.name}: previous generation {generation.live_name} {uid} kept: {why}"
            )
        elif generation.retire_after is None:
            actions.append(_retire(generation, token, REASON_RETIRE_AT_ONCE))
        elif generation.retire_after <= now:
            actions.append(_retire(generation, token, REASON_RETIRE_DUE))
        else:
            notes.append(
                f"{generation.name}: previous generation {generation.live_name} {uid} kept "
                f"until {format_time(generation.retire_after)}"
            )
    return actions, notes


def expiry_notes(
    state: State,
    desired: Mapping[str, TokenSpec],
    by_uid: Mapping[str, ApiToken],
    now: datetime,
    acted_on: Collection[str],
) -> list[str]:
    """A note per owned token that has expired or expires soon and that no action of the
    plan renews: it stops (or stopped) authenticating, and nothing will change that."""
    notes: list[str] = []
    for name, owned in sorted(state.tokens.items()):
        token = by_uid.get(owned.uid)
        if token is None or name in acted_on or token.expired_at is None:
            continue
        at = format_time(token.expired_at)
        if token.is_expired or token.expired_at <= now:
            notes.append(f"{name}: expired on {at}: it no longer authenticates")
            continue
        spec = desired.get(name)
        window = spec.rotate_before if spec is not None and spec.rotate_before else None
        window = window or EXPIRY_NOTICE
        if token.expired_at - now < window:
            notes.append(f"{name}: expires on {at}, within {format_duration(window)}")
    return notes
