"""State in a local (or shared network) file: atomic replace, a backup, an O_EXCL lock file.

A state path that is a symlink is followed once, when first used, and the file it points
at is the state: it is replaced there, with its backup and lock beside it, so the link
keeps working and every run that reaches the file through any link shares one lock. A
path that is not a regular file (a FIFO, a device, a directory) is refused unopened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import LockError, StateError
from reconciler.state.backends.base import StateBackend, Version
from reconciler.state.backends.journalfile import (
    JournalFile,
    Replay,
    apply_records,
    changes,
    encode_line,
    read_journal,
)
from reconciler.state.backends.lockinfo import LockInfo
from reconciler.state.model import FORMAT_VERSION, State
from reconciler.util import atomicfile
from reconciler.util.atomicfile import NotAFileError
from reconciler.util.jsonload import load_json

if TYPE_CHECKING:
    from reconciler.state.codec import StateEncoder

_MODE = 0o600
log = logging.getLogger("reconciler")
# A lock file is created empty and filled by the next write; a reader that lands in between
# waits this long for the content before calling the file unreadable.
_LOCK_READ_GRACE = 1.0


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _digest(raw: bytes | None) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw is not None else None


def _not_a_file(given: Path, exc: NotAFileError) -> StateError:
    return StateError(
        f"{given}: cannot keep state there: {exc.strerror}; point --state at a regular file "
        "(or a path that does not exist yet)"
    )


class LocalStateBackend(StateBackend):
    """State in ``path``; previous version in ``<path>.backup``; lock in ``<path>.lock``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.given = Path(path)
        self._resolved: Path | None = None
        # Digest of the bytes last read or written; None means "expect no file". write()
        # compares it with the bytes on disk so that it never replaces a version (or a
        # corrupt or newer file) it has not seen.
        self._seen: str | None = None
        # (lineage, serial) of those bytes, so that write() need not parse them again.
        self._seen_version: Version | None = None
        self._encoder: StateEncoder | None = None  # made by the first write (pydantic)
        self._swept = False
        self._journal: JournalFile | None = None
        self._held_stat: tuple[int, int, int] | None = None  # of the lock file, once checked
        # The document as last read or stored: serial and format of the file itself (the
        # journal's lines apply to that serial), and its identity, so that an append can
        # check that the file was not replaced without reading it.
        self._file_serial: object = None
        self._file_format: object = None
        self._file_stat: tuple[int, int, int] | None = None

    @property
    def path(self) -> Path:
        """The state file: the given path with symlinks followed (once, then kept)."""
        if self._resolved is None:
            try:
                self._resolved = atomicfile.resolve(self.given)
            except NotAFileError as exc:
                raise _not_a_file(self.given, exc) from None
        return self._resolved

    @property
    def journal(self) -> JournalFile:
        """The append-only journal beside the state (``<path>.journal``)."""
        if self._journal is None:
            self._journal = JournalFile(self.path.with_name(self.path.name + ".journal"))
        return self._journal

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".backup")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def describe(self) -> str:
        return str(self.given)

    def restore_hint(self) -> str:
        return f"Restore it from {self.backup_path}"

    # -- storage -------------------------------------------------------------------------

    def _raw(self) -> bytes | None:
        try:
            return atomicfile.read_regular(self.path)
        except NotAFileError as exc:
            raise _not_a_file(self.given, exc) from None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state ({exc.strerror})") from None

    def read(self) -> State | None:
        raw = self._raw()
        try:
            journal = self.journal.read()
        except OSError as exc:
            raise StateError(f"{self.journal.path}: cannot read ({exc.strerror})") from None
        if raw is None:
            self._seen = None
            self._seen_version = None
            self.journal.seen(Replay())  # no document: anything in it is stale
            return None
        state = self._decode_with_journal(raw, journal)
        self._seen = _digest(raw)
        self._seen_version = (state.lineage, state.serial)
        self._file_stat = _identity(self.path)
        return state

    def _decode_with_journal(self, raw: bytes, journal: bytes | None) -> State:
        """The document with the journal's records for it applied (see journalfile)."""
        from reconciler.state.codec import state_from_document  # pydantic: once state is read

        try:
            data = load_json(raw)
        except ValueError:
            return self.decode(raw)  # raises, with the usual message
        self._file_format = data.get("format_version") if isinstance(data, dict) else None
        replay = Replay()
        if journal and isinstance(data, dict):
            lineage, serial = data.get("lineage"), data.get("serial")
            if isinstance(lineage, str) and isinstance(serial, int):
                replay = read_journal(journal, lineage, serial, str(self.journal.path))
        self.journal.seen(replay)
        self._file_serial = data.get("serial") if isinstance(data, dict) else None
        document = apply_records(data, replay.records)
        return state_from_document(document, source=self.describe(), restore=self.restore_hint())

    def commit(self, before: State, after: State) -> State:
        """One line appended to the journal (fsynced), not a rewrite of the document; a
        new document, one from an older format or another lineage is written whole."""
        if (
            self._seen is None
            or self._file_format != FORMAT_VERSION
            or not isinstance(self._file_serial, int)
            or (before.lineage, before.endpoint) != (after.lineage, after.endpoint)
        ):
            return super().commit(before, after)
        self.check_may_write()
        if (
            _identity(self.path) != self._file_stat
            or not self.journal.unchanged()
            or self._seen_version != (before.lineage, before.serial)
        ):
            raise StateError(self.moved_message(self._raw(), saw_state=True))
        diff = changes(before, after)
        if not diff:
            return replace(after, serial=before.serial)
        line = encode_line(after.lineage, self._file_serial, self.journal.records + 1, diff)
        try:
            self._sweep()
            self.journal.append(line)
        except OSError as exc:
            raise StateError(
                f"{self.journal.path}: cannot record the change ({exc.strerror}); the "
                "state was kept as it was before it"
            ) from None
        self._seen_version = (after.lineage, before.serial + 1)
        return replace(after, serial=before.serial + 1)

    def fold(self) -> None:
        """Write the document with the journal applied and remove the journal. A kill at
        any instant leaves either the old document and the whole journal, or the new
        document (whose serial no journal line names) and a stale journal."""
        self.journal.close()
        if not self.journal.path.exists():
            return
        self.check_may_write()
        state = self.read()
        if state is not None and self.journal.records:
            raw = self._raw()
            data = self._state_encoder().encode(state)
            try:
                self._replace_keeping_backup(raw, data)
            except OSError as exc:
                raise StateError(
                    f"{self.path}: cannot fold the state journal ({exc.strerror}); it was "
                    "kept, and the next run folds it"
                ) from None
            self._after_store(data, state)
        self.journal.remove()

    def release(self, info: LockInfo) -> bool:
        # An apply folds its journal before giving up the lock (as does the next apply
        # after a crash); a failure to fold loses nothing: the journal stays and is read.
        if self._held is not None and self._held.id == info.id and info.operation == "apply":
            try:
                self.fold()
            except (StateError, LockError, OSError) as exc:
                log.warning("state journal not folded: %s", exc)
        self._held_stat = None
        return super().release(info)

    def _state_encoder(self) -> StateEncoder:
        if self._encoder is None:
            from reconciler.state.codec import StateEncoder

            self._encoder = StateEncoder()
        return self._encoder

    def _after_store(self, data: bytes, state: State) -> None:
        self._seen = _digest(data)
        self._seen_version = (state.lineage, state.serial)
        self._file_serial = state.serial
        self._file_format = state.header()["format_version"]
        self._file_stat = _identity(self.path)

    def write(self, state: State) -> State:
        self.check_may_write()
        raw = self._raw()
        if _digest(raw) != self._seen:
            raise StateError(self.moved_message(raw, saw_state=self._seen is not None))
        if raw is not None:
            # The bytes are the ones last read or written (same digest), so their version
            # is known without parsing them again (a large state is written once per call).
            if self._seen_version is None:
                stored = self.decode(raw)
                self._seen_version = (stored.lineage, stored.serial)
            self.check_based_on(state, self._seen_version)
        if not self.journal.unchanged():
            raise StateError(self.moved_message(raw, saw_state=self._seen is not None))
        new = replace(state, serial=state.serial + 1)
        data = self._state_encoder().encode(new)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sweep()
            self._replace_keeping_backup(raw, data)
        except OSError as exc:
            raise StateError(
                f"{self.path}: cannot write state ({exc.strerror}: {exc.filename}); the "
                "previous state was kept"
            ) from None
        self._after_store(data, new)
        # The new document holds every change the journal recorded (it was read first);
        # a kill before this removal leaves lines for an older serial: stale, ignored.
        if self.journal.size is not None:
            self.journal.remove()
        return new

    def _sweep(self) -> None:
        """Remove temps that runs killed mid-write left beside the state and its backup."""
        if not self._swept:
            self._swept = True
            atomicfile.remove_stale_temps(self.path)
            atomicfile.remove_stale_temps(self.backup_path)

    def _replace_keeping_backup(self, raw: bytes | None, data: bytes) -> None:
        """Write ``data`` as the state and make the version it replaces (``raw``, just
        verified) the backup.

        A hard link to the state file costs no copy: apply writes the state after every
        API call, and copying a large state each time doubled the I/O. The link is made
        under a temp name and becomes the backup only once the new state is in place, so
        a failed write never leaves the backup and the state as one file. Where hard
        links are not supported, ``raw`` is written as the backup first."""
        if raw is None:
            atomicfile.atomic_write(self.path, data, _MODE)
            return
        kept = atomicfile.link_temp(self.path)
        if kept is None:
            atomicfile.atomic_write(self.backup_path, raw, _MODE)
            atomicfile.atomic_write(self.path, data, _MODE)
            return
        try:
            if atomicfile.read_regular(kept) != raw:
                raise StateError(self.moved_message(self._raw(), saw_state=True))
            atomicfile.check_regular(self.backup_path)
            atomicfile.atomic_write(self.path, data, _MODE)
        except BaseException:
            atomicfile.discard(kept)
            raise
        try:
            atomicfile.move(kept, self.backup_path)
        except OSError:
            # The new state stands; the backup stays one version older.
            atomicfile.discard(kept)

    def retire(self, suffix: str) -> str:
        self.check_may_write()
        target = self.path.with_name(self.path.name + suffix)
        try:
            atomicfile.check_regular(target)
            atomicfile.move(self.path, target)
        except OSError as exc:
            raise StateError(
                f"{self.path}: copied, but cannot move it aside ({exc.strerror}); delete it by hand"
            ) from None
        self._seen = None
        self._seen_version = None
        self.journal.remove()  # read (and so copied) with the state
        return str(target)

    # -- lock ----------------------------------------------------------------------------

    def current_lock(self) -> LockInfo | None:
        deadline = time.monotonic() + _LOCK_READ_GRACE
        while True:
            try:
                raw = atomicfile.read_regular(self.lock_path)
            except OSError as exc:
                raise LockError(f"{self.lock_path}: cannot read lock ({exc.strerror})") from None
            if raw is None:
                return None
            try:
                return LockInfo.decode(raw, source=str(self.lock_path))
            except LockError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

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
            atomicfile.fsync_dir(self.lock_path.parent)
            return None
        raise LockError(f"{self.lock_path}: lock keeps appearing and vanishing; try again")

    def check_may_write(self) -> None:
        # Every journal line checks the lock first. The lock file this run created, unchanged
        # (same inode, size and mtime), is still this run's lock: no need to parse it again.
        held = self._held is not None and self._held_stat is not None
        if held and _identity(self.lock_path) == self._held_stat:
            return
        super().check_may_write()
        if self._held is not None:
            self._held_stat = _identity(self.lock_path)

    def remove_lock(self, lock_id: str) -> bool:
        current = self.current_lock()
        if current is None or current.id != lock_id:
            return False
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            return False
        atomicfile.fsync_dir(self.lock_path.parent)
        return True
