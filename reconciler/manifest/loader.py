"""Load and validate YAML token manifests into TokenSpecs, reporting every problem by line."""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)

from reconciler.errors import ManifestError, Problem
from reconciler.manifest.spec import (
    MAX_DESCRIPTION,
    NAME_PATTERN,
    NAME_RULE,
    SCOPES,
    Expiry,
    TokenSpec,
)
from reconciler.manifest.yamllines import YList, YMap, load_yaml
from reconciler.util.text import clip, quotable
from reconciler.util.times import format_duration, parse_duration

# Real manifests are a few KiB; the cap keeps a stray or hostile file from eating memory.
MAX_FILE_BYTES = 10 * 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SCOPE_LIST = ", ".join(SCOPES)
# DNS-1035 allows 63; a new generation made while the old one lives is named NAME-N.
MAX_MANIFEST_NAME = 60
_EXPIRES_FORMS = (
    "never, a duration (12h, 90d, 2w), a date (2027-01-31) or an ISO datetime "
    "(2027-01-31T12:00:00Z; UTC when no zone)"
)


def _check_scope(value: str) -> str:
    if value not in SCOPES:
        close = difflib.get_close_matches(value.lower(), SCOPES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown scope {clip(value)}: {hint}valid scopes are {_SCOPE_LIST}")
    return value


def _parse_expires(value: object) -> Expiry:
    if isinstance(value, bool):
        # YAML 1.1 reads `no`/`off` as false; Expiry.parse would only say "not bool".
        raise ValueError(f"expires must be {_EXPIRES_FORMS}, not a boolean ({value})")
    return Expiry.parse(value)


def _parse_rotate_before(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"rotate_before must be a duration such as 12h, 14d or 2w, not {_kind(value)}"
        )
    return parse_duration(value)


def _parse_overlap(value: object) -> timedelta:
    if not isinstance(value, str):
        raise ValueError(
            f"overlap must be a duration such as 0s, 30m, 12h or 1d, not {_kind(value)}"
        )
    return parse_duration(value, allow_zero=True)


def _check_destination(value: str) -> str:
    # Parsing talks to no store and imports no client: a typo fails validate, offline.
    from reconciler.destinations.parse import parse_destination
    from reconciler.errors import DestinationSyntaxError

    try:
        parse_destination(value)
    except DestinationSyntaxError as exc:
        raise ValueError(f"deliver_to: {exc}") from None
    return value


DestinationText = Annotated[
    str,
    AfterValidator(_check_destination),
    WithJsonSchema({"type": "string", "minLength": 1}),
]

Scope = Annotated[
    str,
    AfterValidator(_check_scope),
    WithJsonSchema({"type": "string", "enum": list(SCOPES)}),
]

# Looser than the parser (unit order is not checked), which says what is wrong.
_DURATION_SCHEMA = {"type": "string", "pattern": r"^\s*(\d+[wdhms])+\s*$"}

ExpiresField = Annotated[
    Expiry,
    PlainValidator(_parse_expires),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": "never"},
                _DURATION_SCHEMA,
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
                {"type": "null"},
            ],
            "default": "never",
        }
    ),
]

RotateBeforeField = Annotated[
    timedelta | None,
    PlainValidator(_parse_rotate_before),
    WithJsonSchema({"anyOf": [_DURATION_SCHEMA, {"type": "null"}], "default": None}),
]


OverlapField = Annotated[
    timedelta,
    PlainValidator(_parse_overlap),
    WithJsonSchema({**_DURATION_SCHEMA, "default": "0s"}),
]


