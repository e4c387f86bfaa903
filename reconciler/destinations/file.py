"""A file destination: a 0600 JSON or dotenv file holding the current value of each token,
durable before state moves on."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.destinations.base import Delivery, Undo, no_undo
from reconciler.errors import DeliveryFailedError, SecretsError, redact
from reconciler.util import atomicfile
from reconciler.util.atomicfile import datasync
from reconciler.util.groupcommit import GroupCommit
from reconciler.util.jsonload import load_json

SecretsFormat = Literal["json", "dotenv"]


_DOTENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def default_format(path: str) -> SecretsFormat:
    """The format ``--secrets-format`` chooses when not given: dotenv for ``*.env``."""
    return "dotenv" if path.endswith(".env") else "json"


def dotenv_key(name: str) -> str:
    """'ci-deployer' -> 'CI_DEPLOYER'. Token names are DNS labels, so this is one-to-one."""
    return name.upper().replace("-", "_")


def check_target(path: str | Path) -> Path:
    """The file a file destination at ``path`` writes: ``path`` itself, or the file its
    symlink points at (followed knowingly, as Terraform does, so the link stays). Refuses,
    without opening it, anything but a regular file or a path that does not exist yet: a
    FIFO would block the run, a device would be read forever or replaced by a file.

    Cheap and free of side effects, so a caller can check before any API call."""
    try:
        return atomicfile.resolve(Path(path))
    except atomicfile.NotAFileError as exc:
        raise SecretsError(
            f"--secrets-out {path}: cannot write secrets there: {exc.strerror}; give a "
            "regular file or a path that does not exist yet (or --discard-secrets)"
        ) from None
    except OSError as exc:
        raise SecretsError(f"--secrets-out {path}: cannot use it ({exc.strerror})") from None


# A value for a new key is appended in place when the bytes written fit in one page of
# the file: a write within one page cannot be torn by a kill (the kernel checks for a
# fatal signal only between pages), so the file is complete JSON or dotenv at every
# instant, as with a rename. Anything else (a replaced or removed value, a chunk crossing
# a page) rewrites the file atomically.
_PAGE = 4096


@dataclass
class _Written:
    """The file as this destination last made it: its identity and size, to append to it only
    while nobody else has changed it."""

    fd: int
    inode: int
    size: int


class FileDestination:
    """A JSON (``{"name": "value"}``) or dotenv (``NAME=value``) file of new token values.

    ``check`` opens the file before the first create (creating it, mode 0600), so a file
    that cannot be written fails the run while nothing exists yet. ``deliver`` makes the
    value durable before it returns (an fdatasync'ed append, or a rewrite: temp, fsync,
    rename), so a value is on disk before reconciler records the token as delivered.
    Values already in the file from earlier runs are kept unless replaced, or removed by
    ``forget`` when their token is deleted: the file holds only values that may still work.
    Its Undo leaves the value in the file: a value of a token deleted again is harmless,
    and the next delivery under that name replaces it.
    """

    irreversible = False

    def __init__(self, path: str | Path, fmt: SecretsFormat | None = None) -> None:
        self.path = Path(path)
        self.text = str(path)
        self.format: SecretsFormat = fmt or default_format(self.text)
        self._target: Path | None = None
        self._open_lock = threading.Lock()
        self._opened = False
        self._values: dict[str, str] = {}
        self._json_lines: dict[str, tuple[str, str]] = {}  # key -> (value, its JSON line)
        # Keys added since the last durable write (appendable), and whether anything else
        # changed (a rewrite is needed).
        self._added: list[str] = []
        self._rewrite = False
        self._written: _Written | None = None
        self._commit: GroupCommit[tuple[bool, str, int]] = GroupCommit(self._snapshot, self._store)
        self.delivered = 0
        self.forgotten = 0

    def describe(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"FileDestination({self.text!r})"

    @property
    def target(self) -> Path:
        """The file written: the path, or the file its symlink points at."""
        if self._target is None:
            self._target = check_target(self.path)
        return self._target

    def check(self, names: Collection[str] = ()) -> None:
        """Open the file (once): read the values it holds and write it back, mode 0600."""
        # Deliveries from several workers call this too: it must open the file once, never
        # again (a second read would forget values added since but not yet written).
        with self._open_lock:
            if self._opened:
                return
            atomicfile.remove_stale_temps(self.target)
            self._load_existing()
            self._write_text(self._render())
            self._opened = True

    def deliver(self, delivery: Delivery) -> Undo:
        try:
            self.check()
            self.add(delivery.name, delivery.value)
        except (OSError, SecretsError) as exc:
            reason = redact(str(exc), (delivery.value,))
            raise DeliveryFailedError(self.describe(), reason) from None
        return no_undo

    @classmethod
    def open(cls, path: str | Path, fmt: SecretsFormat | None = None) -> FileDestination:
        """A file destination, checked (opened) at once."""
        destination = cls(path, fmt)
        destination.check()
        return destination

    def _read(self) -> str | None:
        try:
            raw = atomicfile.read_regular(self.target)
            return raw.decode("utf-8") if raw is not None else None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SecretsError(f"{self.path}: cannot read the secrets file ({reason})") from None

    def _load_existing(self) -> None:
        text = self._read()
        if text is None or not text.strip():
            return
        if self.format == "json":
            try:
                data = load_json(text.encode("utf-8"))
            except ValueError:
                data = None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise SecretsError(
                    f"{self.path}: exists but is not a reconciler JSON secrets file; move it "
                    "away or choose another --secrets-out"
                )
            self._values = {str(k): v for k, v in data.items()}
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            match = _DOTENV_LINE.match(line)
            if not match:
                raise SecretsError(
                    f"{self.path}:{number}: not a KEY=value line; move the file away or choose "
                    "another --secrets-out"
                )
            self._values[match.group(1)] = match.group(2)

    def _reopen(self) -> None:
        """Keep the file just written open, so later values can be appended to it."""
        if self._written is not None:
            os.close(self._written.fd)
            self._written = None
        fd = os.open(self.target, os.O_WRONLY | os.O_NOFOLLOW)
        info = os.fstat(fd)
        self._written = _Written(fd, info.st_ino, info.st_size)

    def close(self) -> None:
        """Release the append handle (the file is complete and durable already)."""
        if self._written is not None:
            os.close(self._written.fd)
            self._written = None

    def _key(self, name: str) -> str:
        return dotenv_key(name) if self.format == "dotenv" else name

    def add(self, name: str, value: str) -> None:
        """Record a new value durably."""
        key = self._key(name)

        def record() -> None:
            if key in self._values:
                self._rewrite = True
            else:
                self._added.append(key)
            self._values[key] = value
            self.delivered += 1

        self._commit.change(record)

    def forget(self, name: str) -> None:
        """Remove the value of token ``name`` (deleted: it no longer works), durably."""
        key = self._key(name)
        if key not in self._values:
            return

        def remove() -> None:
            if self._values.pop(key, None) is not None:
                self.forgotten += 1
                self._rewrite = True

        self._commit.change(remove)

    def _snapshot(self) -> tuple[bool, str, int]:
        """(append?, text, keys) for the changes made since the last write; called under
        the group commit's mutex, so the text is consistent with ``_values``."""
        added, self._added = self._added, []
        rewrite, self._rewrite = self._rewrite, False
        count = len(self._values)
        if not added and not rewrite:
            return True, "", count  # covered by a rewrite made since
        if not rewrite and self._written is not None and added and count > len(added):
            if self.format == "json":
                lines = [self._json_line(k) for k in added if k in self._values]
                return True, ",\n" + ",\n".join(lines) + "\n}\n", count
            return True, "".join(f"{k}={self._values[k]}\n" for k in added), count
        return False, self._render(), count

    def _store(self, change: tuple[bool, str, int]) -> None:
        append, text, _ = change
        if append and (not text or self._append(text)):
            return
        self._write_text(self._render_locked() if append else text)

    def _render_locked(self) -> str:
        # A chunk that could not be appended: the whole file, consistent with _values.
        with self._commit.mutex:
            # The text covers every change made so far: none is left to append again.
            self._added, self._rewrite = [], False
            return self._render()

    def _append(self, text: str) -> bool:
        """Write ``text`` at the end (JSON: over the closing brace) if the file is still the
        one this destination wrote and the bytes stay within one page; True when done, durably."""
        written = self._written
        data = text.encode("utf-8")
        try:
            if written is None or os.stat(self.target).st_ino != written.inode:
                return False
            offset = written.size - (3 if self.format == "json" else 0)  # "\n}\n"
            if offset // _PAGE != (offset + len(data) - 1) // _PAGE:
                return False
            os.pwrite(written.fd, data, offset)
            datasync(written.fd)
        except OSError:
            return False
        written.size = offset + len(data)
        return True

    def _render(self) -> str:
        if self.format == "json":
            # json.dumps(self._values, indent=2, sort_keys=True), byte for byte: the file is
            # rewritten on every add, and json's indenting encoder is pure Python; each
            # entry's line is encoded once.
            if not self._values:
                return "{}\n"
            return "{\n" + ",\n".join(self._json_line(k) for k in sorted(self._values)) + "\n}\n"
        header = "# Written by reconciler: new API token values. Keep this file secret.\n"
        return header + "".join(f"{k}={self._values[k]}\n" for k in sorted(self._values))

    def _json_line(self, key: str) -> str:
        value = self._values[key]
        cached = self._json_lines.get(key)
        if cached is None or cached[0] != value:
            cached = self._json_lines[key] = (value, f"  {json.dumps(key)}: {json.dumps(value)}")
        return cached[1]

    def _write_text(self, text: str) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            atomicfile.atomic_write(self.target, text, 0o600)
            self._reopen()
        except OSError as exc:
            raise SecretsError(
                f"{self.path}: cannot write the secrets file ({exc.strerror})"
            ) from None
