"""deliver_all and check_all (reconciler.destinations.deliver): one value to all of its
destinations or to none, undone newest first; and real tokens of the local API delivered
to OpenBao, moto's Secrets Manager and a command at once."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from support.deliveries import error_text, new_delivery
from support.local_api import AUTH_HEADER, LocalApi
from support.moto import AWS_ENV, CLEARED_ENV, Moto
from support.openbao import OpenBao
from support.stores import Stores

from reconciler.api.client import ApiToken, ApiTokenAPI, RestClient
from reconciler.destinations.base import Delivery, Destination, Undo
from reconciler.destinations.deliver import check_all, deliver_all
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.file import FileDestination
from reconciler.destinations.parse import parse_destination
from reconciler.errors import DeliveryAbortedError, DeliveryFailedError, UndoFailedError


class Recorder:
    """A reversible destination that records deliveries and undos in a shared log."""

    irreversible = False

    def __init__(self, label: str, log: list[str], *, fail: bool = False) -> None:
        self.label, self.log, self.fail = label, log, fail

    def describe(self) -> str:
        return self.label

    def check(self, names: Collection[str] = ()) -> None:
        self.log.append(f"check {self.label}")

    def deliver(self, delivery: Delivery) -> Undo:
        if self.fail:
            raise DeliveryFailedError(self.label, "refused")
        self.log.append(f"deliver {self.label}")
        return lambda: self.log.append(f"undo {self.label}")


def test_commands_run_after_every_other_destination(tmp_path: Path) -> None:
    log: list[str] = []
    trail = tmp_path / "trail"
    command = ExecDestination(f"cat >/dev/null; echo exec >> {trail}")
    sink: dict[str, str] = {}

    class TrailedFile(FileDestination):
        def add(self, name: str, value: str) -> None:
            super().add(name, value)
            sink[name] = value
            with trail.open("a") as out:
                out.write("file\n")

    delivery = new_delivery()
    file = TrailedFile(tmp_path / "new.json")
    deliver_all([command, file, Recorder("store", log)], delivery)
    assert trail.read_text() == "file\nexec\n"
    assert log == ["deliver store"] and sink == {"ci-deployer": delivery.value}


def test_failure_undoes_the_others_newest_first_and_skips_commands(tmp_path: Path) -> None:
    log: list[str] = []
    ran = tmp_path / "ran"
    destinations = [
        ExecDestination(f"cat > /dev/null; touch {ran}"),
        Recorder("vault://secret/a", log),
        Recorder("aws-sm://b", log),
        Recorder("vault://secret/c", log, fail=True),
    ]
    delivery = new_delivery()
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(destinations, delivery)
    assert log == [
        "deliver vault://secret/a",
        "deliver aws-sm://b",
        "undo aws-sm://b",
        "undo vault://secret/a",
    ]
    assert not ran.exists()  # the command never ran, so nothing is beyond recall
    assert str(caught.value) == (
        "vault://secret/c: refused; put back: aws-sm://b, vault://secret/a"
    )


def test_second_command_failing_names_the_first_as_not_undoable(tmp_path: Path) -> None:
    log: list[str] = []
    delivery = new_delivery()
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(
            [ExecDestination("cat >/dev/null"), ExecDestination("exit 2"), Recorder("s", log)],
            delivery,
        )
    text = error_text(caught.value, delivery)
    assert text == (
        "exec:exit 2: exited with status 2; put back: s; "
        "already ran and cannot be undone: exec:cat >/dev/null"
    )


def test_an_undo_that_fails_is_named_and_the_rest_still_run() -> None:
    log: list[str] = []

    class Stuck(Recorder):
        def deliver(self, delivery: Delivery) -> Undo:
            def undo() -> None:
                raise UndoFailedError(self.label, "putting back: permission denied")

            return undo

    destinations = [Recorder("a", log), Stuck("b", log), Recorder("c", log, fail=True)]
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(destinations, new_delivery())
    assert log == ["deliver a", "undo a"]
    assert [str(e) for e in caught.value.undo_failures] == ["b: putting back: permission denied"]
    assert str(caught.value).endswith(
        "put back: a; could not be put back: b: putting back: permission denied"
    )


def test_an_unexpected_exception_still_undoes_and_propagates() -> None:
    log: list[str] = []

    class Broken(Recorder):
        def deliver(self, delivery: Delivery) -> Undo:
            raise KeyError("VersionId")

    with pytest.raises(KeyError):
        deliver_all([Recorder("a", log), Broken("b", log)], new_delivery())
    assert log == ["deliver a", "undo a"]


def test_check_all_checks_every_destination() -> None:
    log: list[str] = []
    check_all([Recorder("a", log), Recorder("b", log)], {"ci-deployer"})
    assert log == ["check a", "check b"]


# ---------------------------------------------------------------- real tokens to real stores


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
