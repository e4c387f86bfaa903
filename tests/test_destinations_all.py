"""Real tokens of the local API delivered to OpenBao, moto's Secrets Manager and a command
at once: every copy read back authenticates, and a rotation keeps the old one previous."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.local_api import AUTH_HEADER, LocalApi
from support.moto import AWS_ENV, CLEARED_ENV, Moto
from support.openbao import OpenBao
from support.stores import Stores

from reconciler.api.client import ApiToken, ApiTokenAPI, RestClient
from reconciler.destinations import (
    Delivery,
    Destination,
    check_all,
    deliver_all,
    parse_destination,
)


@pytest.fixture
def env(stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[OpenBao, Moto]:
    bao, moto = stores.bao, stores.moto
    for name in (*CLEARED_ENV, "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    return bao, moto


def create(local_api: LocalApi, name: str) -> ApiToken:
    client = RestClient(endpoint=local_api.url, api_key=local_api.admin_key)
    try:
        return ApiTokenAPI(client).create(name, description="delivered to stores")
    finally:
        client.close()


def delivery_of(token: ApiToken, name: str) -> Delivery:
    assert token.token is not None
    expires = token.expired_at.isoformat() if token.expired_at else None
    return Delivery(
        name=name, live_name=token.name, uid=token.uid, expires_at=expires, value=token.token
    )


def authenticates(local_api: LocalApi, value: str) -> bool:
    with local_api.client(key=value) as client:
        # /auth/current answers any live token (listing tokens needs the api scope).
        return client.get("/api/v1/auth/current", headers={AUTH_HEADER: value}).status_code == 200


def stored(bao: OpenBao, moto: Moto, exec_out: Path, version: str) -> list[dict[str, Any]]:
    """The document in each store: current, or (version="previous") the one before."""
    kv = bao.client().secrets.kv.v2
    current = kv.read_secret_version(path="bentocloud/ci-deployer", mount_point="secret",
                                     raise_on_deleted_version=True)["data"]  # fmt: skip
    number = current["metadata"]["version"] - (1 if version == "previous" else 0)
    vault = kv.read_secret_version(path="bentocloud/ci-deployer", version=number,
                                   mount_point="secret", raise_on_deleted_version=True)  # fmt: skip
    stage = "AWSPREVIOUS" if version == "previous" else "AWSCURRENT"
    aws = moto.client().get_secret_value(SecretId="bentocloud/ci-deployer", VersionStage=stage)
    documents = [vault["data"]["data"], json.loads(aws["SecretString"])]
    if version == "current":
        documents.append({"token": exec_out.read_text()})
    return documents


def test_delivered_values_authenticate_and_a_rotation_keeps_the_previous(
    env: tuple[OpenBao, Moto], local_api: LocalApi, tmp_path: Path
) -> None:
    bao, moto = env
    out = tmp_path / "exec-copy"
    destinations: list[Destination] = [
        parse_destination(f"exec:cat > {out}"),  # given first, run last
        parse_destination("vault://secret/bentocloud"),
        parse_destination("aws-sm://bentocloud"),
    ]
    check_all(destinations, {"ci-deployer"})

    assert not authenticates(local_api, "rct_" + "x" * 43)  # the API does check
    first = create(local_api, "ci-deployer")
    deliver_all(destinations, delivery_of(first, "ci-deployer"))
    for document in stored(bao, moto, out, "current"):
        assert document["token"] == first.token
        assert authenticates(local_api, document["token"])

    second = create(local_api, "ci-deployer-g2")
    deliver_all(destinations, delivery_of(second, "ci-deployer"))
    for document in stored(bao, moto, out, "current"):
        assert document["token"] == second.token
        assert authenticates(local_api, document["token"])
    previous = stored(bao, moto, out, "previous")
    assert [d["token"] for d in previous] == [first.token, first.token]
    assert [d["live_name"] for d in previous] == ["ci-deployer", "ci-deployer"]
    assert all(authenticates(local_api, d["token"]) for d in previous)  # until it is retired
