"""vault:// destinations against a real OpenBao dev server started by the tests.

Delivery writes a readable KV v2 secret, a second delivery keeps the first as the previous
version, check() stops a wrong token, a denied policy, a missing or non-KV-v2 mount and an
unreachable server before anything is written, and a failure in a later destination puts
the secret back (previous version current again, or the new secret removed).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from support.leaks import REGISTRY
from support.openbao import OpenBao, start_openbao
from support.ports import free_port

from reconciler.destinations.base import Delivery
from reconciler.destinations.deliver import deliver_all
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.parse import parse_destination
from reconciler.destinations.vault import VaultDestination, VaultSettings
from reconciler.errors import (
    DeliveryAbortedError,
    DeliveryFailedError,
    DestinationCheckError,
    DestinationError,
)

VAULT_VARIABLES = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH")


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    REGISTRY.add_secret(server.root_token, "vault-root-token")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def vault_env(openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the vault CLI reads, pointing at the dev server; no ~/.vault-token."""
    for name in VAULT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VAULT_ADDR", openbao.url)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)


def new_delivery(name: str = "ci-deployer", expires_at: str | None = None) -> Delivery:
    value = "rct_" + secrets.token_urlsafe(32)
    REGISTRY.add_secret(value, "destination-test-value")
    uid = "tok_" + secrets.token_hex(10)
    return Delivery(name=name, live_name=name, uid=uid, expires_at=expires_at, value=value)


def unique_path() -> str:
    return f"bentocloud/{uuid.uuid4().hex[:12]}"


def read(openbao: OpenBao, path: str, version: int | None = None) -> dict[str, Any]:
    answer = openbao.client().secrets.kv.v2.read_secret_version(
        path=path, version=version, mount_point="secret", raise_on_deleted_version=True
    )
    return dict(answer["data"])


def assert_secret_free(exc: BaseException, *values: str) -> str:
    text = str(exc)
    REGISTRY.record("destination error", text)
    for value in values:
        assert value not in text
    return text


def limited_token(openbao: OpenBao, policy: str) -> str:
    client = openbao.client()
    name = f"p-{uuid.uuid4().hex[:8]}"
    client.sys.create_or_update_policy(name, policy)
    token: str = client.auth.token.create(policies=[name], no_default_policy=False)["auth"][
        "client_token"
    ]
    REGISTRY.add_secret(token, "vault-limited-token")
    return token


# ---------------------------------------------------------------------------- delivery


def test_delivery_writes_every_field_readable_at_path_slash_name(openbao: OpenBao) -> None:
    path = unique_path()
    destination = parse_destination(f"vault://secret/{path}")
    assert isinstance(destination, VaultDestination)
    delivery = new_delivery(expires_at="2027-01-01T00:00:00Z")
    destination.check({delivery.name})
    destination.deliver(delivery)
    stored = read(openbao, f"{path}/ci-deployer")
    assert stored["data"] == {
        "token": delivery.value,
        "name": "ci-deployer",
        "live_name": "ci-deployer",
        "uid": delivery.uid,
        "expires_at": "2027-01-01T00:00:00Z",
    }
    assert stored["metadata"]["version"] == 1


def test_name_placeholder_places_the_secret_inside_the_path(openbao: OpenBao) -> None:
    base = unique_path()
    destination = parse_destination(f"vault://secret/{base}/{{name}}/api")
    delivery = new_delivery("billing")
    destination.deliver(delivery)
    assert read(openbao, f"{base}/billing/api")["data"]["token"] == delivery.value
    assert read(openbao, f"{base}/billing/api")["data"]["expires_at"] is None


def test_second_delivery_is_current_and_first_is_previous_version(openbao: OpenBao) -> None:
    path = unique_path()
    destination = parse_destination(f"vault://secret/{path}")
    first, second = new_delivery(), new_delivery()
    destination.deliver(first)
    destination.deliver(second)
    current = read(openbao, f"{path}/ci-deployer")
    assert current["data"]["token"] == second.value
    assert current["metadata"]["version"] == 2
    assert read(openbao, f"{path}/ci-deployer", version=1)["data"]["token"] == first.value


