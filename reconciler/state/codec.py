"""The state document's file form: one encoder, one strict decoder, migrations on read.

Every backend and ``state pull`` store the same bytes: ``json.dumps(state.to_dict(),
indent=2) + "\\n"``, built here (``StateEncoder``) and nowhere else.

Reading is as strict as manifests are: the document is checked against the shape of its
``format_version`` (pydantic strict models: no coercion, no unknown keys, names and scopes
as the manifests allow them) and anything else is one StateError line naming the file and
what is wrong; the file itself is never touched. A document of an older format version is
migrated step by step (``MIGRATIONS``) before it is checked, so adding a version means one
new model and one function from the previous version's dict to the new one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from reconciler.errors import StateError
from reconciler.manifest.spec import NAME_PATTERN, SCOPES, Expiry, TokenSpec
from reconciler.state.model import (
    FORMAT_VERSION,
    OwnedToken,
    PendingCreate,
    PreviousGeneration,
    State,
)
from reconciler.util.jsonload import load_json
from reconciler.util.times import as_utc, parse_duration

# -- encoding ----------------------------------------------------------------------------


class _Item(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class StateEncoder:
    """``json.dumps(state.to_dict(), indent=2) + "\\n"``, byte for byte, built faster.

    apply writes the state after every API call; encoding every unchanged token again
    each time (json's indenting encoder is pure Python) made an apply of N creates cost
    O(N^2) CPU. Tokens are immutable and shared between versions, so an encoder kept
    across writes encodes each token once. The cache is keyed by id() and keeps the item
    itself, so an id cannot be reused by another object while its entry exists; after
    each call it holds only that version's entries."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[_Item, str]] = {}

    def encode(self, state: State) -> bytes:
        fresh: dict[int, tuple[_Item, str]] = {}

        def item_text(item: _Item) -> str:
            hit = self._cache.get(id(item))
            if hit is not None and hit[0] is item:
                text = hit[1]
            else:
                # An item of a top-level list is nested two levels deep: its own indented
                # text, four spaces further in (json escapes newlines inside strings, so
                # every newline is layout).
                text = "    " + json.dumps(item.to_dict(), indent=2).replace("\n", "\n    ")
            fresh[id(item)] = (item, text)
            return text

        header = state.header().items()
        fields = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in header]
        for key, items in state.sections().items():
            if items:
                body = ",\n".join(item_text(item) for item in items)
                fields.append(f"  {json.dumps(key)}: [\n{body}\n  ]")
            else:
                fields.append(f"  {json.dumps(key)}: []")
        self._cache = fresh
        return ("{\n" + ",\n".join(fields) + "\n}\n").encode("utf-8")


def encode_state(state: State) -> bytes:
    """The stored form of ``state`` (for one-off writes; apply keeps a StateEncoder)."""
    return StateEncoder().encode(state)


# -- the strict shape of the state document ------------------------------------------------


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("not a valid token name")
    return value


def _scope(value: str) -> str:
    if value not in SCOPES:
        raise ValueError(f"unknown scope (known: {', '.join(SCOPES)})")
    return value


# Parsed once per distinct spelling: a state of thousands of tokens repeats a handful of
# them, and both results are immutable.
_expiry = functools.lru_cache(maxsize=1024)(Expiry.parse)
_parse_duration = functools.lru_cache(maxsize=1024)(parse_duration)


def _expires(value: str) -> str:
    _expiry(value)
    return value


def _duration(value: str) -> str:
    _parse_duration(value)
    return value


def _moment(value: object) -> object:
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except (ValueError, OverflowError):
            raise ValueError("not an ISO 8601 time") from None
    return value  # the strict datetime check then names the wrong type


Name = Annotated[str, AfterValidator(_name)]
Scope = Annotated[str, AfterValidator(_scope)]
Moment = Annotated[datetime, BeforeValidator(_moment)]
Text = Annotated[str, Field(max_length=4096)]
Id = Annotated[str, Field(min_length=1, max_length=256)]
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


class _SpecV1(BaseModel):
    model_config = _STRICT
    name: Name
    description: Text = ""
    scopes: Annotated[list[Scope], Field(max_length=len(SCOPES))]
    expires: Annotated[str, AfterValidator(_expires)] = "never"
    rotate_before: Annotated[str, AfterValidator(_duration)] | None = None

    def to_spec(self) -> TokenSpec:
        return TokenSpec(
            name=self.name,
            description=self.description,
            scopes=frozenset(self.scopes),
            expires=_expiry(self.expires),
            rotate_before=_parse_duration(self.rotate_before) if self.rotate_before else None,
        )


# -- format version 2: live names, proofs, previous generations -------------------------


def _zero_or_duration(value: str) -> str:
    parse_duration(value, allow_zero=True)
    return value


class _SpecV2(_SpecV1):
    overlap: Annotated[str, AfterValidator(_zero_or_duration)] = "0s"

    def to_spec(self) -> TokenSpec:
        spec = super().to_spec()
        return dataclasses.replace(spec, overlap=parse_duration(self.overlap, allow_zero=True))


class _OwnedV2(BaseModel):
    model_config = _STRICT
    name: Name
    live_name: Name
    uid: Id
    spec: _SpecV2
    created_at: Moment | None = None
    expired_at: Moment | None = None
    proven: bool = True

    def to_owned(self) -> OwnedToken:
        if self.spec.name != self.name:
            raise ValueError(f"token {self.name} records the spec of {self.spec.name}")
        return OwnedToken(
            self.name,
            self.uid,
            self.spec.to_spec(),
            self.created_at,
            self.expired_at,
            live_name=self.live_name,
            proven=self.proven,
        )


