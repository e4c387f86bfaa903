"""What `reconciler state list` and `state show` print: owned tokens as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from reconciler.state.model import OwnedToken, State
from reconciler.util.text import plural


def _moment(value: datetime | None, never: str) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else never


def render_state_table(state: State | None) -> str:
    """A table of owned tokens: name, live name (when one differs), uid, scopes, expires;
    then the previous generations still kept, with when each may be retired."""
    if state is None or not state.tokens:
        return "No tokens in state.\n"
    # The live name is a column only when some generation's differs from its manifest name.
    renamed = any(owned.live_name != name for name, owned in state.tokens.items())
    rows: list[tuple[str, ...]] = [
        ("NAME", *(("LIVE NAME",) if renamed else ()), "UID", "SCOPES", "EXPIRES")
    ]
    for name in sorted(state.tokens):
        owned = state.tokens[name]
        scopes = ",".join(sorted(owned.spec.scopes))
        expires = _moment(owned.expired_at, "never")
        live = (owned.live_name,) if renamed else ()
        rows.append((name, *live, owned.uid, scopes, expires))
    lines = _columns(rows)
    if state.previous:
        lines += ["", "Previous generations:"]
        kept = [("NAME", "LIVE NAME", "UID", "RETIRE AFTER")]
        for generation in sorted(state.previous.values(), key=lambda g: (g.name, g.uid)):
            after = _moment(generation.retire_after, "its successor is proven")
            if generation.held:
                after += f" (held: {generation.held})"
            kept.append((generation.name, generation.live_name, generation.uid, after))
        lines += _columns(kept)
    footer = f"{plural(len(state.tokens), 'token')} (serial {state.serial})"
    return "\n".join([*lines, footer]) + "\n"


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def render_owned(owned: OwnedToken) -> str:
    """One owned token as state records it (``state show``)."""
    return json.dumps(owned.to_dict(), indent=2) + "\n"


#: Version of `state list --format json`; fields are only ever added.
STATE_LIST_FORMAT_VERSION = 1


def state_document(state: State | None) -> str:
    """`state list --format json`: the state's header and every section as the state file
    records them (it never holds a secret); ``format_version`` is this document's, and
    ``state_format_version`` the state file's."""
    body: dict[str, object] = {"tokens": []}
    if state is not None:
        body = state.to_dict()
        body["state_format_version"] = body.pop("format_version")
    return json.dumps({"format_version": STATE_LIST_FORMAT_VERSION, **body}, indent=2) + "\n"