class TokenEntry(BaseModel):
    """One `tokens:` item as written in a manifest."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="Token")

    name: str = Field(
        pattern=NAME_PATTERN.pattern,
        max_length=MAX_MANIFEST_NAME,
        description=(
            f"Unique name of the token across all manifests: {NAME_RULE}; in a manifest at "
            f"most {MAX_MANIFEST_NAME}, leaving room for the -N suffix of a later generation."
        ),
    )
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION, description="Free text shown in BentoCloud."
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description=(
            "What the token may do; order and duplicates do not matter. "
            f"One or more of: {_SCOPE_LIST}."
        ),
    )
    expires: ExpiresField = Field(
        default_factory=Expiry.never,
        description=(
            f"When the token expires: {_EXPIRES_FORMS}. A duration is a policy: new tokens "
            "get now + duration."
        ),
    )
    overlap: OverlapField = Field(
        default_factory=lambda: parse_duration("0s", allow_zero=True),
        description=(
            "How long the previous generation stays valid after a replacement delivered its "
            "successor's value (0s, 30m, 12h, 1d): consumers have that long to switch."
        ),
    )
    rotate_before: RotateBeforeField = Field(
        default=None,
        description=(
            "Replace the token when less than this duration (12h, 14d, 2w) remains before "
            "it expires. Needs expires."
        ),
    )
    deliver_to: list[DestinationText] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Where this token's new values go, replacing the run's --secrets-out / secrets: "
            "list: vault://MOUNT/PATH, aws-sm://PATH, exec:COMMAND or a file path."
        ),
    )

    def to_spec(self) -> TokenSpec:
        return TokenSpec(
            name=self.name,
            description=self.description,
            scopes=frozenset(self.scopes),
            expires=self.expires,
            rotate_before=self.rotate_before,
            overlap=self.overlap,
            deliver_to=tuple(self.deliver_to or ()),
        )


class ManifestFile(BaseModel):
    """A whole manifest file: a mapping with one key, `tokens`."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="reconciler manifest",
        json_schema_extra={
            "description": "BentoCloud API tokens declared for reconciler (one file of many)."
        },
    )

    tokens: list[TokenEntry] | None = Field(
        description="The tokens this file declares (names are unique across all files).",
    )


_TOKEN_KEYS = tuple(TokenEntry.model_fields)
_FILE_KEYS = tuple(ManifestFile.model_fields)


@dataclass(frozen=True)
class Manifests:
    """Everything the manifests declare, plus what is needed to tell whether they changed."""

    tokens: dict[str, TokenSpec] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    digest: str = hashlib.sha256().hexdigest()
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)


