"""The state document: what reconciler owns (name -> uid + recorded spec), never a secret.

This module is the data only. Its file form (one encoder, a strict decoder, migrations
from older format versions) is ``reconciler.statecodec``; where it is stored and how it is
locked is the business of ``reconciler.backends``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from reconciler.manifest.spec import TokenSpec
from reconciler.util.times import format_time

FORMAT_VERSION = 2


def _text(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


@dataclass(frozen=True)
class OwnedToken:
    """A live token reconciler created or adopted, and the spec it was made from."""

    name: str
    uid: str
    spec: TokenSpec
    created_at: datetime | None = None
    expired_at: datetime | None = None
    # The name the live token has: the manifest name, or NAME-N for a generation made
    # while another live token held NAME (names are unique among live tokens).
    live_name: str = ""
    # Whether its value answered 200 at /auth/current (adopted tokens: they were in use).
    proven: bool = True

    def __post_init__(self) -> None:
        if not self.live_name:
            object.__setattr__(self, "live_name", self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "live_name": self.live_name,
            "uid": self.uid,
            "spec": self.spec.to_dict(delivery=False),
            "created_at": _text(self.created_at),
            "expired_at": _text(self.expired_at),
            "proven": self.proven,
        }


@dataclass(frozen=True)
class PreviousGeneration:
    """The token a replacement superseded, still live: kept until ``retire_after`` (None:
    as soon as its successor is proven) so consumers holding its value keep working.
    ``held`` says why it is kept longer (its successor's proof failed)."""

    name: str
    live_name: str
    uid: str
    created_at: datetime | None = None
    expired_at: datetime | None = None
    retire_after: datetime | None = None
    held: str | None = None

    @classmethod
    def of(cls, token: OwnedToken, retire_after: datetime | None) -> PreviousGeneration:
        return cls(
            name=token.name,
            live_name=token.live_name,
            uid=token.uid,
            created_at=token.created_at,
            expired_at=token.expired_at,
            retire_after=retire_after,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "live_name": self.live_name,
            "uid": self.uid,
            "created_at": _text(self.created_at),
            "expired_at": _text(self.expired_at),
            "retire_after": _text(self.retire_after),
            "held": self.held,
        }


@dataclass(frozen=True)
class PendingCreate:
    """A create that was sent but not yet confirmed: if its answer is lost, the token may
    exist with a secret nobody received. Recorded before the request goes out."""

    name: str
    started_at: datetime
    # The exact name sent to the API: orphan clean-up matches it, never a search.
    live_name: str = ""

    def __post_init__(self) -> None:
        if not self.live_name:
            object.__setattr__(self, "live_name", self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "live_name": self.live_name,
            "started_at": _text(self.started_at),
        }


@dataclass(frozen=True)
class State:
    """One version of the state. Immutable: every change makes a new State (and a write)."""

    endpoint: str
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    tokens: dict[str, OwnedToken] = field(default_factory=dict)
    pending: dict[str, PendingCreate] = field(default_factory=dict)
    # Previous generations by uid: tokens a replacement superseded, kept until retired so
    # that consumers keep a working value through the overlap, and so that a crash between
    # "new created" and "old deleted" cannot orphan the old one.
    previous: dict[str, PreviousGeneration] = field(default_factory=dict)

    @classmethod
    def new(cls, endpoint: str) -> State:
        return cls(endpoint=endpoint)

    def with_token(self, token: OwnedToken) -> State:
        return replace(self, tokens=_with(self.tokens, token.name, token))

    def without_token(self, name: str) -> State:
        return replace(self, tokens=_without(self.tokens, name))

    def with_pending(self, pending: PendingCreate) -> State:
        return replace(self, pending=_with(self.pending, pending.name, pending))

    def without_pending(self, name: str) -> State:
        return replace(self, pending=_without(self.pending, name))

    def with_previous(self, generation: PreviousGeneration) -> State:
        return replace(self, previous=_with(self.previous, generation.uid, generation))

    def without_previous(self, *uids: str) -> State:
        if not any(uid in self.previous for uid in uids):
            return self
        return replace(self, previous=_without(self.previous, *uids))

    # The transitions of an apply, one per step; each leaves the state unchanged when the
    # step's token is no longer the one recorded (a later step already moved on).

    def without_uid(self, name: str, uid: str) -> State:
        """Token ``uid`` was deleted: neither the current generation of ``name`` nor a
        previous one any more."""
        state = self
        owned = state.tokens.get(name)
        if owned is not None and owned.uid == uid:
            state = state.without_token(name)
        return state.without_previous(uid)

    def with_proven(self, name: str, uid: str) -> State:
        """The current generation ``uid`` of ``name`` authenticated: proven, and its
        previous generations no longer held back."""
        owned = self.tokens.get(name)
        if owned is None or owned.uid != uid:
            return self
        state = self.with_token(replace(owned, proven=True))
        for generation in state.previous.values():
            if generation.name == name and generation.held is not None:
                state = state.with_previous(replace(generation, held=None))
        return state

    def with_previous_held(self, name: str, reason: str) -> State:
        """The previous generations of ``name`` are kept past their time, for ``reason``."""
        state = self
        for generation in list(state.previous.values()):
            if generation.name == name:
                state = state.with_previous(replace(generation, held=reason))
        return state

    def with_update(
        self,
        name: str,
        uid: str,
        spec: TokenSpec,
        *,
        expired_at: datetime | None,
        live_name: str,
    ) -> State:
        """Token ``uid`` of ``name`` was updated in place to ``spec``."""
        owned = self.tokens.get(name)
        if owned is None or owned.uid != uid:
            return self
        return self.with_token(
            replace(owned, spec=spec, expired_at=expired_at, live_name=live_name)
        )

    def owned_uids(self) -> set[str]:
        """Every uid reconciler owns: current generations and previous ones."""
        return {t.uid for t in self.tokens.values()} | set(self.previous)

    def owner_of(self, uid: str) -> OwnedToken | None:
        for token in self.tokens.values():
            if token.uid == uid:
                return token
        return None

    def sections(self) -> dict[str, list[OwnedToken | PendingCreate | PreviousGeneration]]:
        """The document's lists, in file order (see reconciler.statecodec)."""
        return {
            "tokens": [self.tokens[name] for name in sorted(self.tokens)],
            "pending_creates": [self.pending[name] for name in sorted(self.pending)],
            "previous": [self.previous[uid] for uid in sorted(self.previous)],
        }

    def header(self) -> dict[str, Any]:
        """The document's scalar fields, in file order."""
        return {
            "format_version": FORMAT_VERSION,
            "serial": self.serial,
            "lineage": self.lineage,
            "endpoint": self.endpoint,
        }

    def to_dict(self) -> dict[str, Any]:
        sections = self.sections()
        return {
            **self.header(),
            **{key: [item.to_dict() for item in items] for key, items in sections.items()},
        }


# A create's token may carry a created_at slightly before our recorded start when the
# server's clock lags ours; a token much older than the start cannot be the one we sent.
# The planner (orphans of earlier runs) and the applier (orphans of a lost create answer)
# both use it.
ORPHAN_CLOCK_SKEW = timedelta(minutes=2)


# ...and the server commits it while the run that sent it still waits for the answer (three
# attempts of at most minutes each). A token of that name made much later is somebody
# else's, even if a pending entry was left behind (a create that never reached the API).
ORPHAN_MAX_LAG = timedelta(hours=1)


_K = TypeVar("_K")
_V = TypeVar("_V")


def _with(items: dict[_K, _V], key: _K, value: _V) -> dict[_K, _V]:
    """A copy of ``items`` with ``key`` set: versions of the state share nothing mutable."""
    changed = dict(items)
    changed[key] = value
    return changed


def _without(items: dict[_K, _V], *keys: _K) -> dict[_K, _V]:
    changed = dict(items)
    for key in keys:
        changed.pop(key, None)
    return changed
