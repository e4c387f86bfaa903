"""The secrets-leak scan: every secret the test session sees, and every text it must not be in.

A session-wide ``REGISTRY`` collects

- secrets: every token value and admin key the in-process local API generates (its value
  factories are wrapped at import), every value found in a secrets sink file a test
  registers, any API key a test registers, and the secret-store credentials
  (``VAULT_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) in the environment of
  every CLI run made through the runners below;
- artifacts: stdout, stderr and exception text (with traceback) of every CLI run made with
  the runners of ``support.cli``, every log record of reconciler,
  httpx, httpcore or uvicorn at any level during the whole session, and every state, plan or
  backup file a test records.

``REGISTRY.leaks()`` finds every secret inside every artifact (a secret registered late is
still looked for in artifacts recorded early). ``tests/conftest.py`` imports the session
fixture ``leakcheck_session``, whose teardown fails the session when anything leaked, and
``pytest_terminal_summary``, which prints how much was scanned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Secrets made by the local API and by `secrets.token_urlsafe` use only these characters,
# so a scan can cut texts into runs of them and look each run (and its substrings of a
# secret's length) up in a set, instead of searching every text for every secret.
_RUN = re.compile(r"[A-Za-z0-9_\-]{12,}")
_URLSAFE = re.compile(r"^[A-Za-z0-9_\-]+$")
_WATCHED_LOGGERS = ("reconciler", "httpx", "httpcore", "uvicorn", "starlette", "fastapi")


# Credentials of the secret stores a CLI run may be given (issue 12): registered from the
# environment of every run, so no test has to remember to.
STORE_CREDENTIAL_VARS = ("VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Leak:
    """A secret found in an artifact; never holds the secret itself."""

    artifact: str
    kind: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.kind} {self.fingerprint} found in {self.artifact}"


def fingerprint(secret: str) -> str:
    """A way to name a secret in a report without printing it."""
    return f"<{secret[:4]}…{len(secret)} chars>"


class SecretRegistry:
    """Secrets and the artifacts they must never appear in. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._artifacts: list[tuple[str, str]] = []

    # secrets

    def add_secret(self, value: str | None, kind: str) -> None:
        if not value or len(value) < 12:
            # Too short to be a credential, and would match ordinary words.
            return
        with self._lock:
            self._secrets.setdefault(value, kind)

    def add_sink_file(self, path: Path) -> dict[str, str]:
        """Register every value in a JSON or dotenv secrets file; returns name -> value."""
        values = read_sink(path)
        for name, value in values.items():
            self.add_secret(value, f"token value ({name})")
        return values

    @property
    def secret_count(self) -> int:
        with self._lock:
            return len(self._secrets)

    def secrets_of_kind(self, prefix: str) -> list[str]:
        with self._lock:
            return [s for s, kind in self._secrets.items() if kind.startswith(prefix)]

    # artifacts

    def record(self, label: str, text: str | bytes | None) -> None:
        if not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self._lock:
            self._artifacts.append((label, text))

    def record_file(self, path: Path, label: str | None = None) -> None:
        """Record a file's content (state, backup, plan, lock); a missing file is skipped,
        and so is anything but a regular file (a FIFO would block the read forever)."""
        if not path.is_file():
            return
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        self.record(label or f"file {path.name}", data)

    def record_state_files(self, state_path: Path) -> None:
        """The state file, its backup and its lock (whatever exists)."""
        for suffix in ("", ".backup", ".lock"):
            candidate = state_path.with_name(state_path.name + suffix)
            self.record_file(candidate, f"state file {candidate.name}")

    @property
    def artifact_count(self) -> int:
        with self._lock:
            return len(self._artifacts)

    @property
    def artifact_chars(self) -> int:
        with self._lock:
            return sum(len(text) for _, text in self._artifacts)

    # scanning

    def mark(self) -> int:
        """A position in the artifacts, for ``leaks(since=...)``."""
        with self._lock:
            return len(self._artifacts)

    def artifacts_since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._artifacts[mark:])

    def leaks(
        self, artifacts: Sequence[tuple[str, str]] | None = None, *, since: int = 0
    ) -> list[Leak]:
        """Every (artifact, secret) pair where the secret occurs in the artifact's text
        (``artifacts``, or those recorded since the mark ``since``)."""
        with self._lock:
            secrets = dict(self._secrets)
            texts = list(self._artifacts[since:] if artifacts is None else artifacts)
        simple = {s: k for s, k in secrets.items() if _URLSAFE.match(s)}
        other = {s: k for s, k in secrets.items() if s not in simple}
        lengths = sorted({len(s) for s in simple})
        found: list[Leak] = []
        for label, text in texts:
            hits: set[str] = set()
            for match in _RUN.finditer(text):
                run = match.group()
                if run in simple:
                    hits.add(run)
                    continue
                for size in lengths:
                    if size >= len(run):
                        break
                    for start in range(len(run) - size + 1):
                        piece = run[start : start + size]
                        if piece in simple:
                            hits.add(piece)
            hits.update(s for s in other if s in text)
            found.extend(Leak(label, secrets[s], fingerprint(s)) for s in sorted(hits))
        return found

    def assert_no_leaks(
        self, artifacts: Sequence[tuple[str, str]] | None = None, *, since: int = 0
    ) -> None:
        leaks = self.leaks(artifacts, since=since)
        assert not leaks, f"{len(leaks)} secret leak(s):\n" + "\n".join(
            f"  {leak}" for leak in leaks[:50]
        )


