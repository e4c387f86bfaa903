"""The state use cases: list, show, rm, pull, push, migrate and force-unlock, each on the
session's state backend (none of them contacts the API)."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.errors import StateError
from reconciler.session import Session
from reconciler.state.model import OwnedToken, State
from reconciler.state.move import migrate, pull, push, read_state_file


def read_state(session: Session) -> State | None:
    """The stored state as it is (no lock: a reader never blocks a run)."""
    return session.backend.read()


def _owned(state: State | None, name: str, where: str) -> OwnedToken:
    if state is None or name not in state.tokens:
        raise StateError(f"{name} is not in state {where}; see `reconciler state list`")
    return state.tokens[name]


def show_token(session: Session, name: str) -> OwnedToken:
    """The owned token ``name`` as state records it."""
    return _owned(session.backend.read(), name, session.backend.describe())


def forget_token(
    session: Session,
    name: str,
    *,
    confirm: Callable[[str], None] | None = None,
    lock_timeout: float = 0.0,
) -> str:
    """Drop ``name`` from state, leaving its live token alone; ``confirm(question)``
    raises to stop."""
    backend = session.backend
    with backend.lock("state rm", lock_timeout):
        current = backend.read()
        owned = _owned(current, name, backend.describe())
        assert current is not None
        if confirm is not None:
            confirm(f"Forget {name} (the live token stays)?")
        backend.write(current.without_token(name))
    return (
        f"Forgot {name} ({owned.uid}). The live token was not deleted; reconciler no longer "
        "manages it."
    )


def pull_state(session: Session) -> str:
    """The current state as JSON, exactly as stored."""
    return pull(session.backend)


def push_state(session: Session, file: str, *, lock_timeout: float = 0.0) -> str:
    """Upload a state file ('-': stdin) to the session's location; refused when that
    holds another lineage or a higher serial."""
    pushed = read_state_file(file)
    with session.backend.lock("state push", lock_timeout):
        return push(session.backend, pushed, "stdin" if file == "-" else file)


def migrate_state(
    session: Session, destination: str, *, keep_source: bool, lock_timeout: float = 0.0
) -> str:
    """Move state to ``destination``, keeping lineage and serial, with both locked."""
    source = session.backend
    target = session.backend_for(destination)
    with source.lock("state migrate", lock_timeout), target.lock("state migrate", lock_timeout):
        return migrate(source, target, keep_source=keep_source)


def force_unlock(session: Session, lock_id: str) -> str:
    """Release a stale lock, only if ``lock_id`` is the one held."""
    backend = session.backend
    backend.force_unlock(lock_id)
    return f"Released lock {lock_id} on {backend.describe()}."
