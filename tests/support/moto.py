"""moto's server as a real process on 127.0.0.1 (``support/scripts/moto_server.py``), for S3 state
and Secrets Manager destinations, and the AWS environment the Secrets Manager tests use.

One server speaks every AWS service; a test says which one its clients talk to by
default (``service``) and with which credentials (``aws_env``). Set
INITIAL_NO_AUTH_ACTION_COUNT in ``server_env`` to make it enforce IAM after that many
requests.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from support.ports import free_port

# In a folder of its own: run as a script, its folder comes first on sys.path, where this
# module would hide the moto package.
SCRIPT = Path(__file__).parent / "scripts" / "moto_server.py"
REGION = "us-east-1"
# Credentials of the Secrets Manager tests: random, so that the leak scan can look for
# the secret key in every output.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
    "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Variables a developer's shell or CI may carry that would send boto3 elsewhere.
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@dataclass
class Moto:
    """A running moto server: its URL, and clients of it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    service: str
    aws_env: Mapping[str, str] = field(default_factory=dict)

    def client(self, service: str | None = None, **keys: str) -> Any:
        """A boto3 client of ``service`` (default: the server's), with the credentials of
        ``aws_env`` unless ``key``/``secret`` are given."""
        return boto3.session.Session().client(
            service or self.service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=keys.get("key", self.aws_env["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key=keys.get("secret", self.aws_env["AWS_SECRET_ACCESS_KEY"]),
        )

    def iam(self) -> Any:
        return self.client("iam")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def start_moto(
    directory: Path, aws_env: Mapping[str, str], *, service: str, **server_env: str
) -> Moto:
    """moto's server in its own process, its output in a log under ``directory``; returns
    once it accepts connections. A bare connection is the readiness check: a request would
    count against INITIAL_NO_AUTH_ACTION_COUNT."""
    port = free_port()
    log = directory / f"moto-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "127.0.0.1", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **aws_env, **server_env},
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=30)
                raise RuntimeError(f"moto did not start:\n{log.read_text()}") from None
            time.sleep(0.05)
    return Moto(f"http://127.0.0.1:{port}", process, log, service, dict(aws_env))


@dataclass
class AuthMoto:
    """A Secrets Manager on a moto server enforcing IAM: a writer and a user with no policy."""

    server: Moto
    writer: dict[str, str]
    nobody: dict[str, str]
