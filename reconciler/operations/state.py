"""The state use cases: list, show, rm, pull, push, migrate and force-unlock."""

from __future__ import annotations

from reconciler.state.backends import StateBackend
from reconciler.state.model import State
from reconciler.state.render import _require


def remove_owned(backend: StateBackend, state: State | None, name: str) -> str:
    current = _require(state, name, backend.describe())
    owned = current.tokens[name]
    backend.write(current.without_token(name))
    return (
        f"Forgot {name} ({owned.uid}). The live token was not deleted; reconciler no longer "
        "manages it."
    )
