"""Secrets-leak harness: every secret the test session sees, and every text it must not be in.

A session-wide ``REGISTRY`` collects

- secrets: every token value and admin key the in-process local API generates (its value
  factories are wrapped at import), every value found in a secrets sink file a test
  registers, any API key a test registers, and the secret-store credentials
  (``VAULT_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) in the environment of
  every CLI run made through the runners below;
- artifacts: stdout, stderr and exception text (with traceback) of every CLI run made with
  ``run_cli`` / ``run_cli_subprocess`` / ``CliProcess``, every log record of reconciler,
  httpx, httpcore or uvicorn at any level during the whole session, and every state, plan or
  backup file a test records.

``REGISTRY.leaks()`` finds every secret inside every artifact (a secret registered late is
still looked for in artifacts recorded early). ``tests/conftest.py`` imports the session
fixture ``leakcheck_session``, whose teardown fails the session when anything leaked, and
``pytest_terminal_summary``, which prints how much was scanned.

The CLI runners are here too because they are what feeds the artifacts: a CLI run made
through them is scanned without the test doing anything more.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

# Secrets made by the local API and by `secrets.token_urlsafe` use only these characters,
# so a scan can cut texts into runs of them and look each run (and its substrings of a
# secret's length) up in a set, instead of searching every text for every secret.
_RUN = re.compile(r"[A-Za-z0-9_\-]{12,}")
_URLSAFE = re.compile(r"^[A-Za-z0-9_\-]+$")
_WATCHED_LOGGERS = ("reconciler", "httpx", "httpcore", "uvicorn", "starlette", "fastapi")
# Environment a developer's shell may carry that would change what the CLI does.
_CLEARED_ENV = ("BENTO_CLOUD_API_ENDPOINT", "BENTO_CLOUD_API_KEY", "GITHUB_STEP_SUMMARY")


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
        """Record a file's content (state, backup, plan, lock); a missing file is skipped."""
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


# ---------------------------------------------------------------- running the CLI


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:
        return (
            f"reconciler {' '.join(self.args)} -> exit {self.code} in {self.seconds:.2f}s\n"
            f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}"
        )


def _record_result(result: CliResult) -> CliResult:
    label = f"reconciler {' '.join(result.args)[:120]}"
    REGISTRY.record(f"stdout of {label}", result.out)
    REGISTRY.record(f"stderr of {label}", result.err)
    return result


def cli_environment(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without reconciler's connection variables and with BentoML's config
    directory pointing nowhere, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    full["BENTOML_HOME"] = str(home / ".no-bentoml-home")
    full["NO_COLOR"] = "1"
    full.update(env or {})
    register_store_credentials(full)
    return full


@contextlib.contextmanager
def _isolated_environ(home: Path, env: Mapping[str, str] | None) -> Iterator[None]:
    keys = {*_CLEARED_ENV, "BENTOML_HOME", "NO_COLOR", *(env or {})}
    saved = {key: os.environ.get(key) for key in keys}
    for key in _CLEARED_ENV:
        os.environ.pop(key, None)
    os.environ["BENTOML_HOME"] = str(home / ".no-bentoml-home")
    os.environ["NO_COLOR"] = "1"
    os.environ.update(env or {})
    register_store_credentials(os.environ)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(*args: str, home: Path, env: Mapping[str, str] | None = None) -> CliResult:
    """``reconciler.cli.main(args)`` in this process, stdout and stderr captured; an
    exception escaping main (``-vv`` re-raises) becomes its traceback on stderr and exit 1,
    as the interpreter would print it. Everything is recorded for the leak scan."""
    from reconciler.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    level = logging.getLogger("reconciler").level
    code = 0
    started = time.monotonic()
    with (
        _isolated_environ(home, env),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            err.write(traceback.format_exc())
            code = 1
        finally:
            logging.getLogger("reconciler").setLevel(level)
    return _record_result(
        CliResult(tuple(args), code, out.getvalue(), err.getvalue(), time.monotonic() - started)
    )


def _command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def run_cli_subprocess(
    *args: str, home: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """``python -m reconciler ARGS`` as a real process (stdin not a terminal), recorded."""
    started = time.monotonic()
    done = subprocess.run(
        _command(args),
        cwd=home,
        env=cli_environment(home, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return _record_result(
        CliResult(
            tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started
        )
    )


class CliProcess:
    """A CLI run in the background, to be signalled or killed; output collected by threads
    so that a full pipe never blocks it."""

    def __init__(self, *args: str, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.args = tuple(args)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            _command(args),
            cwd=home,
            env=cli_environment(home, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._lines = threading.Condition()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._lines:
                into.append(line)
                self._lines.notify_all()
        stream.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_output(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Wait until a stdout line satisfies ``predicate`` (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._lines:
            while True:
                if any(predicate(line) for line in self._out):
                    return True
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lines.wait(min(remaining, 0.05))

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 60) -> CliResult:
        """Wait for the exit; returns the result (recorded for the leak scan)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for reader in self._readers:
            reader.join(10)
        return _record_result(
            CliResult(
                self.args,
                code,
                "".join(self._out),
                "".join(self._err),
                time.monotonic() - self.started,
            )
        )
