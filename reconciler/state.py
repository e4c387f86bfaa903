"""The state document: what reconciler owns (name -> uid + recorded spec), never a secret.

This module is the data only; where it is stored and how it is locked is the business of
``reconciler.backends``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.errors import StateError
from reconciler.spec import TokenSpec, as_utc, format_time

FORMAT_VERSION = 2


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    return as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


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
            "spec": self.spec.to_dict(),
            "created_at": _text(self.created_at),
            "expired_at": _text(self.expired_at),
            "proven": self.proven,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnedToken:
        return cls(
            name=str(data["name"]),
            uid=str(data["uid"]),
            spec=TokenSpec.from_dict(data["spec"]),
            created_at=_time(data.get("created_at")),
            expired_at=_time(data.get("expired_at")),
            live_name=str(data.get("live_name") or data["name"]),
            proven=_flag(data.get("proven", True)),
        )


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {value!r}")
    return value


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreviousGeneration:
        held = data.get("held")
        return cls(
            name=str(data["name"]),
            live_name=str(data.get("live_name") or data["name"]),
            uid=str(data["uid"]),
            created_at=_time(data.get("created_at")),
            expired_at=_time(data.get("expired_at")),
            retire_after=_time(data.get("retire_after")),
            held=str(held) if held is not None else None,
        )


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingCreate:
        started = _time(data["started_at"])
        assert started is not None
        return cls(
            name=str(data["name"]),
            started_at=started,
            live_name=str(data.get("live_name") or data["name"]),
        )


# State.to_json's cache: id(item) -> (item, its JSON text); the item is kept so an id
# cannot be reused by another object while its entry exists.
Item = OwnedToken | PendingCreate | PreviousGeneration
JsonCache = dict[int, tuple[Item, str]]


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

    def with_previous(self, generation: PreviousGeneration) -> State:
        items = dict(self.previous)
        items[generation.uid] = generation
        return replace(self, previous=items)

    def without_previous(self, uid: str) -> State:
        if uid not in self.previous:
            return self
        items = dict(self.previous)
        items.pop(uid, None)
        return replace(self, previous=items)

    def owned_uids(self) -> set[str]:
        """Every uid reconciler owns: current generations and previous ones."""
        return {t.uid for t in self.tokens.values()} | set(self.previous)

    def owner_of(self, uid: str) -> OwnedToken | None:
        for token in self.tokens.values():
            if token.uid == uid:
                return token
        return None

    def _sections(self) -> dict[str, list[Item]]:
        return {
            "tokens": [self.tokens[name] for name in sorted(self.tokens)],
            "pending_creates": [self.pending[name] for name in sorted(self.pending)],
            "previous": [self.previous[uid] for uid in sorted(self.previous)],
        }

    def _header(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "serial": self.serial,
            "lineage": self.lineage,
            "endpoint": self.endpoint,
        }

    def to_dict(self) -> dict[str, Any]:
        sections = self._sections()
        return {
            **self._header(),
            **{key: [item.to_dict() for item in items] for key, items in sections.items()},
        }

    def to_json(self, cache: JsonCache | None = None) -> str:
        """``json.dumps(self.to_dict(), indent=2)``, byte for byte, built faster.

        apply writes the state after every API call; encoding every unchanged token again
        each time (json's indenting encoder is pure Python) made an apply of N creates
        cost O(N^2) CPU. Tokens are immutable and shared between versions, so with a
        ``cache`` kept across writes each token is encoded once; the cache is left holding
        only this version's entries.
        """
        fresh: JsonCache = {}

        def encode(item: Item) -> str:
            hit = cache.get(id(item)) if cache is not None else None
            if hit is not None and hit[0] is item:
                text = hit[1]
            else:
                # An item of a top-level list is nested two levels deep: its own indented
                # text, four spaces further in (json escapes newlines inside strings, so
                # every newline is layout).
                text = "    " + json.dumps(item.to_dict(), indent=2).replace("\n", "\n    ")
            fresh[id(item)] = (item, text)
            return text

        fields = [
            f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in self._header().items()
        ]
        for key, items in self._sections().items():
            if items:
                body = ",\n".join(encode(item) for item in items)
                fields.append(f"  {json.dumps(key)}: [\n{body}\n  ]")
            else:
                fields.append(f"  {json.dumps(key)}: []")
        if cache is not None:
            cache.clear()
            cache.update(fresh)
        return "{\n" + ",\n".join(fields) + "\n}"

    @classmethod
    def from_dict(cls, data: object, *, source: str) -> State:
        """Parse a decoded state document; anything malformed is a StateError naming source."""
        if not isinstance(data, dict):
            raise StateError(f"{source}: not a reconciler state file (expected a JSON object)")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise StateError(f"{source}: not a reconciler state file (no format_version)")
        if version > FORMAT_VERSION:
            raise StateError(
                f"{source}: state format {version} is newer than this reconciler understands "
                f"({FORMAT_VERSION}); upgrade reconciler. The file was not changed."
            )
        try:
            tokens = [OwnedToken.from_dict(item) for item in data["tokens"]]
            pending = [PendingCreate.from_dict(item) for item in data.get("pending_creates", [])]
            return cls(
                endpoint=str(data["endpoint"]),
                lineage=str(data["lineage"]),
                serial=int(data["serial"]),
                tokens={t.name: t for t in tokens},
                pending={p.name: p for p in pending},
                previous={g.uid: g for g in _previous(data, version)},
            )
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise StateError(
                f"{source}: state file is corrupt ({type(exc).__name__}: {exc}); restore it from "
                f"{source}.backup or your backend's history. The file was not changed."
            ) from None


def _previous(data: dict[str, Any], version: int) -> list[PreviousGeneration]:
    if version >= 2:
        return [PreviousGeneration.from_dict(item) for item in data.get("previous", [])]
    # Format 1's "retired" tokens: old halves of an interrupted replacement whose successor
    # was already recorded; retire them as soon as possible (their successor was proven by
    # the run that recorded it, as far as format 1 knew).
    return [
        PreviousGeneration.of(OwnedToken.from_dict(item), None) for item in data.get("retired", [])
    ]
