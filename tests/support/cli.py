"""Running the reconciler CLI from tests, isolated from the developer's own configuration.

- ``run_cli(*args, cwd=...)`` runs ``reconciler.cli.main`` in this process (click's
  CliRunner isolation): much faster, for setup steps, bulk checks and scenarios of many runs.
- ``run_cli_subprocess(*args, cwd=...)`` runs ``python -m reconciler`` as a real process:
  the true entry point, exit codes, stdout/stderr and a stdin that is not a terminal. Use
  it for anything about output, exit codes or secrets (about 0.5 s per call).
- ``start_cli`` starts that process without waiting (to signal it, or to race it), and
  ``CliProcess`` does so while collecting its output.

Every run happens in ``cwd``, without ``BENTO_CLOUD_API_ENDPOINT``/``BENTO_CLOUD_API_KEY``/
``GITHUB_STEP_SUMMARY`` and with ``BENTOML_HOME`` pointing at ``cwd/.no-bentoml-home`` (which
a test may create to give BentoML's config file), so only what a test passes is used;
``env`` adds or overrides variables (a value of None removes one). Output is uncoloured
(``NO_COLOR``). Every run's output is recorded for the session's leak scan, and the store
credentials in its environment are added to the secrets looked for (support.leaks).
"""

from __future__ import annotations

import contextlib
import logging
import os
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

from click.testing import CliRunner

from support.leaks import REGISTRY, register_store_credentials

# Variables a developer's shell or CI may carry that would change what the CLI does.
_CLEARED = (
    "BENTO_CLOUD_API_ENDPOINT",
    "BENTO_CLOUD_API_KEY",
    "BENTOML_HOME",
    "GITHUB_STEP_SUMMARY",
)

Env = Mapping[str, str | None]


@dataclass(frozen=True)
class CliResult:
    """What one CLI run produced."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def output(self) -> str:
        """stdout then stderr."""
        return self.stdout + self.stderr

    # The suites were written against two runners that spelled these differently; the
    # short names stay so that no assertion had to be rewritten when the runners merged.
    @property
    def code(self) -> int:
        return self.exit_code

    @property
    def out(self) -> str:
        return self.stdout

    @property
    def err(self) -> str:
        return self.stderr

    @property
    def text(self) -> str:
        return self.output

    def __str__(self) -> str:
        # Shown by pytest when an assertion on the result fails.
        return (
            f"reconciler {' '.join(self.args)} -> exit {self.exit_code} in {self.seconds:.2f}s\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def cli_env(cwd: Path, env: Env | None = None) -> dict[str, str | None]:
    """Overrides that isolate a run (see the module docstring), plus ``env``."""
    overrides: dict[str, str | None] = dict.fromkeys(_CLEARED)
    overrides["BENTOML_HOME"] = str(cwd / ".no-bentoml-home")
    overrides["NO_COLOR"] = "1"
    overrides.update(env or {})
    return overrides


def cli_environment(cwd: Path, env: Env | None = None) -> dict[str, str]:
    """The whole environment of a CLI process run in ``cwd``: this one's, isolated."""
    full = dict(os.environ)
    for key, value in cli_env(cwd, env).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    register_store_credentials(full)
    return full


def _recorded(result: CliResult) -> CliResult:
    label = f"reconciler {' '.join(result.args)[:120]}"
    REGISTRY.record(f"stdout of {label}", result.stdout)
    REGISTRY.record(f"stderr of {label}", result.stderr)
    return result


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_cli(*args: str, cwd: Path, env: Env | None = None, input: str | None = None) -> CliResult:
    """``reconciler.cli.main(ARGS)`` in this process, in ``cwd``, with stdin ``input`` (not a
    tty). An exception escaping main (``-vv`` re-raises) becomes its traceback on stderr and
    exit 1, as the interpreter would print it."""
    from reconciler.cli.main import main

    runner = CliRunner()
    level = logging.getLogger("reconciler").level
    code = 0
    started = time.monotonic()
    with _chdir(cwd), runner.isolation(input=input or "", env=cli_env(cwd, env)) as streams:
        register_store_credentials(os.environ)
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            sys.stderr.write(traceback.format_exc())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # -v and -vv set reconciler's level for the rest of the process.
            logging.getLogger("reconciler").setLevel(level)
        stdout = streams[0].getvalue().decode("utf-8", "replace")
        stderr = streams[1].getvalue().decode("utf-8", "replace")
    return _recorded(CliResult(tuple(args), code, stdout, stderr, time.monotonic() - started))


def _command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def run_cli_subprocess(
    *args: str,
    cwd: Path,
    env: Env | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> CliResult:
    """``python -m reconciler ARGS`` in ``cwd``; stdin is ``input`` or empty (never a tty)."""
    started = time.monotonic()
    done = subprocess.run(
        _command(args),
        cwd=cwd,
        env=cli_environment(cwd, env),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return _recorded(
        CliResult(
            tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started
        )
    )


def start_cli(*args: str, cwd: Path, env: Env | None = None, **popen: Any) -> subprocess.Popen[str]:
    """``python -m reconciler ARGS`` started in the background, stdin not a terminal and
    stdout/stderr piped as text unless ``popen`` says otherwise."""
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
        **popen,
    }
    return subprocess.Popen(_command(args), cwd=cwd, env=cli_environment(cwd, env), **options)


class CliProcess:
    """A CLI run in the background, to be signalled or killed; output collected by threads
    so that a full pipe never blocks it."""

    def __init__(self, *args: str, cwd: Path, env: Env | None = None) -> None:
        self.args = tuple(args)
        self.started = time.monotonic()
        self.proc = start_cli(*args, cwd=cwd, env=env, bufsize=1)
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
        return _recorded(
            CliResult(
                self.args,
                code,
                "".join(self._out),
                "".join(self._err),
                time.monotonic() - self.started,
            )
        )
