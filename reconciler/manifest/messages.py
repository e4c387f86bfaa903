"""The messages of manifest problems: each pydantic error turned into a sentence at its
file and line, with the fix (a suggested key, name or scope)."""

from __future__ import annotations

import difflib
import re
from typing import Any

from reconciler.errors import Problem
from reconciler.manifest.schema import FILE_KEYS, MAX_MANIFEST_NAME, SCOPE_LIST, TOKEN_KEYS
from reconciler.manifest.spec import NAME_PATTERN, NAME_RULE
from reconciler.manifest.yamllines import YList, YMap, kind_of
from reconciler.util.text import clip, quotable


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


def closest_key(key: str, top_level: bool) -> list[str]:
    """The valid key a misspelt one most likely meant (empty when nothing is close)."""
    return difflib.get_close_matches(key, FILE_KEYS if top_level else TOKEN_KEYS, 1, 0.6)


def _suggest_name(name: str) -> str | None:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    text = re.sub(r"-+", "-", text).lstrip("-0123456789")[:63].rstrip("-")
    return text if text and NAME_PATTERN.match(text) else None


def problem_for(error: Any, root: Any, display: str) -> Problem:
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
        valid = FILE_KEYS if top_level else TOKEN_KEYS
        close = closest_key(str(loc[-1]), top_level)
        fix = f"did you mean {close[0]!r}?" if close else "remove it;"
        return f"unknown key {clip(loc[-1])}: {fix} valid keys are {', '.join(valid)}"
    elif kind == "missing":
        if top_level:
            return (
                "missing the `tokens:` key: a manifest is a mapping with one key, `tokens:`, "
                "holding a list of tokens"
            )
        elif field_name == "scopes":
            return f"missing `scopes:`: add one or more of {SCOPE_LIST}, such as scopes: [api]"
        else:
            return f"missing `{field_name}:`: add it, such as name: my-token"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            return (
                f"the file must be a mapping with one key, `tokens:`, not {kind_of(value)}: "
                "start it with `tokens:` followed by a list of tokens"
            )
        else:
            return (
                f"each item of `tokens:` must be a mapping, not {kind_of(value)}: write it as "
                "`- name: my-token` with `scopes: [api]` on the next line"
            )
    elif kind == "string_type":
        if isinstance(loc[-1], int):
            return f"a scope must be a string, not {kind_of(value)}: use one of {SCOPE_LIST}"
        elif value is None:
            return f"{field_name} is empty: give it a value or remove the key"
        else:
            quoted = quotable(value)
            example = f', such as {field_name}: "{quoted}"' if quoted is not None else ""
            return f"{field_name} must be a string, not {kind_of(value)}: quote it{example}"
    elif kind == "list_type":
        plain = quotable(value) if isinstance(value, str) else None
        example = f"[{plain}]" if plain is not None else "[api]"
        if field_name == "tokens":
            example = "followed by lines starting with `- name:`"
        return f"{field_name} must be a list, not {kind_of(value)}: write {field_name}: {example}"
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
            f"(valid scopes are {SCOPE_LIST})"
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
