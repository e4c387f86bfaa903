"""Where state is kept and how it is locked: one interface, one backend per kind of store."""

from __future__ import annotations

from pathlib import Path

from reconciler.backends.base import StateBackend
from reconciler.backends.local import LocalStateBackend
from reconciler.backends.lockinfo import LockInfo
from reconciler.backends.s3 import S3Location, S3StateBackend
from reconciler.errors import ConfigError

__all__ = [
    "LocalStateBackend",
    "LockInfo",
    "S3Location",
    "S3StateBackend",
    "StateBackend",
    "backend_for",
]


def backend_for(location: str | Path) -> StateBackend:
    """The backend for a state location: a file path, or ``s3://bucket/key`` (with optional
    ``?region=..&endpoint_url=..&kms_key_id=..&sse=..``; boto3 is imported only then)."""
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme == "s3":
            return S3StateBackend(S3Location.parse(text))
        raise ConfigError(
            f"state {text}: {scheme}:// state is not supported; use a file path or s3://BUCKET/KEY"
        )
    return LocalStateBackend(Path(text).expanduser())
