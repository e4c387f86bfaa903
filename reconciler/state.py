"""The state document: what reconciler owns (name -> uid + recorded spec), never a secret.

This module is the data only. Its file form (one encoder, a strict decoder, migrations
from older format versions) is ``reconciler.statecodec``; where it is stored and how it is
locked is the business of ``reconciler.backends``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.spec import TokenSpec, format_time

FORMAT_VERSION = 1


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "spec": self.spec.to_dict(delivery=False),
            "created_at": _text(self.created_at),
            "expired_at": _text(self.expired_at),
        }


@dataclass(frozen=True)
class PendingCreate:
    """A create that was sent but not yet confirmed: if its answer is lost, the token may
    exist with a secret nobody received. Recorded before the request goes out."""

    name: str
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "started_at": _text(self.started_at)}


@dataclass(frozen=True)
class State:
    """One version of the state. Immutable: every change makes a new State (and a write)."""

    endpoint: str
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    tokens: dict[str, OwnedToken] = field(default_factory=dict)
    pending: dict[str, PendingCreate] = field(default_factory=dict)
    # Old tokens of a replacement whose successor is already owned, kept until deleted so
    # that a crash between "new created" and "old deleted" cannot orphan the old one.
    retired: dict[str, OwnedToken] = field(default_factory=dict)

    @classmethod
    def new(cls, endpoint: str) -> State:
        return cls(endpoint=endpoint)

    def with_token(self, token: OwnedToken) -> State:
        tokens = dict(self.tokens)
        tokens[token.name] = token
        return replace(self, tokens=tokens)

    def without_token(self, name: str) -> State:
        tokens = dict(self.tokens)
        tokens.pop(name, None)
        return replace(self, tokens=tokens)

    def with_pending(self, pending: PendingCreate) -> State:
        items = dict(self.pending)
        items[pending.name] = pending
        return replace(self, pending=items)

    def without_pending(self, name: str) -> State:
        items = dict(self.pending)
        items.pop(name, None)
        return replace(self, pending=items)

    def with_retired(self, token: OwnedToken) -> State:
        items = dict(self.retired)
        items[token.uid] = token
        return replace(self, retired=items)

    def without_retired(self, uid: str) -> State:
        items = dict(self.retired)
        items.pop(uid, None)
        return replace(self, retired=items)

    def owner_of(self, uid: str) -> OwnedToken | None:
        for token in self.tokens.values():
            if token.uid == uid:
                return token
        return None

    def sections(self) -> dict[str, list[OwnedToken] | list[PendingCreate]]:
        """The document's lists, in file order (see reconciler.statecodec)."""
        return {
            "tokens": [self.tokens[name] for name in sorted(self.tokens)],
            "pending_creates": [self.pending[name] for name in sorted(self.pending)],
            "retired": [self.retired[uid] for uid in sorted(self.retired)],
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
