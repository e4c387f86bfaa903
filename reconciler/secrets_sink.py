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
        self._commit = GroupCommit(self._render, self._write_text)
        self.delivered = 0

    @classmethod
    def open(cls, path: str | Path, fmt: SecretsFormat) -> SecretsSink:
        """Open (creating, mode 0600) before the first create, so a sink that cannot be
        written fails the run before any token exists."""
        sink = cls(Path(path), fmt)
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
            # rewritten on every add, and json's indenting encoder is pure Python.
            if not self._values:
                return "{}\n"
            items = (
                f"  {json.dumps(k)}: {json.dumps(self._values[k])}" for k in sorted(self._values)
            )
            return "{\n" + ",\n".join(items) + "\n}\n"
        header = "# Written by reconciler: new API token values. Keep this file secret.\n"
        return header + "".join(f"{k}={self._values[k]}\n" for k in sorted(self._values))

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
