"""Where state is kept and how it is locked: one interface, one backend per kind of store."""

from __future__ import annotations

from pathlib import Path

from reconciler.backends.base import StateBackend
from reconciler.backends.local import LocalStateBackend
from reconciler.backends.lockinfo import LockInfo
from reconciler.errors import ConfigError

__all__ = ["LocalStateBackend", "LockInfo", "StateBackend", "backend_for"]


def backend_for(location: str | Path) -> StateBackend:
    """The backend for a ``--state`` value: a file path today; URLs are reserved."""
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigError(f"--state {text}: {scheme}:// state is not supported; use a file path")
    return LocalStateBackend(Path(text).expanduser())
