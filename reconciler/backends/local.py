"""State in a local (or shared network) file: atomic replace, a backup, an O_EXCL lock file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

from reconciler.backends.base import StateBackend
from reconciler.backends.lockinfo import LockInfo
from reconciler.errors import LockError, StateError
from reconciler.state import JsonCache, State

_MODE = 0o600
# A lock file is created empty and filled by the next write; a reader that lands in between
# waits this long for the content before calling the file unreadable.
_LOCK_READ_GRACE = 1.0


def _digest(raw: bytes | None) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw is not None else None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some filesystems (and platforms) cannot fsync a directory; the rename still stands.
        pass
    finally:
        os.close(fd)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStateBackend(StateBackend):
    """State in ``path``; previous version in ``<path>.backup``; lock in ``<path>.lock``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        # Digest of the bytes last read or written; None means "expect no file". write()
        # compares it with the bytes on disk so that it never replaces a version (or a
        # corrupt or newer file) it has not seen.
        self._seen: str | None = None
        # (lineage, serial) of those bytes, so that write() need not parse them again.
        self._seen_version: tuple[str, int] | None = None
        self._json_cache: JsonCache = {}

    def describe(self) -> str:
        return str(self.path)

    # -- storage -------------------------------------------------------------------------

    def _raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state ({exc.strerror})") from None

    def _parse(self, raw: bytes) -> State:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(
                f"{self.path}: state file is not valid JSON ({exc}); the file was not "
                f"changed. Restore it from {self.backup_path}"
            ) from None
        return State.from_dict(data, source=str(self.path))

    def read(self) -> State | None:
        raw = self._raw()
        if raw is None:
            self._seen = None
            self._seen_version = None
            return None
        state = self._parse(raw)
        self._seen = _digest(raw)
        self._seen_version = (state.lineage, state.serial)
        return state

    def write(self, state: State) -> State:
        self.check_may_write()
        raw = self._raw()
        if _digest(raw) != self._seen:
            raise StateError(self._moved_message(raw))
        if raw is not None:
            # The bytes are the ones last read or written (same digest), so their version
            # is known without parsing them again (a large state is written once per call).
            if self._seen_version is None:
                stored = self._parse(raw)
                self._seen_version = (stored.lineage, stored.serial)
            lineage, serial = self._seen_version
            if lineage != state.lineage or serial != state.serial:
                raise StateError(
                    f"{self.path}: refusing to write a state based on lineage {state.lineage} "
                    f"serial {state.serial} over stored lineage {lineage} serial "
                    f"{serial}; the file was not changed"
                )
        new = replace(state, serial=state.serial + 1)
        data = (new.to_json(self._json_cache) + "\n").encode("utf-8")
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if raw is not None:
                self._keep_backup(raw)
            self._replace_atomically(self.path, data)
        except OSError as exc:
            raise StateError(
                f"{self.path}: cannot write state ({exc.strerror}: {exc.filename}); the "
                "previous state was kept"
            ) from None
        self._seen = _digest(data)
        self._seen_version = (new.lineage, new.serial)
        return new

    def _keep_backup(self, raw: bytes) -> None:
        """Make the version being replaced (``raw``, just verified) the backup.

        A hard link to the state file costs no copy: apply writes the state after every
        API call, and copying a large state each time doubled the I/O. Writers only ever
        rename a new file into place, so the linked file keeps its bytes; they are checked
        against ``raw`` all the same. Where hard links are not supported, ``raw`` is written.
        """
        temp = self.backup_path.with_name(f".{self.backup_path.name}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(self.path, temp)
        except OSError:
            self._replace_atomically(self.backup_path, raw)
            return
        try:
            if temp.read_bytes() != raw:
                raise StateError(self._moved_message(self._raw()))
            os.replace(temp, self.backup_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(self.backup_path.parent)

    def _replace_atomically(self, target: Path, data: bytes) -> None:
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
        try:
            try:
                os.fchmod(fd, _MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(target.parent)

    def _moved_message(self, raw: bytes | None) -> str:
        if raw is None:
            now = "it has been deleted"
        else:
            try:
                stored = self._parse(raw)
                now = f"it is now lineage {stored.lineage} serial {stored.serial}"
            except StateError:
                now = "it is now unreadable"
        seen = "this run saw no state file" if self._seen is None else "this run read it"
        return (
            f"{self.path}: state changed since {seen} ({now}); another run wrote it. Not "
            "overwritten: re-run plan/apply against the current state"
        )

    # -- lock ----------------------------------------------------------------------------

    def current_lock(self) -> LockInfo | None:
        deadline = time.monotonic() + _LOCK_READ_GRACE
        while True:
            try:
                raw = self.lock_path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise LockError(f"{self.lock_path}: cannot read lock ({exc.strerror})") from None
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                data = None
            return LockInfo.from_dict(data, source=str(self.lock_path))

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        payload = (json.dumps(info.to_dict(), indent=2) + "\n").encode("utf-8")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(100):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
            except FileExistsError:
                holder = self.current_lock()
                if holder is not None:
                    return holder
                # Released between our attempt and our look: try again.
                continue
            except OSError as exc:
                raise LockError(f"{self.lock_path}: cannot create lock ({exc.strerror})") from None
            try:
                os.fchmod(fd, _MODE)
                os.write(fd, payload)
                os.fsync(fd)
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_path)
                raise LockError(f"{self.lock_path}: cannot write lock ({exc.strerror})") from None
            os.close(fd)
            _fsync_dir(self.lock_path.parent)
            return None
        raise LockError(f"{self.lock_path}: lock keeps appearing and vanishing; try again")

    def remove_lock(self, lock_id: str) -> bool:
        current = self.current_lock()
        if current is None or current.id != lock_id:
            return False
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            return False
        _fsync_dir(self.lock_path.parent)
        return True

    def holder_notes(self, holder: LockInfo) -> list[str]:
        if holder.host == socket.gethostname() and not _pid_running(holder.pid):
            return [f"pid {holder.pid} no longer runs on this host"]
        return []
