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
from reconciler.spec import as_utc, format_time, utcnow


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # Containers often run with a uid that has no passwd entry; a lock must still work.
        return "unknown"


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
                raise TypeError("expected a JSON object")
            created = datetime.fromisoformat(str(data["created"]).replace("Z", "+00:00"))
            return cls(
                id=str(data["id"]),
                holder=str(data["holder"]),
                pid=int(data["pid"]),
                operation=str(data["operation"]),
                created=as_utc(created),
                path=str(data.get("path", source)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LockError(
                f"{source}: lock file is unreadable ({type(exc).__name__}: {exc}); if no "
                f"reconciler run is active, delete {source} by hand"
            ) from None

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
