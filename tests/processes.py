"""Servers the tests run as real processes on 127.0.0.1: a free port, and moto's server
(tests/moto_server.py) started and waited for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def launch_moto(
    directory: Path, env: Mapping[str, str]
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """moto's server in its own process, its output in a log under ``directory``; returns
    (url, process, log) once it accepts connections. A bare connection is the readiness
    check: a request would count against INITIAL_NO_AUTH_ACTION_COUNT."""
    port = free_port()
    log = directory / f"moto-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(TESTS / "moto_server.py"), "127.0.0.1", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}", process, log
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=30)
                raise RuntimeError(f"moto did not start:\n{log.read_text()}") from None
            time.sleep(0.05)