def past_expiries(manifests: Manifests, now: datetime) -> list[str]:
    """A warning per token whose fixed expiry date has passed: apply would refuse to make
    it, but a date going by must not start failing unrelated pull requests."""
    warnings = []
    for name, spec in sorted(manifests.tokens.items()):
        at = spec.expires.at
        if spec.expires.kind != "at" or at is None or at > now:
            continue
        file, line = manifests.locations.get(name, ("manifests", 0))
        warnings.append(
            f"Warning: {file}:{line}: token {name}: expires {spec.expires.text()} is in the "
            "past; plan will refuse to create or replace it until you set a later date or a "
            "duration such as 90d"
        )
    return warnings


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest file, generated from the validating models."""
    schema = ManifestFile.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def render_json_schema() -> str:
    """manifest_json_schema() as the exact text of schema/manifest.schema.json."""
    return json.dumps(manifest_json_schema(), indent=2) + "\n"


def load_manifests(paths: Sequence[str | Path]) -> Manifests:
    """Read manifest files and directories (recursively, *.yaml/*.yml, sorted).

    Raises ManifestError listing every problem in every file; returns the tokens sorted by
    name otherwise. Hidden files and directories inside a directory are skipped.
    """
    problems: list[Problem] = []
    files = _collect_files(paths, problems)
    digest = hashlib.sha256()
    entries: list[tuple[str, int, YMap, TokenEntry | None]] = []
    for display, path in files:
        data = _read(path, display, problems)
        if data is None:
            continue
        encoded = display.encode("utf-8", "surrogateescape")
        # Length prefixes keep (path, bytes) pairs from running into each other.
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
        text = _decode(data, display, problems)
        if text is None:
            continue
        root, found = load_yaml(text, display)
        problems.extend(found)
        if found and root is None:
            continue
        entries.extend(_validate(root, display, problems))

    first: dict[str, tuple[str, int]] = {}
    for display, line, raw, _entry in entries:
        name = raw.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            where = first[name]
            problems.append(
                Problem(
                    display,
                    line,
                    f"duplicate token name {clip(name)}, also declared at {where[0]}:{where[1]}: "
                    "names are unique across all manifests; rename or remove one",
                )
            )
        else:
            first[name] = (display, line)

    if problems:
        order = {display: index for index, (display, _path) in enumerate(files)}
        problems.sort(key=lambda p: (order.get(p.file, -1), p.line or 0))
        raise ManifestError(problems)

    specs = sorted(
        (entry.to_spec() for _d, _l, _r, entry in entries if entry is not None),
        key=lambda spec: spec.name,
    )
    return Manifests(
        tokens={spec.name: spec for spec in specs},
        files=[path for _display, path in files],
        digest=digest.hexdigest(),
        locations={name: first[name] for name in sorted(first)},
    )


def _collect_files(paths: Sequence[str | Path], problems: list[Problem]) -> list[tuple[str, Path]]:
    """(display name, path) of every manifest file, each read once, in a stable order."""
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = _walk(path, problems)
        elif path.is_file():
            candidates = [path]
        elif not path.exists():
            problems.append(Problem(str(path), None, "no such file or directory: check the path"))
            continue
        else:
            problems.append(
                Problem(str(path), None, "not a regular file or directory: pass a manifest")
            )
            continue
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append((str(candidate), candidate))
    return found


def _walk(root: Path, problems: list[Problem]) -> list[Path]:
    """Manifest files under root, sorted by relative path; symlinked dirs are not followed,
    and a symlinked file only when it points to a manifest inside root."""
    hits: list[tuple[tuple[str, ...], Path]] = []
    inside = root.resolve()
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        # Dot-directories (.git, .github) hold YAML that is not ours.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(current)
        for name in filenames:
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                continue
            path = base / name
            if path.is_symlink() and not _points_inside(path, inside):
                # Never read, never quoted: the target may be /etc/shadow or .git/config.
                problems.append(
                    Problem(
                        str(path),
                        None,
                        "a symbolic link to a file outside the manifests folder (or to a "
                        "hidden file): replace it with the manifest itself",
                    )
                )
                continue
            if path.is_file():
                hits.append((path.relative_to(root).parts, path))
    return [path for _parts, path in sorted(hits)]


def _points_inside(link: Path, root: Path) -> bool:
    """Whether a symlink resolves to a path under ``root`` (itself resolved) that the walk
    would have read: no hidden file or directory on the way."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return True  # dangling or a loop: is_file() is False and the walk skips it
    try:
        parts = target.relative_to(root).parts
    except ValueError:
        return False
    return not any(part.startswith(".") for part in parts)


def _read(path: Path, display: str, problems: list[Problem]) -> bytes | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(
            Problem(display, None, f"cannot read the file ({exc.strerror}): check its permissions")
        )
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(
            Problem(
                display,
                None,
                f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: split it into "
                "several manifest files",
            )
        )
        return None
    return data


def _decode(data: bytes, display: str, problems: list[Problem]) -> str | None:
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        problems.append(
            Problem(
                display,
                line,
                f"not UTF-8 text (byte 0x{body[exc.start]:02x}): save the file as UTF-8",
            )
        )
        return None


def _validate(
    root: Any, display: str, problems: list[Problem]
) -> list[tuple[str, int, YMap, TokenEntry | None]]:
    """Validate one file's tokens; returns (file, line, raw entry, model or None) per token."""
    if root is None:
        return []
    model: ManifestFile | None = None
    try:
        model = ManifestFile.model_validate(root)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A misspelt required key (`scope:`) is one mistake: the unknown-key message already
        # suggests the right spelling, so the "missing" error for it would only be noise.
        suggested = {
            (*error["loc"][:-1], hint)
            for error in errors
            if error["type"] == "extra_forbidden"
            for hint in _closest_key(str(error["loc"][-1]), len(error["loc"]) <= 1)
        }
        for error in errors:
            if error["type"] == "missing" and tuple(error["loc"]) in suggested:
                continue
            problems.append(_problem_for(error, root, display))
    except RecursionError:
        problems.append(Problem(display, None, "document is nested too deeply: flatten it"))
        return []
    raw_tokens = root.get("tokens") if isinstance(root, YMap) else None
    if not isinstance(raw_tokens, YList):
        return []
    models = model.tokens if model is not None and model.tokens is not None else None
    out: list[tuple[str, int, YMap, TokenEntry | None]] = []
    for index, raw in enumerate(raw_tokens):
        if not isinstance(raw, YMap):
            continue
        line = raw_tokens.item_lines[index]
        entry = models[index] if models is not None else None
        _cross_check(raw, entry, display, problems)
        out.append((display, line, raw, entry))
    return out


def _cross_check(
    raw: YMap, entry: TokenEntry | None, display: str, problems: list[Problem]
) -> None:
    """Rules that involve two keys; checked on the raw entry when the file has other errors,
    so these show up in the same run."""
    rotate_raw = raw.get("rotate_before")
    if rotate_raw is None:
        return
    try:
        expires = entry.expires if entry is not None else _parse_expires(raw.get("expires"))
        rotate = entry.rotate_before if entry is not None else _parse_rotate_before(rotate_raw)
    except ValueError:
        return
    line = raw.key_lines["rotate_before"]
    name = raw.get("name")
    where = f"token {clip(name)}: " if isinstance(name, str) else ""
    if expires.kind == "never":
        problems.append(
            Problem(
                display,
                line,
                f"{where}rotate_before needs expires: a token that never expires is never rotated; "
                "add `expires:` (such as expires: 90d) or remove rotate_before",
            )
        )
        return
    if expires.duration is not None and rotate is not None and rotate >= expires.duration:
        problems.append(
            Problem(
                display,
                line,
                f"{where}rotate_before ({format_duration(rotate)}) must be shorter than expires "
                f"({format_duration(expires.duration)}), or every new token would be due for "
                "rotation at once: shorten rotate_before or lengthen expires",
            )
        )


def _locate(root: Any, loc: tuple[int | str, ...]) -> int:
    """The line of the deepest key or item on loc's path that exists in the YAML."""
    node = root
    line: int = getattr(root, "line", 1)
    for part in loc:
        if isinstance(node, YMap) and isinstance(part, str) and part in node:
            line = node.key_lines[part]
            node = node[part]
        elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


def _closest_key(key: str, top_level: bool) -> list[str]:
    """The valid key a misspelt one most likely meant (empty when nothing is close)."""
    return difflib.get_close_matches(key, _FILE_KEYS if top_level else _TOKEN_KEYS, 1, 0.6)


def _kind(value: object) -> str:
    """How YAML users would name the type of a value."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({quotable(value) or clip(value)})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({quotable(value) or clip(value)})"


def _suggest_name(name: str) -> str | None:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    text = re.sub(r"-+", "-", text).lstrip("-0123456789")[:63].rstrip("-")
    return text if text and NAME_PATTERN.match(text) else None


def _problem_for(error: Any, root: Any, display: str) -> Problem:
    """Turn one pydantic error into a Problem at the offending line, with a fix."""
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind: str = error["type"]
    value = error.get("input")
    field_name = next((str(part) for part in reversed(loc) if isinstance(part, str)), "value")
    message = _shape_message(kind, loc, value, field_name)
    if message is None:
        message = _value_message(error, kind, value, field_name)
    return Problem(display, _locate(root, loc), _token_prefix(root, loc) + message)


def _token_prefix(root: Any, loc: tuple[int | str, ...]) -> str:
    """'token NAME: ' when the problem is inside a named token (and not its name)."""
    if len(loc) >= 2 and loc[0] == "tokens" and isinstance(loc[1], int):
        raw_tokens = root.get("tokens") if isinstance(root, YMap) else None
        if isinstance(raw_tokens, YList) and loc[1] < len(raw_tokens):
            entry = raw_tokens[loc[1]]
            name_ok = loc[2:] != ("name",)
            if name_ok and isinstance(entry, YMap) and isinstance(entry.get("name"), str):
                return f"token {clip(entry['name'])}: "
    return ""


def _shape_message(
    kind: str, loc: tuple[int | str, ...], value: Any, field_name: str
) -> str | None:
    """The message for a key or value of the wrong kind, or None for other errors."""
    top_level = len(loc) <= 1
    if kind == "extra_forbidden":
        valid = _FILE_KEYS if top_level else _TOKEN_KEYS
        close = _closest_key(str(loc[-1]), top_level)
        fix = f"did you mean {close[0]!r}?" if close else "remove it;"
        return f"unknown key {clip(loc[-1])}: {fix} valid keys are {', '.join(valid)}"
    elif kind == "missing":
        if top_level:
            return (
                "missing the `tokens:` key: a manifest is a mapping with one key, `tokens:`, "
                "holding a list of tokens"
            )
        elif field_name == "scopes":
            return f"missing `scopes:`: add one or more of {_SCOPE_LIST}, such as scopes: [api]"
        else:
            return f"missing `{field_name}:`: add it, such as name: my-token"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            return (
                f"the file must be a mapping with one key, `tokens:`, not {_kind(value)}: "
                "start it with `tokens:` followed by a list of tokens"
            )
        else:
            return (
                f"each item of `tokens:` must be a mapping, not {_kind(value)}: write it as "
                "`- name: my-token` with `scopes: [api]` on the next line"
            )
    elif kind == "string_type":
        if isinstance(loc[-1], int):
            return f"a scope must be a string, not {_kind(value)}: use one of {_SCOPE_LIST}"
        elif value is None:
            return f"{field_name} is empty: give it a value or remove the key"
        else:
            quoted = quotable(value)
            example = f', such as {field_name}: "{quoted}"' if quoted is not None else ""
            return f"{field_name} must be a string, not {_kind(value)}: quote it{example}"
    elif kind == "list_type":
        plain = quotable(value) if isinstance(value, str) else None
        example = f"[{plain}]" if plain is not None else "[api]"
        if field_name == "tokens":
            example = "followed by lines starting with `- name:`"
        return f"{field_name} must be a list, not {_kind(value)}: write {field_name}: {example}"
    return None


def _value_message(error: Any, kind: str, value: Any, field_name: str) -> str:
    """The message for a value of the right kind that breaks a rule."""
    if kind == "too_short" and field_name == "deliver_to":
        return (
            "deliver_to is empty: list one or more destinations (such as deliver_to: "
            '["vault://secret/bentocloud"]), or remove it to use the run\'s --secrets-out'
        )
    elif kind == "too_short" and field_name == "scopes":
        return (
            f"scopes is empty: a token needs at least one scope, such as scopes: [api] "
            f"(valid scopes are {_SCOPE_LIST})"
        )
    elif kind == "string_pattern_mismatch" and field_name == "name":
        suggestion = _suggest_name(str(value))
        hint = f"; such as {suggestion!r}" if suggestion else ""
        return f"invalid name {clip(value)}: a name must be {NAME_RULE}{hint}"
    elif kind == "string_too_long" and field_name == "name":
        return (
            f"invalid name {clip(value)}: a manifest name is at most {MAX_MANIFEST_NAME} "
            "characters, so that the -N suffix a new generation may need still fits a "
            "DNS-1035 label (at most 63 characters); shorten it"
        )
    elif kind == "value_error":
        return str(error["ctx"]["error"])
    return f"{field_name}: {error['msg']}"
