"""Who holds a state lock (LockInfo), serialisable and described for error messages."""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.errors import LockError
from reconciler.util.jsonload import load_json
from reconciler.util.times import as_utc, format_time, utcnow


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # Containers often run with a uid that has no passwd entry; a lock must still work.
        return "unknown"


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not 0 < len(value) <= 1024:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _unreadable(source: str, problem: str) -> LockError:
    return LockError(
        f"{source}: lock file is unreadable ({problem}); if no reconciler run is active, "
        f"delete {source} by hand"
    )


@dataclass(frozen=True)
class LockInfo:
    """One run's claim on a state: stored in the lock so that others can name the holder."""

    id: str
    holder: str
    pid: int
    operation: str
    created: datetime
    path: str

    @classmethod
    def new(cls, operation: str, path: str) -> LockInfo:
        """A fresh claim by this process, with a new random id."""
        return cls(
            id=str(uuid.uuid4()),
            holder=f"{_user()}@{socket.gethostname()}",
            pid=os.getpid(),
            operation=operation,
            created=utcnow(),
            path=path,
        )

    @property
    def host(self) -> str:
        return self.holder.rpartition("@")[2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "holder": self.holder,
            "pid": self.pid,
            "operation": self.operation,
            "created": format_time(self.created),
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str) -> LockInfo:
        """Parse a decoded lock document; anything malformed is a LockError naming source."""
        try:
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            created = datetime.fromisoformat(_text(data, "created").replace("Z", "+00:00"))
            pid = data.get("pid")
            if type(pid) is not int or not 0 < pid < 2**31:
                raise ValueError("pid must be a process id (a whole number below 2^31)")
            path = data.get("path", source)
            return cls(
                id=_text(data, "id"),
                holder=_text(data, "holder"),
                pid=pid,
                operation=_text(data, "operation"),
                created=as_utc(created),
                path=path if isinstance(path, str) else source,
            )
        except KeyError as exc:
            raise _unreadable(source, f"no {exc.args[0]}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unreadable(source, str(exc)) from None

    @classmethod
    def decode(cls, raw: bytes, *, source: str) -> LockInfo:
        """Parse a stored lock (bytes); anything malformed is a LockError naming source."""
        try:
            data = load_json(raw)
        except ValueError as exc:
            raise _unreadable(source, f"not valid JSON: {exc}") from None
        return cls.from_dict(data, source=source)

    def describe(self, *notes: str) -> str:
        """'locked by user@host (pid N) for apply since ..., lock id X; if that run is dead...'"""
        since = format_time(self.created.replace(microsecond=0))
        text = (
            f"locked by {self.holder} (pid {self.pid}) for {self.operation} since {since}, "
            f"lock id {self.id}"
        )
        if notes:
            text += f" ({'; '.join(notes)})"
        return text + f"; if that run is dead, run `reconciler force-unlock {self.id}`"
