"""Where state is kept and how it is locked: one interface, one backend per kind of store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError
from reconciler.state.backends.base import StateBackend
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.backends.lockinfo import LockInfo

if TYPE_CHECKING:
    from reconciler.state.backends.s3 import S3Location, S3StateBackend

__all__ = [
    "LocalStateBackend",
    "LockInfo",
    "S3Location",
    "S3StateBackend",
    "StateBackend",
    "backend_for",
]


def __getattr__(name: str) -> Any:
    # The S3 module is imported only by runs that use it (its parsing tables and
    # encoder are start-up cost for every other command).
    if name in ("S3Location", "S3StateBackend"):
        from reconciler.state.backends import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend_for(location: str | Path) -> StateBackend:
    """The backend for a state location: a file path, or ``s3://bucket/key`` (with optional
    ``?region=..&endpoint_url=..&kms_key_id=..&sse=..``; boto3 is imported only then)."""
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "s3":
            from reconciler.state.backends.s3 import S3Location, S3StateBackend

            return S3StateBackend(S3Location.parse(text))
        raise ConfigError(
            f"state {text}: {scheme}:// state is not supported; use a file path or s3://BUCKET/KEY"
        )
    return LocalStateBackend(Path(text).expanduser())
