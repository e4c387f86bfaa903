"""A workspace whose apply delivers to real stores: OpenBao's dev server, moto's Secrets
Manager and commands, through the real CLI against the real local API.

The ``stores`` fixture (tests/conftest.py) starts both servers once per module and
registers their credentials (the OpenBao root token, the AWS secret key) with the leak
scan, so every CLI output of the session is searched for them too.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.leaks import REGISTRY
from support.local_api import AUTH_HEADER, LocalApi
from support.moto import AWS_ENV, Moto
from support.openbao import OpenBao
from support.workspace import Workspace


@dataclass
class Stores:
    bao: OpenBao
    moto: Moto


class StoreWorkspace(Workspace):
    """manifests/, state/ and the environment of a deploy job that delivers to stores: a
    path of its own in each (``vault``, ``aws``), so tests never see each other's secrets."""

    def __init__(self, root: Path, api: LocalApi, stores: Stores) -> None:
        super().__init__(root, api)
        self.stores = stores
        self.prefix = "t" + secrets.token_hex(4)
        self.vault = f"vault://secret/{self.prefix}"
        self.aws = f"aws-sm://{self.prefix}"
        self.env.update(
            {
                **AWS_ENV,
                "AWS_CONFIG_FILE": str(root / "absent"),
                "AWS_SHARED_CREDENTIALS_FILE": str(root / "absent"),
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": stores.moto.url,
                "HOME": str(root),
                "VAULT_ADDR": stores.bao.url,
                "VAULT_TOKEN": stores.bao.root_token,
            }
        )

    def vault_document(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        kv = self.stores.bao.client().secrets.kv.v2
        try:
            answer = kv.read_secret_version(
                path=f"{self.prefix}/{name}", version=version, mount_point="secret",
                raise_on_deleted_version=True,
            )  # fmt: skip
        except Exception:  # hvac.exceptions.InvalidPath: no such secret
            return None
        document: dict[str, Any] = answer["data"]["data"]
        REGISTRY.add_secret(document.get("token"), f"token value in vault ({name})")
        return document

    def aws_document(self, name: str) -> dict[str, Any] | None:
        client = self.stores.moto.client()
        try:
            answer = client.get_secret_value(SecretId=f"{self.prefix}/{name}")
        except client.exceptions.ResourceNotFoundException:
            return None
        document: dict[str, Any] = json.loads(answer["SecretString"])
        REGISTRY.add_secret(document.get("token"), f"token value in aws ({name})")
        return document

    def authenticates(self, value: str) -> bool:
        with self.api.client(key=value) as client:
            answer = client.get("/api/v1/api_tokens", headers={AUTH_HEADER: value})
            return answer.status_code == 200

    def assert_converged_cleanly(self) -> None:
        """No owned token without its value, and no live token that state does not own.

        (A live token recorded as a pending create would be removed by the next apply; no
        test here leaves one, so none is tolerated.)"""
        owned = set(self.owned().values())
        for live in self.live():
            assert live.uid in owned, live
