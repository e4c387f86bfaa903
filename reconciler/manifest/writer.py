"""Token specs written as a manifest file: the YAML of each token made by PyYAML's emitter
(never by string formatting, so any description survives), the editor's schema comment
first, a comment above each token, and the result read back as `validate` reads it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler.manifest.schema import TokenEntry
from reconciler.manifest.spec import TokenSpec
from reconciler.manifest.yamllines import load_yaml
from reconciler.util.text import plain
from reconciler.util.times import as_utc, format_duration

SCHEMA_COMMENT = "# yaml-language-server: $schema={}"
# Where manifests/*.yaml find the committed schema (manifests/example.yaml says the same).
DEFAULT_SCHEMA_REF = "../schema/manifest.schema.json"
INDENT = "  "


class UnwritableSpec(ValueError):
    """A spec whose manifest entry would not read back as the same spec."""


@dataclass(frozen=True)
class ManifestEntry:
    """One token of a manifest to write, with the comment lines shown above it."""

    spec: TokenSpec
    comment: Sequence[str] = ()


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes instants as RFC 3339 UTC timestamps (2027-02-28T21:24:30Z),
    plain, as manifests spell them; PyYAML's own form has a space and an offset."""


def _represent_instant(dumper: yaml.SafeDumper, moment: datetime) -> yaml.ScalarNode:
    text = as_utc(moment).isoformat().replace("+00:00", "Z")
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", text)


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # Several lines read best as a literal block; the emitter falls back to quotes where a
    # block cannot carry the text exactly (trailing spaces, special characters).
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(datetime, _represent_instant)
_Dumper.add_representer(str, _represent_text)


def expires_value(spec: TokenSpec) -> object:
    """The ``expires`` a manifest gives to reproduce ``spec``'s expiry exactly: ``never``,
    a duration as spelt, a date for midnight UTC, else the instant to the microsecond."""
    expires = spec.expires
    if expires.kind != "at" or expires.at is None:
        return expires.text()
    moment = as_utc(expires.at)
    if moment.time() == time(0):
        return moment.date()
    return moment.astimezone(timezone.utc)


def entry_data(spec: TokenSpec) -> dict[str, Any]:
    """The manifest keys of ``spec``, in the order people write them; an empty description
    is left out (it is the default)."""
    data: dict[str, Any] = {"name": spec.name}
    if spec.description:
        data["description"] = spec.description
    data["scopes"] = sorted(spec.scopes)
    data["expires"] = expires_value(spec)
    if spec.rotate_before is not None:
        data["rotate_before"] = format_duration(spec.rotate_before)
    if spec.overlap:
        data["overlap"] = format_duration(spec.overlap)
    if spec.deliver_to:
        data["deliver_to"] = list(spec.deliver_to)
    return data


def _dump(data: dict[str, Any], *, allow_unicode: bool) -> str:
    # One list item; flow style for the scope list, as the examples write it. No line
    # width: a long description stays on one line rather than being folded.
    return yaml.dump(
        [data],
        Dumper=_Dumper,
        default_flow_style=None,
        sort_keys=False,
        allow_unicode=allow_unicode,
        width=2**31 - 1,
    )


def _indented(item: str) -> list[str]:
    # Indenting a whole block item keeps it one item: its continuation lines are deeper
    # already, and a quoted scalar ignores leading spaces (checked by _reads_back anyway).
    return [INDENT + line if line else line for line in item.rstrip("\n").split("\n")]


def _reads_back(lines: list[str], spec: TokenSpec) -> bool:
    """Whether ``lines`` (one indented list item), under ``tokens:``, load as the manifest
    loader loads them to ``spec``."""
    value, problems = load_yaml("\n".join(["tokens:", *lines]) + "\n", "<export>")
    if problems or not isinstance(value, dict):
        return False
    items = value.get("tokens")
    if not isinstance(items, list) or len(items) != 1:
        return False
    try:
        entry = TokenEntry.model_validate(items[0])
    except ValidationError:
        return False
    back = entry.to_spec()
    return back == spec and back.deliver_to == spec.deliver_to


def render_entry(spec: TokenSpec) -> list[str]:
    """``spec`` as the lines of one manifest list item under ``tokens:`` (``  - name:
    ...``), checked to read back as ``spec``. Unicode is written as is when that reads
    back, else escaped; UnwritableSpec when neither does (a description YAML cannot carry,
    such as a lone surrogate)."""
    data = entry_data(spec)
    for allow_unicode in (True, False):
        try:
            lines = _indented(_dump(data, allow_unicode=allow_unicode))
            # The file is written as UTF-8: a lone surrogate fails here, not at the write.
            "\n".join(lines).encode("utf-8")
        except (yaml.YAMLError, UnicodeError):
            continue
        if _reads_back(lines, spec):
            return lines
    raise UnwritableSpec(f"token {spec.name}: its description cannot be written as YAML")


def _comment(line: str) -> str:
    # Line breaks and control characters would end the comment and start YAML.
    return f"# {plain(line)}".rstrip()


def render_manifest(
    entries: Sequence[ManifestEntry],
    *,
    schema_ref: str = DEFAULT_SCHEMA_REF,
    header: Sequence[str] = (),
    on_unwritable: Callable[[ManifestEntry], None] | None = None,
) -> str:
    """A manifest file declaring ``entries``: the schema comment, ``header`` as comment
    lines, then ``tokens:`` with each entry under its comment. Every entry is checked to
    read back as its spec (render_entry), so the file passes `validate`; one that does not
    is handed to ``on_unwritable`` and left out, or raises UnwritableSpec without it."""
    lines = [SCHEMA_COMMENT.format(plain(schema_ref))]
    if header:
        lines.append("#")
        lines += [_comment(line) for line in header]
    items: list[list[str]] = []
    for entry in entries:
        try:
            item = render_entry(entry.spec)
        except UnwritableSpec:
            if on_unwritable is None:
                raise
            on_unwritable(entry)
            continue
        items.append([INDENT + _comment(line) for line in entry.comment] + item)
    if not items:
        lines.append("tokens: []")
        return "\n".join(lines) + "\n"
    lines.append("tokens:")
    for index, item in enumerate(items):
        lines += [""] * bool(index) + item
    return "\n".join(lines) + "\n"
