"""State in an S3 object: conditional writes, a lock object beside it, server-side encryption.

Layout, for state at ``s3://BUCKET/KEY``:

    KEY           the state document (the same JSON as the file backend)
    KEY.lock      the lock: a LockInfo document, created with If-None-Match: *
    KEY.backup    the version before the last write, unless the bucket is versioned

Every write is conditional: If-Match on the ETag of the version this run read (or
If-None-Match: * for the first one), so a run that lost a race gets 412 and reports it
instead of overwriting. boto3 is imported only when an S3 state is used (extra ``s3``);
credentials, region and endpoint come from boto3's own chain unless configured here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from reconciler.errors import ConfigError, LockError, StateError
from reconciler.state.backends.base import StateBackend
from reconciler.state.backends.lockinfo import LockInfo
from reconciler.state.codec import encode_state
from reconciler.state.model import State
from reconciler.util.aws import region_from_env

INSTALL_HINT = "pip install 'bentocloud-reconciler[s3]'"
SSE_CHOICES = ("AES256", "aws:kms", "none")
#: Optional settings of an S3 location, as URL query parameters or reconciler.yaml keys.
OPTION_KEYS = ("region", "endpoint_url", "kms_key_id", "sse")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
# Error codes a caller may ask to receive instead of an exception.
_PRECONDITION = "PreconditionFailed"
_CONFLICT = "ConditionalRequestConflict"
_NO_SUCH_KEY = "NoSuchKey"
_NOT_IMPLEMENTED = "NotImplemented"
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestExpired",
    }
)
_CONFLICT_RETRIES = 8

UNCHANGED = "State was not changed."
LOST_WRITE = (
    "The write may or may not have reached S3; the next run finds out (its conditional "
    "write never overwrites a version it has not read)."
)
LOST_LOCK = (
    "State was not changed, but the lock may have been taken all the same; if the next run "
    "finds it held by this process, run `reconciler force-unlock` with the id it names."
)


@dataclass(frozen=True)
class S3Location:
    """Where an S3 state lives and how to reach it; None means boto3's default."""

    bucket: str
    key: str
    region: str | None = None
    endpoint_url: str | None = None
    kms_key_id: str | None = None
    sse: str | None = None

    def __post_init__(self) -> None:
        where = f"s3://{self.bucket}/{self.key}"
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise ConfigError(
                f"{where}: {self.bucket!r} is not a valid S3 bucket name (3-63 lowercase "
                "letters, digits, dots and hyphens)"
            )
        if not self.key or self.key.endswith("/"):
            raise ConfigError(
                f"{where}: give the state object's key after the bucket, e.g. "
                f"s3://{self.bucket}/reconciler/tokens.state.json"
            )
        if self.sse is not None and self.sse not in SSE_CHOICES:
            raise ConfigError(f"{where}: sse {self.sse!r} is not one of {', '.join(SSE_CHOICES)}")
        if self.kms_key_id and self.sse in ("AES256", "none"):
            raise ConfigError(f"{where}: kms_key_id needs sse aws:kms (or no sse), not {self.sse}")

    @property
    def url(self) -> str:
        """``s3://bucket/key``, for messages."""
        return f"s3://{self.bucket}/{self.key}"

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def encryption(self) -> dict[str, str]:
        """The server-side encryption parameters of every PutObject."""
        if self.sse == "none":
            return {}
        if self.kms_key_id or self.sse == "aws:kms":
            params = {"ServerSideEncryption": "aws:kms"}
            if self.kms_key_id:
                params["SSEKMSKeyId"] = self.kms_key_id
            return params
        return {"ServerSideEncryption": "AES256"}

    def options(self) -> dict[str, str]:
        values = {
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "kms_key_id": self.kms_key_id,
            "sse": self.sse,
        }
        return {name: value for name, value in values.items() if value}

    def to_location(self) -> str:
        """The ``--state`` text for this location: the URL plus its options as a query."""
        query = urlencode(self.options())
        return f"s3://{self.bucket}/{quote(self.key)}" + (f"?{query}" if query else "")

    @classmethod
    def from_options(cls, bucket: str, key: str, options: Mapping[str, str | None]) -> S3Location:
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"s3://{bucket}/{key}: unknown S3 option {', '.join(unknown)} (known: "
                f"{', '.join(OPTION_KEYS)})"
            )
        return cls(
            bucket=bucket,
            key=key,
            region=options.get("region") or None,
            endpoint_url=options.get("endpoint_url") or None,
            kms_key_id=options.get("kms_key_id") or None,
            sse=options.get("sse") or None,
        )

    @classmethod
    def parse(cls, text: str) -> S3Location:
        """Parse ``s3://bucket/key[?region=..&endpoint_url=..&kms_key_id=..&sse=..]``."""
        parts = urlsplit(text)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"{text}: not an S3 location; use s3://BUCKET/KEY")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        options = dict(pairs)
        if len(options) != len(pairs):
            raise ConfigError(f"{text}: an S3 option is given twice")
        return cls.from_options(parts.netloc, unquote(parts.path.lstrip("/")), options)