def test_namespace_comes_from_vault_namespace(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"team-{uuid.uuid4().hex[:6]}"
    root = openbao.client()
    root.adapter.post(f"/v1/sys/namespaces/{namespace}")
    inside = openbao.client(namespace=namespace)
    inside.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    monkeypatch.setenv("VAULT_NAMESPACE", namespace)
    destination = parse_destination("vault://kv/bentocloud")
    assert f"namespace {namespace}" in destination.describe()
    delivery = new_delivery()
    destination.check({delivery.name})
    destination.deliver(delivery)
    stored = inside.secrets.kv.v2.read_secret_version(
        path="bentocloud/ci-deployer", mount_point="kv", raise_on_deleted_version=True
    )
    assert stored["data"]["data"]["token"] == delivery.value
    monkeypatch.delenv("VAULT_NAMESPACE")  # the same mount is not in the root namespace
    with pytest.raises(DestinationCheckError, match="no mount kv/"):
        parse_destination("vault://kv/bentocloud").check({delivery.name})


def test_https_server_needs_vault_cacert(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_openbao(tmp_path_factory.mktemp("openbao-tls"), tls=True)
    REGISTRY.add_secret(server.root_token, "vault-root-token")
    try:
        monkeypatch.setenv("VAULT_ADDR", server.url)
        monkeypatch.setenv("VAULT_TOKEN", server.root_token)
        with pytest.raises(DestinationCheckError, match="TLS verification failed; set VAULT_CA"):
            parse_destination("vault://secret/bentocloud").check({"ci-deployer"})
        assert server.ca_cert is not None
        monkeypatch.setenv("VAULT_CACERT", str(server.ca_cert))
        destination = parse_destination("vault://secret/bentocloud")
        destination.check({"ci-deployer"})
        delivery = new_delivery()
        destination.deliver(delivery)
        assert read(server, "bentocloud/ci-deployer")["data"]["token"] == delivery.value
    finally:
        server.stop()


def test_describe_names_address_but_no_token(openbao: OpenBao) -> None:
    destination = parse_destination("vault://secret/bentocloud")
    text = destination.describe()
    assert text.startswith("vault://secret/bentocloud") and openbao.url in text
    assert openbao.root_token not in text and openbao.root_token not in repr(destination)


# ---------------------------------------------------------------------------- check


def test_wrong_token_fails_check(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "s." + secrets.token_urlsafe(24)
    REGISTRY.add_secret(wrong, "vault-wrong-token")
    monkeypatch.setenv("VAULT_TOKEN", wrong)
    destination = parse_destination(f"vault://secret/{unique_path()}")
    with pytest.raises(DestinationCheckError) as caught:
        destination.check({"ci-deployer"})
    text = assert_secret_free(caught.value, wrong, openbao.root_token)
    assert text.startswith("vault://secret/") and "permission denied" in text
    assert "check VAULT_TOKEN" in text


def test_no_token_at_all_fails_check_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN")
    with pytest.raises(DestinationCheckError, match="no Vault token; set VAULT_TOKEN"):
        parse_destination("vault://secret/bentocloud").check()


def test_token_file_of_vault_login_is_used(
    openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_TOKEN")
    (tmp_path / ".vault-token").write_text(openbao.root_token + "\n")
    parse_destination("vault://secret/bentocloud").check({"ci-deployer"})


def test_denied_policy_fails_check_but_allowed_path_passes(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = unique_path()
    token = limited_token(
        openbao,
        f'path "secret/data/{allowed}/*" {{ capabilities = ["create", "update", "read"] }}',
    )
    monkeypatch.setenv("VAULT_TOKEN", token)
    parse_destination(f"vault://secret/{allowed}").check({"ci-deployer"})
    denied = parse_destination(f"vault://secret/{unique_path()}")
    with pytest.raises(DestinationCheckError) as caught:
        denied.check({"ci-deployer"})
    text = assert_secret_free(caught.value, token, openbao.root_token)
    assert "do not allow create and update on secret/data/bentocloud/" in text
    assert "allowed: deny" in text and 'capabilities = ["create", "update", "read"]' in text


def test_read_only_policy_fails_check(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    path = unique_path()
    token = limited_token(openbao, f'path "secret/data/{path}/*" {{ capabilities = ["read"] }}')
    monkeypatch.setenv("VAULT_TOKEN", token)
    with pytest.raises(DestinationCheckError, match=r"allowed: read\)"):
        parse_destination(f"vault://secret/{path}").check({"ci-deployer"})


def test_missing_mount_fails_check_even_for_root() -> None:
    with pytest.raises(DestinationCheckError) as caught:
        parse_destination("vault://no-such-mount/bentocloud").check({"ci-deployer"})
    assert "no mount no-such-mount/ that this token can use" in str(caught.value)


def test_kv_version_1_mount_fails_check(openbao: OpenBao) -> None:
    mount = f"kv1-{uuid.uuid4().hex[:6]}"
    openbao.client().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    with pytest.raises(DestinationCheckError, match=r"is a kv mount \(version 1\), not KV ver"):
        parse_destination(f"vault://{mount}/bentocloud").check({"ci-deployer"})


def test_unreachable_server_fails_check(monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("VAULT_ADDR", address)
    with pytest.raises(DestinationCheckError, match=f"cannot reach {address}") as caught:
        parse_destination("vault://secret/bentocloud").check()
    assert "VAULT_TOKEN" not in str(caught.value)


# ---------------------------------------------------------------------------- undo


def failing_exec() -> ExecDestination:
    return ExecDestination("cat >/dev/null; echo 'store is down' >&2; exit 7")


def test_failure_after_vault_makes_previous_version_current_again(openbao: OpenBao) -> None:
    path = unique_path()
    vault = parse_destination(f"vault://secret/{path}")
    first, second = new_delivery(), new_delivery()
    vault.deliver(first)
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all([failing_exec(), vault], second)
    text = assert_secret_free(caught.value, second.value, first.value, openbao.root_token)
    assert text.startswith("exec:") and "exited with status 7: store is down" in text
    assert f"put back: vault://secret/{path}" in text
    current = read(openbao, f"{path}/ci-deployer")
    assert current["data"]["token"] == first.value
    assert current["data"]["uid"] == first.uid
    assert current["metadata"]["version"] == 3  # 1 first, 2 second, 3 first written back


def test_failure_after_vault_removes_a_secret_it_created(openbao: OpenBao) -> None:
    path = unique_path()
    vault = parse_destination(f"vault://secret/{path}")
    with pytest.raises(DeliveryAbortedError):
        deliver_all([vault, failing_exec()], new_delivery())
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.client().secrets.kv.v2.read_secret_metadata(
            path=f"{path}/ci-deployer", mount_point="secret"
        )


def test_write_refused_by_second_vault_rolls_back_the_first(openbao: OpenBao) -> None:
    """Two stores, the second refusing the write after its check was skipped: the real
    Vault refusal is the error, and the first store holds its previous version again."""
    good_path, bad_path = unique_path(), unique_path()
    token = limited_token(
        openbao, f'path "secret/data/{good_path}/*" {{ capabilities = ["create", "update"] }}'
    )
    root = VaultSettings.from_env()
    limited = VaultSettings(addr=root.addr, token=token, namespace=None, verify=True)
    first = VaultDestination("secret", good_path, settings=root)
    second = VaultDestination("secret", bad_path, settings=limited)
    old, new = new_delivery(), new_delivery()
    first.deliver(old)
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all([first, second], new)
    text = assert_secret_free(caught.value, token, openbao.root_token, new.value, old.value)
    assert isinstance(caught.value.failure, DeliveryFailedError)
    assert text.startswith(f"vault://secret/{bad_path}") and "permission denied" in text
    assert caught.value.undone == [first.describe()]
    assert read(openbao, f"{good_path}/ci-deployer")["data"]["token"] == old.value


def test_undo_after_a_deleted_version_leaves_the_secret_deleted(openbao: OpenBao) -> None:
    """Someone had deleted the current version: undone, the secret reads as deleted again
    rather than showing the value of a token that is about to be deleted."""
    path = unique_path()
    vault = VaultDestination("secret", path)
    vault.deliver(new_delivery())
    kv = openbao.client().secrets.kv.v2
    kv.delete_latest_version_of_secret(path=f"{path}/ci-deployer", mount_point="secret")
    with pytest.raises(DeliveryAbortedError):
        deliver_all([vault, failing_exec()], new_delivery())
    answer = kv.read_secret_version(
        path=f"{path}/ci-deployer", mount_point="secret", raise_on_deleted_version=False
    )
    assert answer["data"]["data"] is None and answer["data"]["metadata"]["version"] == 2


def test_undo_refuses_to_overwrite_a_newer_write(openbao: OpenBao) -> None:
    """Check-and-set: a value someone wrote after ours is never replaced by the undo."""
    path = unique_path()
    vault = VaultDestination("secret", path)
    vault.deliver(new_delivery())
    undo = vault.deliver(new_delivery())
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{path}/ci-deployer", secret={"token": "someone-else"}, mount_point="secret"
    )
    with pytest.raises(DestinationError, match="check-and-set"):
        undo()
    assert read(openbao, f"{path}/ci-deployer")["data"] == {"token": "someone-else"}


def test_undo_of_a_first_write_leaves_a_secret_written_since(openbao: OpenBao) -> None:
    path = unique_path()
    undo = VaultDestination("secret", path).deliver(new_delivery())
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{path}/ci-deployer", secret={"token": "someone-else"}, mount_point="secret"
    )
    with pytest.raises(DestinationError, match="version 2 was written after ours; left as it"):
        undo()
    assert read(openbao, f"{path}/ci-deployer")["data"] == {"token": "someone-else"}
