"""Load and validate YAML token manifests into TokenSpecs, reporting every problem by line."""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from reconciler.errors import ManifestError, Problem
from reconciler.manifest.messages import closest_key, problem_for
from reconciler.manifest.schema import (
    ManifestFile,
    TokenEntry,
    parse_expires,
    parse_rotate_before,
)
from reconciler.manifest.spec import (
    TokenSpec,
)
from reconciler.manifest.yamllines import YList, YMap, load_yaml
from reconciler.util.text import clip
from reconciler.util.times import format_duration

# Real manifests are a few KiB; the cap keeps a stray or hostile file from eating memory.
MAX_FILE_BYTES = 10 * 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml")


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
            for hint in closest_key(str(error["loc"][-1]), len(error["loc"]) <= 1)
        }
        for error in errors:
            if error["type"] == "missing" and tuple(error["loc"]) in suggested:
                continue
            problems.append(problem_for(error, root, display))
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
        expires = entry.expires if entry is not None else parse_expires(raw.get("expires"))
        rotate = entry.rotate_before if entry is not None else parse_rotate_before(rotate_raw)
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