class _PendingV2(BaseModel):
    model_config = _STRICT
    name: Name
    live_name: Name | None = None  # the manifest name when absent
    started_at: Moment


class _PreviousV2(BaseModel):
    model_config = _STRICT
    name: Name
    live_name: Name
    uid: Id
    created_at: Moment | None = None
    expired_at: Moment | None = None
    retire_after: Moment | None = None
    held: Text | None = None

    def to_previous(self) -> PreviousGeneration:
        return PreviousGeneration(**self.model_dump())


class _StateV2(BaseModel):
    model_config = _STRICT
    format_version: int
    serial: Annotated[int, Field(ge=0, lt=2**63)]
    lineage: Id
    endpoint: Text
    tokens: list[_OwnedV2]
    pending_creates: list[_PendingV2] = []
    previous: list[_PreviousV2] = []

    def to_state(self) -> State:
        tokens = _unique([t.to_owned() for t in self.tokens], lambda t: t.name, "tokens")
        previous = [g.to_previous() for g in self.previous]
        pending = [
            PendingCreate(p.name, p.started_at, p.live_name or p.name) for p in self.pending_creates
        ]
        return State(
            endpoint=self.endpoint,
            lineage=self.lineage,
            serial=self.serial,
            tokens=tokens,
            pending=_unique(pending, lambda p: p.name, "pending_creates"),
            previous=_unique(previous, lambda g: g.uid, "previous"),
        )


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 had no live names (every token had its manifest name), no proofs (its
    tokens were in use) and kept the old half of an interrupted replacement in "retired":
    a previous generation to retire as soon as possible."""

    def owned(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return {**item, "live_name": item.get("name"), "proven": True}

    def previous(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        keys = ("name", "uid", "created_at", "expired_at")
        return {**{k: item.get(k) for k in keys}, "live_name": item.get("name")}

    def pending(item: Any) -> Any:
        return {**item, "live_name": item.get("name")} if isinstance(item, dict) else item

    out = {k: v for k, v in data.items() if k != "retired"}
    out["format_version"] = 2
    if isinstance(data.get("tokens"), list):
        out["tokens"] = [owned(t) for t in data["tokens"]]
    if isinstance(data.get("pending_creates"), list):
        out["pending_creates"] = [pending(p) for p in data["pending_creates"]]
    retired = data.get("retired", [])
    out["previous"] = [previous(t) for t in retired] if isinstance(retired, list) else retired
    return out


def _unique(items: list[Any], key: Callable[[Any], str], section: str) -> dict[str, Any]:
    keyed: dict[str, Any] = {}
    for item in items:
        if key(item) in keyed:
            raise ValueError(f"{section}: {key(item)} appears twice")
        keyed[key(item)] = item
    return keyed


#: The shape of the current format version (older versions are migrated to it first).
_MODELS: dict[int, type[_StateV2]] = {2: _StateV2}
#: format_version N -> a function turning a version-N document into a version-N+1 one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}

# -- decoding ----------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


def _problem(exc: PydanticValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    more = exc.error_count() - 1
    return f"{_where(tuple(first['loc']))}: {message}" + (f"; {more} more" if more > 0 else "")


def _version(data: object, source: str) -> int:
    if not isinstance(data, dict):
        raise StateError(f"{source}: not a reconciler state file (expected a JSON object)")
    version = data.get("format_version")
    if type(version) is not int:
        raise StateError(
            f"{source}: not a reconciler state file (format_version must be a whole number, "
            f"1 to {FORMAT_VERSION}). The file was not changed."
        )
    if version > FORMAT_VERSION:
        raise StateError(
            f"{source}: state format {version} is newer than this reconciler understands "
            f"({FORMAT_VERSION}); upgrade reconciler. The file was not changed."
        )
    if version < 1:
        raise StateError(
            f"{source}: format_version {version} is not a state format (1 to "
            f"{FORMAT_VERSION}). The file was not changed."
        )
    return version


def decode_state(raw: bytes, *, source: str, restore: str = "") -> State:
    """Parse stored state bytes. Anything malformed is a one-line StateError naming
    ``source``; ``restore`` says where an intact copy may be (e.g. the backup)."""
    hint = f" {restore}" if restore else ""
    try:
        data = load_json(raw)
    except ValueError as exc:
        raise StateError(
            f"{source}: state file is not valid JSON ({exc}); the file was not changed.{hint}"
        ) from None
    return state_from_document(data, source=source, restore=restore)


def state_from_document(data: object, *, source: str, restore: str = "") -> State:
    """Check a decoded state document (migrating older versions) and build the State."""
    version = _version(data, source)
    assert isinstance(data, dict)
    while version < FORMAT_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    try:
        return _MODELS[FORMAT_VERSION].model_validate(data).to_state()
    except (PydanticValidationError, ValueError) as exc:
        problem = _problem(exc) if isinstance(exc, PydanticValidationError) else str(exc)
        hint = f" {restore}" if restore else ""
        raise StateError(
            f"{source}: state file is corrupt ({problem}); the file was not changed.{hint}"
        ) from None
