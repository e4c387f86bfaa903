"""``exec:COMMAND``: a command run once per new value, the value on its standard input.

COMMAND runs under ``/bin/sh -c`` with the value on stdin (no newline added) and
``RECONCILER_TOKEN_NAME``, ``RECONCILER_TOKEN_LIVE_NAME``, ``RECONCILER_TOKEN_UID`` and
``RECONCILER_TOKEN_EXPIRES_AT`` (empty for never) in its environment (reconciler's own,
without ``BENTO_CLOUD_API_KEY``); exit status 0
means delivered. It runs in its own process group, killed whole when it outlives the
timeout. Its output (stdout and stderr together) is passed on with the value masked. A
command cannot be undone, so deliver_all runs these after every other destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Collection

from reconciler.api.settings import ENV_API_KEY
from reconciler.defaults import EXEC_TIMEOUT_SECONDS
from reconciler.destinations.base import Delivery, Undo, no_undo
from reconciler.errors import DeliveryFailedError, DestinationCheckError, redact
from reconciler.util.text import one_line

SHELL = "/bin/sh"
_OUTPUT_LIMIT = 64 * 1024
_LOG = logging.getLogger("reconciler.destinations.exec")


def _log_output(text: str) -> None:
    for line in text.splitlines():
        _LOG.info("%s", line)


class ExecDestination:
    """Runs COMMAND per value. ``on_output`` receives its masked output (default: the
    ``reconciler.destinations.exec`` logger at INFO, one record per line)."""

    irreversible = True

    def __init__(
        self,
        command: str,
        *,
        timeout: float = EXEC_TIMEOUT_SECONDS,
        on_output: Callable[[str], None] | None = None,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.on_output = on_output or _log_output
        self.last_output = ""

    def describe(self) -> str:
        return f"exec:{self.command}"

    def __repr__(self) -> str:
        return f"ExecDestination({self.command!r})"

    def check(self, names: Collection[str] = ()) -> None:
        """The shell parses COMMAND without running it (``sh -n``)."""
        try:
            parsed = subprocess.run(
                [SHELL, "-n", "-c", self.command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DestinationCheckError(self.describe(), f"cannot run {SHELL} ({exc})") from None
        if parsed.returncode != 0:
            said = one_line(parsed.stderr.decode("utf-8", "replace")) or "syntax error"
            raise DestinationCheckError(
                self.describe(), f"{SHELL} cannot parse the command: {said}"
            )

    def forget(self, name: str) -> None:
        """A command cannot be asked to take a value back."""

    def deliver(self, delivery: Delivery) -> Undo:
        output, status = self._run(delivery)
        # Masked before it is shortened, so a cut can never leave part of the value.
        masked = redact(output, (delivery.value,))[-_OUTPUT_LIMIT:]
        self.last_output = masked
        if masked:
            self.on_output(masked)
        if status is None:
            raise DeliveryFailedError(
                self.describe(),
                f"did not finish within {self.timeout:g} s; its process group was killed",
            )
        if status != 0:
            last = next((line for line in reversed(masked.splitlines()) if line.strip()), "")
            said = f": {one_line(last)}" if last else ""
            raise DeliveryFailedError(self.describe(), f"exited with status {status}{said}")
        return no_undo

    def _run(self, delivery: Delivery) -> tuple[str, int | None]:
        """(output, exit status), the status None when the command timed out."""
        env = {
            # The BentoCloud API key stays with reconciler: a delivery command never needs it.
            **{k: v for k, v in os.environ.items() if k != ENV_API_KEY},
            "RECONCILER_TOKEN_NAME": delivery.name,
            "RECONCILER_TOKEN_LIVE_NAME": delivery.live_name,
            "RECONCILER_TOKEN_UID": delivery.uid,
            "RECONCILER_TOKEN_EXPIRES_AT": delivery.expires_at or "",
        }
        try:
            child = subprocess.Popen(
                [SHELL, "-c", self.command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise DeliveryFailedError(self.describe(), f"cannot run {SHELL} ({exc})") from None
        status: int | None
        try:
            out, _ = child.communicate(delivery.value.encode("utf-8"), timeout=self.timeout)
            status = child.returncode
        except subprocess.TimeoutExpired:
            _kill_group(child.pid)
            try:
                out, _ = child.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a descendant escaped the group and holds stdout
                child.kill()
                out = b""
            status = None
        return out.decode("utf-8", "replace"), status


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
