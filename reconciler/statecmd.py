"""`reconciler state ...`: render and edit the owned-token list."""

from __future__ import annotations

import json

from reconciler.backends import StateBackend
from reconciler.errors import StateError
from reconciler.state import State


def render_state_table(state: State | None) -> str:
    """A table of owned tokens: name, uid, scopes, expires."""
    if state is None or not state.tokens:
        return "No tokens in state.\n"
    rows = [("NAME", "UID", "SCOPES", "EXPIRES")]
    for name in sorted(state.tokens):
        owned = state.tokens[name]
        expires = owned.expired_at.strftime("%Y-%m-%d %H:%M UTC") if owned.expired_at else "never"
        rows.append((name, owned.uid, ",".join(sorted(owned.spec.scopes)), expires))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    footer = (
        f"{len(state.tokens)} token{'s' if len(state.tokens) != 1 else ''} (serial {state.serial})"
    )
    return "\n".join([*lines, footer]) + "\n"


def _require(state: State | None, name: str, where: str) -> State:
    if state is None or name not in state.tokens:
        raise StateError(f"{name} is not in state {where}; see `reconciler state list`")
    return state


def show_owned(state: State | None, name: str, where: str) -> str:
    owned = _require(state, name, where).tokens[name]
    return json.dumps(owned.to_dict(), indent=2) + "\n"


def remove_owned(backend: StateBackend, state: State | None, name: str) -> str:
    current = _require(state, name, backend.describe())
    owned = current.tokens[name]
    backend.write(current.without_token(name))
    return (
        f"Forgot {name} ({owned.uid}). The live token was not deleted; reconciler no longer "
        "manages it."
    )
