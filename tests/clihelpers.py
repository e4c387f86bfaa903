"""Running the reconciler CLI from tests, isolated from the developer's own configuration.

- ``run_cli(*args, cwd=...)`` runs ``python -m reconciler`` as a real subprocess: the true
  entry point, exit codes, stdout/stderr and a stdin that is not a terminal. Use it for
  anything about output, exit codes or secrets (about 0.5 s per call).
- ``invoke_cli(*args, cwd=...)`` runs the same ``reconciler.cli.main`` in this process
  (click's CliRunner isolation): much faster, for setup steps and bulk checks.

Both clear ``BENTO_CLOUD_API_ENDPOINT``/``BENTO_CLOUD_API_KEY`` and point ``BENTOML_HOME`` at
a directory that does not exist, so only what a test passes is used; ``env`` adds or
overrides variables (a value of None removes one). Output is uncoloured (``NO_COLOR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.main import main

# Variables a developer's shell or CI may carry that would change what the CLI does.
_CLEARED = (
    "BENTO_CLOUD_API_ENDPOINT",
    "BENTO_CLOUD_API_KEY",
    "BENTOML_HOME",
    "GITHUB_STEP_SUMMARY",
)


@dataclass(frozen=True)
class CliResult:
    """What one CLI run produced."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr."""
        return self.stdout + self.stderr

    def __str__(self) -> str:
        # Shown by pytest when an assertion on the result fails.
        return (
            f"reconciler {' '.join(self.args)} -> exit {self.exit_code}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def cli_env(cwd: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """Overrides that isolate a run (see the module docstring), plus ``env``."""
    overrides: dict[str, str | None] = dict.fromkeys(_CLEARED)
    overrides["BENTOML_HOME"] = str(cwd / ".no-bentoml-home")
    overrides["NO_COLOR"] = "1"
    overrides.update(env or {})
    return overrides


def run_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> CliResult:
    """``python -m reconciler ARGS`` in ``cwd``; stdin is ``input`` or empty (never a tty)."""
    full_env = dict(os.environ)
    for key, value in cli_env(cwd, env).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=full_env,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(tuple(args), completed.returncode, completed.stdout, completed.stderr)


@contextmanager
def _chdir(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def invoke_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> CliResult:
    """``reconciler.cli.main(ARGS)`` in this process, in ``cwd``, with stdin ``input`` (not
    a tty). An exception that escapes main() (a bug: main turns errors into exit 1)
    propagates to the test."""
    runner = CliRunner()
    code = 0
    with _chdir(cwd), runner.isolation(input=input or "", env=cli_env(cwd, env)) as streams:
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        stdout = streams[0].getvalue().decode("utf-8", "replace")
        stderr = streams[1].getvalue().decode("utf-8", "replace")
    return CliResult(tuple(args), code, stdout, stderr)
