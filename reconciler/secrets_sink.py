"""Where new token values go: a 0600 JSON or dotenv file, durable before state moves on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from reconciler.errors import SecretsError
from reconciler.groupcommit import GroupCommit

SecretsFormat = Literal["json", "dotenv"]
_DOTENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def dotenv_key(name: str) -> str:
    """'ci-deployer' -> 'CI_DEPLOYER'. Token names are DNS labels, so this is one-to-one."""
    return name.upper().replace("-", "_")


class SecretsSink:
    """Collects each new token value and rewrites the file atomically (temp, fsync, rename)
    before ``add`` returns, so a value is on disk before reconciler records the token as
    delivered. Values already in the file from earlier runs are kept unless replaced."""

    def __init__(self, path: Path, fmt: SecretsFormat) -> None:
        self.path = path
        self.format = fmt
        self._values: dict[str, str] = {}
        self._json_lines: dict[str, tuple[str, str]] = {}  # key -> (value, its JSON line)
        self._commit = GroupCommit(self._render, self._write_text)
        self.delivered = 0

    @classmethod
    def open(cls, path: str | Path, fmt: SecretsFormat) -> SecretsSink:
        """Open (creating, mode 0600) before the first create, so a sink that cannot be
        written fails the run before any token exists."""
        sink = cls(Path(path), fmt)
        sink._remove_stale_temps()
        sink._load_existing()
        sink._write_text(sink._render())
        return sink

    def _load_existing(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsError(f"{self.path}: cannot read the secrets file ({exc})") from None
        if not text.strip():
            return
        if self.format == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
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

    def _remove_stale_temps(self) -> None:
        """A run killed mid-write leaves its temp file, which holds values: remove those of
        processes that no longer run, so secrets do not pile up beside the sink."""
        for temp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            pid_text = temp.name[len(self.path.name) + 2 : -len(".tmp")]
            if not pid_text.isdigit() or int(pid_text) == os.getpid():
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                temp.unlink(missing_ok=True)
            except PermissionError:
                pass  # another user's live process

    def add(self, name: str, value: str) -> None:
        """Record a new value durably."""
        key = dotenv_key(name) if self.format == "dotenv" else name

        def record() -> None:
            self._values[key] = value
            self.delivered += 1

        self._commit.change(record)

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
        directory = self.path.parent
        temp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise SecretsError(
                f"{self.path}: cannot write the secrets file ({exc.strerror})"
            ) from None
