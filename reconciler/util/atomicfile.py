"""Files reconciler writes for the user (state, backups, secrets, saved plans, key files).

Every such file is replaced in one step: the new bytes go to a temp file beside it, which
is flushed to disk and renamed over the target, and the rename itself is flushed (the
directory's fsync). A reader, or a run killed at any instant, sees the old file or the
new one, never a mix. This module is the only place that renames over a user's file.

Temp files are named ``.<target>.rcn-<pid>-<host>-<random>.tmp``: the ``rcn`` mark says
reconciler made it, the pid and host say which process, so a later run can remove the
temps of processes that died mid-write (a secrets temp holds token values) and leave a
live writer's alone. Older releases named them ``.<target>.<pid>.tmp`` (secrets) and
``.<target>.<32 hex>.tmp`` (state); those are recognised too.

Paths given by the user may be symlinks: like Terraform, reconciler follows them, once,
and replaces the file the link points at (``resolve``), so the link keeps working and the
state never forks into a second file. Anything that is not a regular file (a FIFO, a
device such as /dev/null, a directory) is refused before it is opened: reading a FIFO or
a character device blocks or never ends, and renaming over /dev/null would replace it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import time
import uuid
from pathlib import Path

from reconciler.util.processes import pid_running

MODE = 0o600
MARK = "rcn"
# A temp whose writer cannot be asked (another host, or an old name without a pid) is
# left alone until it is this old: a write takes milliseconds, never hours.
FOREIGN_TEMP_AGE = 24 * 3600.0


class NotAFileError(OSError):
    """A path that exists but is not a regular file (or a link to one)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file", str(path))
        self.kind = kind


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(target: Path) -> Path:
    """A fresh, unique temp name beside ``target`` that marks this process as its writer."""
    tag = f"{MARK}-{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:12]}"
    return target.with_name(f".{target.name}.{tag}.tmp")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def resolve(path: Path) -> Path:
    """``path`` with symlinks followed (the file a write should replace). Raises
    NotAFileError when it exists and is not a regular file; a missing path is fine."""
    real = Path(os.path.realpath(path))
    check_regular(real)
    return real


def check_regular(path: Path) -> None:
    """Raise NotAFileError unless ``path`` is missing or a regular file (never opens it)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAFileError(path, "a symlink loop") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise NotAFileError(path, _kind(info.st_mode))


def read_regular(path: Path) -> bytes | None:
    """The bytes of the regular file ``path``, or None when it does not exist.

    Opened without blocking and checked before reading, so a FIFO or a device put in its
    place is refused (NotAFileError) instead of hanging or reading forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFileError(path, _kind(info.st_mode))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable, where the platform allows it."""
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(path: Path, data: bytes | str, mode: int = MODE) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) so that it is either the old or
    the new file at every instant, durably. The temp file is removed on any failure.
    ``path`` must already be resolved (see ``resolve``): a symlink there is replaced."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    check_regular(path)
    temp = temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            # The umask may narrow the mode given to open(); the file gets exactly ``mode``.
            os.fchmod(fd, mode)
            _write_all(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def link_temp(path: Path) -> Path | None:
    """A second name (a temp beside it) for the file at ``path``, or None where hard links
    are not supported. Used to keep a version that is about to be replaced, for free."""
    temp = temp_path(path)
    try:
        os.link(path, temp, follow_symlinks=False)
    except OSError:
        return None
    return temp


def move(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` durably (both in one directory)."""
    os.replace(source, target)
    fsync_dir(target.parent)


def discard(temp: Path) -> None:
    """Remove a temp this process made and no longer needs."""
    with contextlib.suppress(OSError):
        os.unlink(temp)


_OWN = re.compile(rf"{MARK}-(\d{{1,10}})-([0-9a-f]{{8}})-[0-9a-f]{{12}}")
# Older releases: ``<pid>`` (secrets); ``<32 hex>`` (state and backup), nothing (plans).
_OLD_PID = re.compile(r"\d{1,10}")
_OLD_ANONYMOUS = re.compile(r"[0-9a-f]{32}|")


def _is_stale(middle: str, age: float) -> bool:
    """Whether a temp named ``.<target>.<middle>.tmp`` is a dead writer's leftover. A write
    takes milliseconds, so any temp a day old is one (its pid may have been reused)."""
    if age > FOREIGN_TEMP_AGE:
        return any(p.fullmatch(middle) for p in (_OWN, _OLD_PID, _OLD_ANONYMOUS))
    own = _OWN.fullmatch(middle)
    if own is not None:
        pid, host = int(own.group(1)), own.group(2)
        return host == _host_tag() and pid != os.getpid() and not pid_running(pid)
    if _OLD_PID.fullmatch(middle):
        pid = int(middle)
        return pid != os.getpid() and not pid_running(pid)
    return False


def remove_stale_temps(target: Path) -> int:
    """Remove temps beside ``target`` left by writers that died (only names this module
    makes, or older releases made, for this very target); returns how many."""
    prefix, suffix = f".{target.name}.", ".tmp"
    removed = 0
    try:
        with os.scandir(target.parent) as found:
            entries = list(found)
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        name = entry.name
        if name == f".{target.name}.tmp":
            middle = ""
        elif name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + 4:
            middle = name[len(prefix) : -len(suffix)]
        else:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or not _is_stale(middle, now - info.st_mtime):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue  # gone already, or a directory we may not change: not our business
        removed += 1
    return removed


# The data and the size it needs, without other metadata; plain fsync where absent (macOS).
datasync = getattr(os, "fdatasync", os.fsync)
