"""Moving state between backends: `state pull`, `state push FILE`, `state migrate --to`.

Lineage and serial travel with the state. A destination that already holds another lineage,
or a newer version of this one, is never overwritten. The callers hold the locks.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from reconciler.errors import ConfigError, StateError
from reconciler.state.backends import StateBackend
from reconciler.state.codec import encode_state, state_from_document
from reconciler.state.model import State
from reconciler.util import atomicfile
from reconciler.util.jsonload import load_json

MIGRATED_SUFFIX = ".migrated"


def state_json(state: State) -> str:
    """The state document exactly as the backends store it."""
    return encode_state(state).decode("utf-8")


def pull(backend: StateBackend) -> str:
    """The current state as JSON."""
    state = backend.read()
    if state is None:
        raise StateError(f"no state at {backend.describe()}; nothing to pull")
    return state_json(state)


def read_state_file(path: str) -> State:
    """A state document from a file, or from stdin when ``path`` is ``-``."""
    source = "stdin" if path == "-" else path
    try:
        if path == "-":
            raw: bytes | None = sys.stdin.buffer.read()
        else:
            raw = atomicfile.read_regular(Path(path))
    except OSError as exc:
        raise StateError(f"{source}: not a readable state file ({exc.strerror})") from None
    if raw is None:
        raise StateError(f"{source}: no such state file")
    try:
        data = load_json(raw)
    except ValueError as exc:
        raise StateError(f"{source}: not a readable state file ({exc})") from None
    return state_from_document(data, source=source)


def _store_as_is(backend: StateBackend, state: State) -> State:
    """Write ``state`` to an empty ``backend`` keeping its serial (write adds one)."""
    return backend.write(replace(state, serial=state.serial - 1))


def push(backend: StateBackend, state: State, source: str) -> str:
    """Upload ``state`` to ``backend`` (locked by the caller)."""
    where = backend.describe()
    current = backend.read()
    if current is None:
        stored = _store_as_is(backend, state)
        return f"Pushed {source} to {where} (lineage {stored.lineage}, serial {stored.serial})."
    if current.lineage != state.lineage:
        raise StateError(
            f"refusing to push {source}: {where} holds another state (lineage "
            f"{current.lineage}, serial {current.serial}; {source} is lineage {state.lineage}). "
            "Nothing was changed"
        )
    if current.serial > state.serial:
        raise StateError(
            f"refusing to push {source}: {where} is newer (serial {current.serial} > "
            f"{state.serial}); `reconciler state pull` it first. Nothing was changed"
        )
    if current.serial == state.serial:
        if current == state:
            return f"{where} already holds this state (serial {state.serial}); nothing to push."
        raise StateError(
            f"refusing to push {source}: {where} has the same serial {state.serial} but other "
            "content, so the two have diverged; nothing was changed"
        )
    stored = backend.write(replace(state, serial=current.serial))
    return (
        f"Pushed {source} (serial {state.serial}) to {where}, replacing serial "
        f"{current.serial}; stored as serial {stored.serial} (lineage {stored.lineage})."
    )


def migrate(source: StateBackend, destination: StateBackend, *, keep_source: bool) -> str:
    """Copy the state of ``source`` to ``destination`` (both locked by the caller), check
    the copy, then retire the source unless ``keep_source``."""
    src, dst = source.describe(), destination.describe()
    if src == dst:
        raise ConfigError(f"--to {dst} is where state already is; nothing to migrate")
    state = source.read()
    if state is None:
        raise StateError(f"no state at {src}; nothing to migrate")
    existing = destination.read()
    if existing is None:
        _store_as_is(destination, state)
    elif existing.lineage != state.lineage:
        raise StateError(
            f"refusing to migrate to {dst}: it holds another state (lineage {existing.lineage}, "
            f"serial {existing.serial}; {src} is lineage {state.lineage}). Nothing was changed"
        )
    elif existing != state:
        raise StateError(
            f"refusing to migrate to {dst}: it holds serial {existing.serial} of this lineage, "
            f"not a copy of serial {state.serial} at {src}; reconcile them with `state pull` "
            "and `state push`. Nothing was changed"
        )
    copied = destination.read()
    if copied != state:
        raise StateError(f"the copy at {dst} does not read back as written; {src} was kept")
    count = len(state.tokens)
    lines = [
        f"Migrated state (lineage {state.lineage}, serial {state.serial}, {count} "
        f"token{'s' if count != 1 else ''}) from {src} to {dst}."
    ]
    if keep_source:
        lines.append(f"{src} was kept as it was; do not use it any more.")
    else:
        lines.append(f"{src} was moved to {source.retire(MIGRATED_SUFFIX)}.")
    lines.append(
        f"Point later runs at the new location: --state {dst}, RECONCILER_STATE, or the "
        "state: section of reconciler.yaml."
    )
    return "\n".join(lines)
