"""aws-sm:// destinations against moto's server (tests/support/moto.py) in its own process.

boto3 finds the server through ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` alone (the
destination passes no endpoint), which is what a user's CI sets. A second moto server
enforcing IAM (INITIAL_NO_AUTH_ACTION_COUNT) shows that unknown credentials and a user
without Secrets Manager permissions fail check() before anything is written.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from support.leaks import REGISTRY
from support.moto import AWS_ENV, CLEARED_ENV, REGION, AuthMoto, Moto, start_moto
from support.ports import free_port

from reconciler.destinations.aws_sm import SecretsManagerDestination
from reconciler.destinations.base import Delivery
from reconciler.destinations.deliver import deliver_all
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.parse import parse_destination
from reconciler.errors import DeliveryAbortedError, DestinationCheckError


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server = start_moto(tmp_path_factory.mktemp("moto-sm"), AWS_ENV, service="secretsmanager")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_env(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's own chain, pointed at moto only through the service's endpoint variable."""
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    REGISTRY.add_secret(AWS_ENV["AWS_SECRET_ACCESS_KEY"], "aws-secret-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)


def new_delivery(name: str = "ci-deployer") -> Delivery:
    value = "rct_" + secrets.token_urlsafe(32)
    REGISTRY.add_secret(value, "destination-test-value")
    uid = "tok_" + secrets.token_hex(10)
    return Delivery(name=name, live_name=f"{name}-g2", uid=uid, expires_at=None, value=value)


def unique_path() -> str:
    return f"bentocloud/{uuid.uuid4().hex[:12]}"


def stage_value(moto: Moto, secret_id: str, stage: str) -> dict[str, Any]:
    answer = moto.client().get_secret_value(SecretId=secret_id, VersionStage=stage)
    document: dict[str, Any] = json.loads(answer["SecretString"])
    return document


def assert_secret_free(exc: BaseException, *values: str) -> str:
    text = str(exc)
    REGISTRY.record("destination error", text)
    for value in (*values, AWS_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert value not in text
    return text


def failing_exec() -> ExecDestination:
    return ExecDestination("cat >/dev/null; echo 'kubectl: forbidden' >&2; exit 1")


# ---------------------------------------------------------------------------- delivery


def test_first_delivery_creates_the_secret_with_the_json_document(moto: Moto) -> None:
    path = unique_path()
    destination = parse_destination(f"aws-sm://{path}")
    assert isinstance(destination, SecretsManagerDestination)
    delivery = new_delivery()
    destination.check({delivery.name})  # the secret does not exist yet: fine
    destination.deliver(delivery)
    assert stage_value(moto, f"{path}/ci-deployer", "AWSCURRENT") == {
        "token": delivery.value,
        "name": "ci-deployer",
        "live_name": "ci-deployer-g2",
        "uid": delivery.uid,
        "expires_at": None,
    }


def test_second_delivery_is_awscurrent_and_first_is_awsprevious(moto: Moto) -> None:
    path = unique_path()
    destination = parse_destination(f"aws-sm://{path}/{{name}}/token")
    first, second = new_delivery("billing"), new_delivery("billing")
    destination.deliver(first)
    destination.deliver(second)
    secret_id = f"{path}/billing/token"
    assert stage_value(moto, secret_id, "AWSCURRENT")["token"] == second.value
    assert stage_value(moto, secret_id, "AWSPREVIOUS")["token"] == first.value


def test_kms_key_id_is_set_on_the_new_secret(moto: Moto) -> None:
    key = moto.client("kms").create_key()["KeyMetadata"]["KeyId"]
    path = unique_path()
    parse_destination(f"aws-sm://{path}?kms_key_id={key}").deliver(new_delivery())
    described = moto.client().describe_secret(SecretId=f"{path}/ci-deployer")
    assert described["KmsKeyId"] == key


def test_describe_names_the_path_and_no_credential() -> None:
    destination = parse_destination("aws-sm://prod/tokens?kms_key_id=alias/tokens")
    assert (
        destination.describe() == "aws-sm://prod/tokens (AWS Secrets Manager, KMS key alias/tokens)"
    )


# ---------------------------------------------------------------------------- undo


def test_failure_after_a_rotation_moves_awscurrent_and_awsprevious_back(moto: Moto) -> None:
    path = unique_path()
    destination = parse_destination(f"aws-sm://{path}")
    oldest, old, new = new_delivery(), new_delivery(), new_delivery()
    destination.deliver(oldest)
    destination.deliver(old)
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all([failing_exec(), destination], new)
    text = assert_secret_free(caught.value, new.value, old.value)
    assert "exited with status 1: kubectl: forbidden" in text
    assert f"put back: aws-sm://{path}" in text
    secret_id = f"{path}/ci-deployer"
    assert stage_value(moto, secret_id, "AWSCURRENT")["token"] == old.value
    assert stage_value(moto, secret_id, "AWSPREVIOUS")["token"] == oldest.value


def test_failure_after_a_first_delivery_deletes_the_new_secret(moto: Moto) -> None:
    path = unique_path()
    with pytest.raises(DeliveryAbortedError):
        deliver_all([parse_destination(f"aws-sm://{path}"), failing_exec()], new_delivery())
    with pytest.raises(ClientError) as missing:
        moto.client().describe_secret(SecretId=f"{path}/ci-deployer")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Deleted without a recovery window, so the next apply can create it again at once.
    parse_destination(f"aws-sm://{path}").deliver(new_delivery())


# ---------------------------------------------------------------------------- check


def use(monkeypatch: pytest.MonkeyPatch, auth_moto: AuthMoto, keys: dict[str, str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", auth_moto.server.url)
    for name, value in keys.items():
        monkeypatch.setenv(name, value)


def test_user_with_permission_passes_check_and_delivers(
    auth_moto: AuthMoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, auth_moto, auth_moto.writer)
    destination = parse_destination(f"aws-sm://{unique_path()}")
    destination.check({"ci-deployer"})
    destination.check()
    destination.deliver(new_delivery())


@pytest.mark.parametrize("names", [{"ci-deployer"}, set()])
def test_user_without_permission_fails_check(
    auth_moto: AuthMoto, monkeypatch: pytest.MonkeyPatch, names: set[str]
) -> None:
    use(monkeypatch, auth_moto, auth_moto.nobody)
    with pytest.raises(DestinationCheckError) as caught:
        parse_destination(f"aws-sm://{unique_path()}").check(names)
    text = assert_secret_free(caught.value, auth_moto.nobody["AWS_SECRET_ACCESS_KEY"])
    assert text.startswith("aws-sm://bentocloud/") and "AccessDenied" in text


def test_unknown_credentials_fail_check(
    auth_moto: AuthMoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }
    REGISTRY.add_secret(unknown["AWS_SECRET_ACCESS_KEY"], "aws-secret-key")
    use(monkeypatch, auth_moto, unknown)
    with pytest.raises(DestinationCheckError) as caught:
        parse_destination(f"aws-sm://{unique_path()}").check({"ci-deployer"})
    text = assert_secret_free(caught.value, *unknown.values())
    assert "AWS refused the credentials" in text


def test_secret_scheduled_for_deletion_fails_check(moto: Moto) -> None:
    path = unique_path()
    destination = parse_destination(f"aws-sm://{path}")
    destination.deliver(new_delivery())
    moto.client().delete_secret(SecretId=f"{path}/ci-deployer", RecoveryWindowInDays=7)
    with pytest.raises(DestinationCheckError) as caught:
        destination.check({"ci-deployer"})
    assert f"secret {path}/ci-deployer is scheduled for deletion" in str(caught.value)
    assert "restore-secret" in str(caught.value)


def test_no_region_fails_check_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(DestinationCheckError, match="no AWS region; set AWS_REGION"):
        parse_destination("aws-sm://bentocloud").check()


def test_unreachable_endpoint_fails_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DestinationCheckError, match="EndpointConnectionError"):
        parse_destination("aws-sm://bentocloud").check()


def test_write_refused_mid_run_is_the_error_and_puts_the_first_store_back(
    auth_moto: AuthMoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores, the second one's credentials without permission (its check skipped):
    AWS's refusal is the one error, and the first store's AWSCURRENT is moved back."""
    use(monkeypatch, auth_moto, auth_moto.writer)
    nobody = boto3.session.Session(
        aws_access_key_id=auth_moto.nobody["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=auth_moto.nobody["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    first_path, second_path = unique_path(), unique_path()
    first = SecretsManagerDestination(first_path)
    second = SecretsManagerDestination(second_path, session=nobody)
    old, new = new_delivery(), new_delivery()
    first.deliver(old)
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all([first, second], new)
    text = assert_secret_free(
        caught.value, new.value, old.value, auth_moto.nobody["AWS_SECRET_ACCESS_KEY"]
    )
    assert text.startswith(f"aws-sm://{second_path}") and "AccessDenied" in text
    assert caught.value.undone == [first.describe()]
    reader = auth_moto.server.client(
        key=auth_moto.writer["AWS_ACCESS_KEY_ID"], secret=auth_moto.writer["AWS_SECRET_ACCESS_KEY"]
    )
    # The stage named: moto (unlike AWS) answers a stage-less read from the version last
    # put, not from the one AWSCURRENT was moved back to.
    answer = reader.get_secret_value(
        SecretId=f"{first_path}/ci-deployer", VersionStage="AWSCURRENT"
    )
    assert json.loads(answer["SecretString"])["token"] == old.value


def test_aws_region_alone_is_enough(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_REGION without AWS_DEFAULT_REGION (as some CI logins set it): checked and
    delivered like any other region setting."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", REGION)
    path = unique_path()
    destination = parse_destination(f"aws-sm://{path}")
    destination.check({"ci-deployer"})
    destination.deliver(new_delivery())
    assert moto.client().describe_secret(SecretId=f"{path}/ci-deployer")["Name"]
