"""A GitOps workspace whose apply delivers to real stores: OpenBao's dev server, moto's
Secrets Manager and commands, through the real CLI against the real local API.

``stores`` starts both servers once per module and registers their credentials (the
OpenBao root token, the AWS secret key) with the leak scan, so every CLI output of the
session is searched for them too.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import AUTH_HEADER, LocalApi
from leakcheck import REGISTRY, CliResult, run_cli_subprocess
from openbao_server import OpenBao, start_openbao
from test_destinations_aws import AWS_ENV, CLEARED_ENV, Moto, start_moto

from reconciler.api.client import ApiToken, ApiTokenAPI, RestClient

CREATE_ROUTE = "POST /api/v1/api_tokens"


@dataclass
class Stores:
    bao: OpenBao
    moto: Moto


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    bao = start_openbao(tmp_path_factory.mktemp("openbao-cli"))
    REGISTRY.add_secret(bao.root_token, "vault token (VAULT_TOKEN)")
    REGISTRY.add_secret(AWS_ENV["AWS_SECRET_ACCESS_KEY"], "AWS secret access key")
    try:
        moto = start_moto(tmp_path_factory.mktemp("moto-cli"))
        try:
            yield Stores(bao, moto)
        finally:
            moto.stop()
    finally:
        bao.stop()


@pytest.fixture
def store_ws(
    stores: Stores, local_api: LocalApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StoreWorkspace:
    """A workspace on a fresh local API; the developer's AWS and Vault settings removed."""
    for name in (*CLEARED_ENV, "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    return StoreWorkspace(tmp_path / "ws", local_api, stores)


def token(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "scopes": ["api"], **extra}


class StoreWorkspace:
    """manifests/, state/ and the environment of a deploy job that delivers to stores."""

    def __init__(self, root: Path, api: LocalApi, stores: Stores) -> None:
        self.root = root
        self.api = api
        self.stores = stores
        self.state_path = root / "state" / "tokens.state.json"
        (root / "manifests").mkdir(parents=True)
        # A path of its own in each store, so tests never see each other's secrets.
        self.prefix = "t" + secrets.token_hex(4)
        self.vault = f"vault://secret/{self.prefix}"
        self.aws = f"aws-sm://{self.prefix}"
        self.env: dict[str, str] = {
            **AWS_ENV,
            "AWS_CONFIG_FILE": str(root / "absent"),
            "AWS_SHARED_CREDENTIALS_FILE": str(root / "absent"),
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": stores.moto.url,
            "HOME": str(root),
            "VAULT_ADDR": stores.bao.url,
            "VAULT_TOKEN": stores.bao.root_token,
        }

    def declare(self, *tokens: dict[str, Any]) -> None:
        text = yaml.safe_dump({"tokens": list(tokens)}, sort_keys=False)
        (self.root / "manifests" / "tokens.yaml").write_text(text, encoding="utf-8")

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        connection = ["--endpoint", self.api.url, "--api-key", self.api.admin_key]
        connection += ["--state", str(self.state_path)]
        full = {**self.env, **(env or {})}
        return run_cli_subprocess(*connection, *args, home=self.root, env=full, timeout=timeout)

    def apply(self, *destinations: str, extra: tuple[str, ...] = (), **kwargs: Any) -> CliResult:
        args = ["apply", "--auto-approve", *extra]
        for destination in destinations:
            args += ["--secrets-out", destination]
        return self.run(*args, **kwargs)

    def owned(self) -> dict[str, str]:
        if not self.state_path.exists():
            return {}
        data = json.loads(self.state_path.read_text(encoding="utf-8"))
        return {item["name"]: item["uid"] for item in data["tokens"]}

    def pending(self) -> list[str]:
        if not self.state_path.exists():
            return []
        data = json.loads(self.state_path.read_text(encoding="utf-8"))
        return [item["name"] for item in data.get("pending", [])]

    def live(self) -> list[ApiToken]:
        client = RestClient(endpoint=self.api.url, api_key=self.api.admin_key)
        try:
            return ApiTokenAPI(client).list()
        finally:
            client.close()

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
        """No owned token without its value, no live token that is neither owned nor
        recorded as a pending create (which the next apply removes)."""
        owned = set(self.owned().values())
        pending = set(self.pending())
        for live in self.live():
            assert live.uid in owned or live.name in pending, live