REGISTRY = SecretRegistry()


def register_store_credentials(env: Mapping[str, str]) -> None:
    """Look for the store credentials in ``env`` (a run's environment) in every artifact."""
    for name in STORE_CREDENTIAL_VARS:
        REGISTRY.add_secret(env.get(name), f"store credential ${name}")


def read_sink(path: Path) -> dict[str, str]:
    """name (JSON) or KEY (dotenv) -> value, from a secrets file reconciler wrote."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    if path.suffix == ".env":
        values: dict[str, str] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
        return values
    data = json.loads(text)
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


# ---------------------------------------------------------------- secret sources


def _wrap_value_factory(module: Any, attribute: str, kind: str) -> None:
    original = getattr(module, attribute, None)
    if original is None or getattr(original, "_leakcheck", False):
        return

    def wrapped() -> str:
        value: str = original()
        REGISTRY.add_secret(value, kind)
        return value

    wrapped._leakcheck = True  # type: ignore[attr-defined]
    setattr(module, attribute, wrapped)


class _LogCapture(logging.Handler):
    """Keeps every record of the watched loggers, formatted with its traceback if any."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        # Its own formatter, not self.formatter: the CLI makes every root handler redact
        # (errors.install_log_redaction), and the scan must see records as they were made,
        # so that a secret reaching a log record at all is a leak.
        self._raw = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_WATCHED_LOGGERS):
            return
        try:
            text = self._raw.format(record)
        except Exception:  # a record that cannot be formatted is itself worth keeping
            text = f"{record.name}: unformattable record {record.msg!r} {record.args!r}"
        REGISTRY.record(f"log record {record.name}:{record.levelname}", text)


_LOG_HANDLER = _LogCapture()


def install() -> None:
    """Wrap the local API's value factories and start capturing log records (idempotent)."""
    from reconciler.server import embedded, store

    _wrap_value_factory(store, "new_token_value", "token value")
    _wrap_value_factory(store, "new_admin_key", "admin key")
    _wrap_value_factory(embedded, "new_admin_key", "admin key")
    root = logging.getLogger()
    if _LOG_HANDLER not in root.handlers:
        root.addHandler(_LOG_HANDLER)


@contextlib.contextmanager
def all_loggers_at_debug() -> Iterator[None]:
    """Every watched logger at DEBUG for the duration (to scan what -vv would never show)."""
    loggers = [logging.getLogger(name) for name in _WATCHED_LOGGERS]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


# ---------------------------------------------------------------- pytest integration


@pytest.fixture(scope="session", autouse=True)
def leakcheck_session() -> Iterator[SecretRegistry]:
    """The session's registry; at the end, every artifact is scanned for every secret."""
    install()
    yield REGISTRY
    logging.getLogger().removeHandler(_LOG_HANDLER)
    REGISTRY.assert_no_leaks()


@pytest.fixture
def leak_registry(leakcheck_session: SecretRegistry) -> SecretRegistry:
    return leakcheck_session


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REGISTRY.artifact_count == 0:
        return
    leaks = REGISTRY.leaks()
    terminalreporter.write_line(
        f"leakcheck: {REGISTRY.secret_count} secrets looked for in "
        f"{REGISTRY.artifact_count} artifacts ({REGISTRY.artifact_chars} characters): "
        f"{len(leaks)} leaks"
    )