# botocore's data loader (service models, endpoint rules: read-only data that takes most of a
# client's setup time), shared by the clients of this process. Credentials are not shared.
_shared_loader: Any = None


def _make_client(location: S3Location) -> Any:
    global _shared_loader
    try:
        import boto3
        import botocore.session
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ConfigError(
            f"state {location.url} is on S3, which needs boto3; install it with: {INSTALL_HINT}"
        ) from None
    try:
        # A session of its own: credentials are resolved from boto3's standard chain.
        core = botocore.session.Session()
        session = boto3.session.Session(botocore_session=core)
        if _shared_loader is None:
            _shared_loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _shared_loader)
        region = location.region or region_from_env()
        return session.client("s3", region_name=region, endpoint_url=location.endpoint_url)
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(f"state {location.url}: cannot set up an S3 client ({exc})") from None


class _Refused(Exception):
    """An S3 error code the caller asked to handle itself (412, 409, NoSuchKey, ...)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class S3StateBackend(StateBackend):
    """State in ``s3://bucket/key``; lock in ``key.lock``; backup in ``key.backup``."""

    #: Seconds between attempts while waiting for a busy lock (each costs a request).
    poll_interval = 0.5

    def __init__(self, location: S3Location, *, client: Any = None) -> None:
        super().__init__()
        self.location = location
        self.bucket = location.bucket
        self.key = location.key
        self.lock_key = location.key + ".lock"
        self.backup_key = location.key + ".backup"
        self.client: Any = client if client is not None else _make_client(location)
        # What this run last read or wrote: the ETag a write must match (None: expect no
        # object), its bytes (for the backup) and its lineage and serial.
        self._seen_etag: str | None = None
        self._seen_raw: bytes | None = None
        self._seen_version: tuple[str, int] | None = None
        self._versioned: bool | None = None

    def describe(self) -> str:
        return self.location.url

    # -- requests --------------------------------------------------------------------

    def _call(
        self,
        operation: str,
        doing: str,
        key: str,
        *,
        allow: frozenset[str] = frozenset(),
        outcome: str = UNCHANGED,
        lost: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Run one S3 operation on ``key``; codes in ``allow`` raise _Refused, any other
        failure a StateError saying what went wrong, what to do, and ``outcome`` (or
        ``lost``, when the request may have taken effect though its answer was lost)."""
        from botocore.exceptions import BotoCoreError, ClientError

        method: Callable[..., dict[str, Any]] = getattr(self.client, operation)
        try:
            response = method(Bucket=self.bucket, Key=key, **params)
            if "Body" in response:
                response["Body"] = response["Body"].read()
            return response
        except ClientError as exc:
            code = _code(exc.response)
            if code in allow:
                raise _Refused(code) from None
            message = self._client_error(exc.response, code, doing, key)
            raise StateError(f"{message} {outcome}") from None
        except BotoCoreError as exc:
            message = self._transport_error(exc, doing, key)
            raise StateError(f"{message} {lost or outcome}") from None

    def _client_error(self, response: Mapping[str, Any], code: str, doing: str, key: str) -> str:
        where = self.location.object_url(key)
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return (
                f"S3 bucket {self.bucket} does not exist (while {doing} {where}); create it, "
                "or fix the bucket in --state, $RECONCILER_STATE or reconciler.yaml."
            )
        if code in _AUTH_CODES:
            return (
                f"S3 refused the AWS credentials ({code}) while {doing} {where}; check "
                "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or renew the session "
                "token)."
            )
        if code == "AccessDenied" or status == 403:
            return (
                f"access denied by S3 while {doing} {where} ({code}); the AWS credentials in "
                f"use need s3:GetObject, s3:PutObject and s3:DeleteObject on "
                f"arn:aws:s3:::{self.bucket}/{self.key}* and s3:ListBucket on "
                f"arn:aws:s3:::{self.bucket} (plus kms:Encrypt/Decrypt/GenerateDataKey on the "
                f"key if SSE-KMS is used)."
            )
        message = error.get("Message") or "no message"
        return f"S3 error {code} (HTTP {status}: {message}) while {doing} {where}."

    def _transport_error(self, exc: Exception, doing: str, key: str) -> str:
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.exceptions import (
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        where = self.location.object_url(key)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return (
                f"no usable AWS credentials for {where} ({exc}); set AWS_PROFILE, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role."
            )
        if isinstance(exc, NoRegionError):
            return (
                f"no AWS region for {where}: set AWS_REGION / AWS_DEFAULT_REGION or add "
                "region to the state settings."
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            endpoint = getattr(self.client.meta, "endpoint_url", None) or "S3"
            return (
                f"cannot reach S3 at {endpoint} while {doing} {where} ({exc}); check the "
                "network, the region and endpoint_url (or $AWS_ENDPOINT_URL_S3), then run "
                "again."
            )
        return f"S3 request failed while {doing} {where} ({exc})."

    def _get(self, key: str, doing: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist."""
        try:
            response = self._call("get_object", doing, key, allow=frozenset({_NO_SUCH_KEY}))
        except _Refused:
            return None
        body: bytes = response["Body"]
        return body, str(response["ETag"])

    def _put(
        self,
        key: str,
        data: bytes,
        doing: str,
        *,
        allow: frozenset[str] = frozenset(),
        lost: str | None = None,
        **extra: Any,
    ) -> str:
        """Store ``data`` at ``key`` (encrypted as configured); returns the new ETag."""
        response = self._call(
            "put_object",
            doing,
            key,
            allow=allow,
            lost=lost,
            Body=data,
            ContentType="application/json",
            **self.location.encryption,
            **extra,
        )
        return str(response.get("ETag", ""))

    # -- storage ---------------------------------------------------------------------

    def restore_hint(self) -> str:
        return (
            f"Restore it from {self.location.object_url(self.backup_key)} or a previous "
            "object version"
        )

    def _remember(self, raw: bytes | None, etag: str | None, state: State | None) -> None:
        self._seen_raw = raw
        self._seen_etag = etag
        self._seen_version = (state.lineage, state.serial) if state is not None else None

    def read(self) -> State | None:
        found = self._get(self.key, "reading state")
        if found is None:
            self._remember(None, None, None)
            return None
        raw, etag = found
        state = self.decode(raw)
        self._remember(raw, etag, state)
        return state

    def write(self, state: State) -> State:
        self.check_may_write()
        if self._seen_version is not None:
            self.check_based_on(state, self._seen_version)
        new = replace(state, serial=state.serial + 1)
        data = encode_state(new)
        if self._seen_raw is not None and not self.bucket_versioned():
            # The version about to be replaced, kept before it is replaced. Should the
            # conditional write below lose a race, this still holds a real earlier version.
            self._put(self.backup_key, self._seen_raw, "writing the backup of")
        condition = (
            {"IfMatch": self._seen_etag} if self._seen_etag is not None else {"IfNoneMatch": "*"}
        )
        etag = self._put_conditionally(data, condition)
        self._remember(data, etag, new)
        return new

    def _put_conditionally(self, data: bytes, condition: dict[str, str]) -> str:
        refusals = frozenset({_PRECONDITION, _NO_SUCH_KEY, _CONFLICT})
        for attempt in range(_CONFLICT_RETRIES):
            try:
                return self._put(
                    self.key, data, "writing state", allow=refusals, lost=LOST_WRITE, **condition
                )
            except _Refused as refused:
                if refused.code == _CONFLICT and attempt + 1 < _CONFLICT_RETRIES:
                    # Another conditional request on the key was in flight: ask again.
                    time.sleep(0.05 * (attempt + 1))
                    continue
            current = self._get(self.key, "checking state after a refused write to")
            if current is not None and current[0] == data:
                # Our own write landed but its answer was lost, and the retry was refused.
                return current[1]
            raise StateError(self._moved_message(current))
        raise AssertionError("unreachable")  # pragma: no cover

    def _moved_message(self, current: tuple[bytes, str] | None) -> str:
        raw = current[0] if current is not None else None
        return self.moved_message(raw, saw_state=self._seen_etag is not None)

    def bucket_versioned(self) -> bool:
        """Whether the bucket keeps old versions (then no backup object is written). When
        that cannot be asked (no s3:GetBucketVersioning), backups are written."""
        if self._versioned is None:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                answer = self.client.get_bucket_versioning(Bucket=self.bucket)
            except ClientError:
                self._versioned = False
            except BotoCoreError as exc:
                message = self._transport_error(exc, "checking versioning of", self.key)
                raise StateError(f"{message} {UNCHANGED}") from None
            else:
                self._versioned = answer.get("Status") == "Enabled"
        return self._versioned

    # -- retiring (state migrate) ------------------------------------------------------

    def retire(self, suffix: str) -> str:
        """Move the state object (as last read) to ``key + suffix``; returns its URL. Used
        once a migration has copied it elsewhere."""
        if self._seen_raw is None or self._seen_etag is None:
            raise StateError(f"{self.describe()}: nothing read, nothing to retire")
        self.check_may_write()
        target = self.key + suffix
        self._put(target, self._seen_raw, "keeping a copy of")
        kept = (
            f"It was copied to {self.location.object_url(target)} but may not be removed; "
            "remove it by hand so that nobody keeps using it."
        )
        try:
            self._call(
                "delete_object",
                "removing",
                self.key,
                allow=frozenset({_PRECONDITION, _NO_SUCH_KEY, _NOT_IMPLEMENTED}),
                outcome=kept,
                IfMatch=self._seen_etag,
            )
        except _Refused as refused:
            if refused.code != _NOT_IMPLEMENTED:
                raise StateError(self._moved_message(self._get(self.key, "reading"))) from None
            self._call("delete_object", "removing", self.key, outcome=kept)
        self._remember(None, None, None)
        return self.location.object_url(target)

    # -- lock ------------------------------------------------------------------------

    def _lock_object(self) -> tuple[LockInfo, str] | None:
        found = self._get(self.lock_key, "reading the lock of")
        if found is None:
            return None
        raw, etag = found
        return LockInfo.decode(raw, source=self.location.object_url(self.lock_key)), etag

    def current_lock(self) -> LockInfo | None:
        found = self._lock_object()
        return found[0] if found is not None else None

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        payload = (json.dumps(info.to_dict(), indent=2) + "\n").encode("utf-8")
        refusals = frozenset({_PRECONDITION, _CONFLICT})
        for attempt in range(100):
            try:
                self._put(
                    self.lock_key,
                    payload,
                    "taking the lock of",
                    allow=refusals,
                    lost=LOST_LOCK,
                    IfNoneMatch="*",
                )
                return None
            except _Refused as refused:
                if refused.code == _CONFLICT:
                    time.sleep(0.05 * min(attempt + 1, 10))
                    continue
            holder = self.current_lock()
            if holder is None:
                continue  # released between our attempt and our look
            if holder.id == info.id:
                return None  # our create landed, its answer was lost and the retry refused
            return holder
        raise LockError(
            f"{self.location.object_url(self.lock_key)}: lock keeps appearing and vanishing; "
            "try again"
        )

    def remove_lock(self, lock_id: str) -> bool:
        found = self._lock_object()
        if found is None or found[0].id != lock_id:
            return False
        refusals = frozenset({_PRECONDITION, _NO_SUCH_KEY, _CONFLICT, _NOT_IMPLEMENTED})
        stays = (
            f"The lock {lock_id} may still be there; once S3 answers again, run "
            f"`reconciler force-unlock {lock_id}` if it is."
        )
        try:
            # Deleted only if it is still the very object just read (ours).
            self._call(
                "delete_object",
                "releasing the lock of",
                self.lock_key,
                allow=refusals,
                outcome=stays,
                IfMatch=found[1],
            )
        except _Refused as refused:
            if refused.code != _NOT_IMPLEMENTED:
                return False
            # A store without conditional deletes: the id was checked just above.
            self._call("delete_object", "releasing the lock of", self.lock_key, outcome=stays)
        return True


def _code(response: Mapping[str, Any]) -> str:
    """The error code of a botocore error response, normalised for bare HTTP statuses."""
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if status == 412 or code == "412":
        return _PRECONDITION
    if code in ("409", "OperationAborted") and status == 409:
        return _CONFLICT
    if code == "501" or (status == 501 and not code):
        return _NOT_IMPLEMENTED
    if code == "404" or (status == 404 and not code):
        return _NO_SUCH_KEY
    return code or str(status)
