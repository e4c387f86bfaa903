"""``aws-sm://PATH``: one AWS Secrets Manager secret per token, a new version per delivery.

Region, credentials and endpoint come from boto3's own chain (``AWS_REGION`` /
``AWS_DEFAULT_REGION``, profiles, roles, ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` /
``AWS_ENDPOINT_URL``). boto3 is imported only when such a destination is checked or
used (extra ``aws``).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Collection
from typing import Any

from reconciler.destinations.base import Delivery, Undo
from reconciler.errors import (
    DeliveryFailedError,
    DestinationCheckError,
    DestinationError,
    UndoFailedError,
    redact,
)
from reconciler.util.aws import region_from_env
from reconciler.util.text import one_line

INSTALL_HINT = "pip install 'bentocloud-reconciler[aws]'"
CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"
_MISSING = "ResourceNotFoundException"
_EXISTS = "ResourceExistsException"
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)


class SecretsManagerDestination:
    """Secrets ``PATH/NAME`` (or PATH with ``{name}`` replaced) in Secrets Manager."""

    irreversible = False

    def __init__(
        self, path: str, *, kms_key_id: str | None = None, session: Any | None = None
    ) -> None:
        """``session``: a boto3 Session to use instead of a default one (a profile or
        assumed role chosen by the caller)."""
        self.path = path
        self.kms_key_id = kms_key_id
        self._session = session
        self._client_cache: Any = None
        self._lock = threading.Lock()
        self._hidden: tuple[str, ...] = ()

    def secret_id(self, name: str) -> str:
        return self.path.replace("{name}", name) if "{name}" in self.path else f"{self.path}/{name}"

    def describe(self) -> str:
        kms = f", KMS key {self.kms_key_id}" if self.kms_key_id else ""
        return f"aws-sm://{self.path} (AWS Secrets Manager{kms})"

    def __repr__(self) -> str:
        return f"SecretsManagerDestination({self.path!r})"

    # ------------------------------------------------------------------ check

    def check(self, names: Collection[str] = ()) -> None:
        """describe_secret of each secret to be written (a missing one is fine: the first
        delivery creates it), or a filtered list_secrets when no name is known yet."""
        client = self._client()
        if not names:
            prefix = self.path.split("{name}")[0]
            self._call(
                DestinationCheckError, "listing secrets", client.list_secrets,
                Filters=[{"Key": "name", "Values": [prefix]}], MaxResults=1,
            )  # fmt: skip
            return
        for name in sorted(names):
            secret_id = self.secret_id(name)
            found = self._call(
                DestinationCheckError, f"reading secret {secret_id}",
                client.describe_secret, SecretId=secret_id, allow=(_MISSING,),
            )  # fmt: skip
            if found is not None and found.get("DeletedDate"):
                raise DestinationCheckError(
                    self.describe(),
                    f"secret {secret_id} is scheduled for deletion, so no value can be put",
                    hint=f"restore it (aws secretsmanager restore-secret --secret-id {secret_id}) "
                    "or delete it for good (delete-secret --force-delete-without-recovery)",
                )

    # ---------------------------------------------------------------- deliver

    def forget(self, name: str) -> None:
        """Secrets Manager keeps its versions; the next delivery replaces AWSCURRENT."""

    def deliver(self, delivery: Delivery) -> Undo:
        secret_id = self.secret_id(delivery.name)
        client = self._client()
        where = f"writing secret {secret_id}"
        extra = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        created = self._call(
            DeliveryFailedError, where, client.create_secret,
            Name=secret_id, SecretString=delivery.json(),
            ClientRequestToken=str(uuid.uuid4()), allow=(_EXISTS,),
            secrets=(delivery.value,), **extra,
        )  # fmt: skip
        if created is not None:
            return lambda: self._delete(secret_id)
        stages = self._stages(secret_id, DeliveryFailedError, where)
        put = self._call(
            DeliveryFailedError, where, client.put_secret_value,
            SecretId=secret_id, SecretString=delivery.json(),
            ClientRequestToken=str(uuid.uuid4()), secrets=(delivery.value,),
        )  # fmt: skip
        new_id = str(put["VersionId"])
        return lambda: self._move_back(secret_id, new_id, stages)

    def _stages(self, secret_id: str, error: type[DestinationError], where: str) -> dict[str, str]:
        """{stage: version id} of the secret's AWSCURRENT and AWSPREVIOUS versions."""
        answer = self._call(error, where, self._client().describe_secret, SecretId=secret_id)
        found: dict[str, str] = {}
        for version, labels in (answer.get("VersionIdsToStages") or {}).items():
            for label in labels:
                if label in (CURRENT, PREVIOUS):
                    found[label] = version
        return found

    def _delete(self, secret_id: str) -> None:
        self._call(
            UndoFailedError, f"removing new secret {secret_id}", self._client().delete_secret,
            SecretId=secret_id, ForceDeleteWithoutRecovery=True,
        )  # fmt: skip

    def _move_back(self, secret_id: str, new_id: str, before: dict[str, str]) -> None:
        """AWSCURRENT back on the version that had it, then AWSPREVIOUS too (moving
        AWSCURRENT hands AWSPREVIOUS to the version it leaves, the undone one)."""
        client, where = self._client(), f"putting back {CURRENT} of {secret_id}"
        if CURRENT not in before:
            raise UndoFailedError(self.describe(), f"{where}: it had no {CURRENT} version")
        self._call(
            UndoFailedError, where, client.update_secret_version_stage,
            SecretId=secret_id, VersionStage=CURRENT,
            MoveToVersionId=before[CURRENT], RemoveFromVersionId=new_id,
        )  # fmt: skip
        if PREVIOUS in before:
            self._call(
                UndoFailedError, where, client.update_secret_version_stage,
                SecretId=secret_id, VersionStage=PREVIOUS,
                MoveToVersionId=before[PREVIOUS], RemoveFromVersionId=new_id,
            )  # fmt: skip

    # ---------------------------------------------------------------- plumbing

    def _client(self) -> Any:
        with self._lock:  # apply delivers from several threads (--parallelism)
            return self._make_client()

    def _make_client(self) -> Any:
        if self._client_cache is not None:
            return self._client_cache
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise DestinationCheckError(
                self.describe(), "the boto3 package is not installed", hint=INSTALL_HINT
            ) from None
        session = self._session or boto3.session.Session()
        config = botocore.config.Config(
            connect_timeout=10, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"}
        )
        try:
            self._client_cache = session.client(
                "secretsmanager", region_name=region_from_env(), config=config
            )
        except botocore.exceptions.NoRegionError:
            raise DestinationCheckError(
                self.describe(), "no AWS region", hint="set AWS_REGION or AWS_DEFAULT_REGION"
            ) from None
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            self._hidden = tuple(
                s for s in (frozen.secret_key, frozen.token, frozen.access_key) if s
            )
        return self._client_cache

    def _call(
        self,
        error: type[DestinationError],
        what: str,
        fn: Callable[..., Any],
        *,
        allow: tuple[str, ...] = (),
        secrets: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """``fn(**kwargs)``; None for an error code in ``allow``; botocore's exceptions
        become ``error`` naming what was done and AWS's reason, credentials removed."""
        import botocore.exceptions

        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code, message = _error_of(exc.response)
            if code in allow:
                return None
            reason = f"{code} ({message})" if message else code
            if code in _CREDENTIAL_CODES:
                reason = f"AWS refused the credentials: {reason}"
        except botocore.exceptions.NoCredentialsError:
            reason = "no AWS credentials found (environment, profile or role)"
        except botocore.exceptions.BotoCoreError as exc:
            reason = f"{type(exc).__name__} ({one_line(str(exc))})"
        hidden = (*self._hidden, *secrets)
        raise error(self.describe(), redact(f"{what}: {reason}", hidden)) from None


def _error_of(response: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of an error answer. When the body was not the JSON botocore
    expects (an XML answer from a proxy or an emulator), botocore gives the HTTP status
    as the code and the raw body as the message: the XML's own Code and Message then."""
    error = response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code.isdigit():
        xml_code = re.search(r"<Code>([^<]{1,100})</Code>", message)
        xml_message = re.search(r"<Message>([^<]{0,500})</Message>", message)
        if xml_code:
            code = xml_code.group(1)
            message = xml_message.group(1) if xml_message else ""
    return code, one_line(message)
