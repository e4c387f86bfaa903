"""S3StateBackend against a real S3-compatible HTTP server (moto, in its own process).

The conformance suite runs over S3 (a plain and a versioned bucket), then: conditional
writes racing other writers, encryption, backups, the lock across processes, the CLI
(plan/apply, concurrent applies, force-unlock, push/pull/migrate) and clear errors for a
missing bucket, denied access, bad credentials and an unreachable endpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.backend_conformance import BackendConformance
from support.cli import run_cli_subprocess, start_cli
from support.local_api import LocalApi
from support.moto import Moto, start_moto
from support.ports import free_port
from support.states import ENDPOINT, sample_state

from reconciler.errors import ConfigError, LockError, StateError
from reconciler.state.backends import LocalStateBackend, S3Location, S3StateBackend, backend_for
from reconciler.state.model import PendingCreate, State

REGION = "us-east-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Variables a developer's shell or CI may carry that would change where requests go.
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "RECONCILER_STATE",
    "BENTO_CLOUD_API_ENDPOINT",
    "BENTO_CLOUD_API_KEY",
    "GITHUB_STEP_SUMMARY",
)
KEY = "teams/platform/tokens.state.json"


# ---------------------------------------------------------------------------- servers


@pytest.fixture(scope="module", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """boto3 in this process and in CLI subprocesses: moto's test credentials, no config
    files or profiles of the developer's."""
    patch = pytest.MonkeyPatch()
    for name in CLEARED_ENV:
        patch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        patch.setenv(name, value)
    nowhere = tmp_path_factory.mktemp("aws") / "absent"
    patch.setenv("AWS_CONFIG_FILE", str(nowhere))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    patch.setenv("BENTOML_HOME", str(nowhere))
    patch.setenv("NO_COLOR", "1")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server = start_moto(tmp_path_factory.mktemp("moto"), AWS_ENV, service="s3")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(moto: Moto) -> Any:
    """An S3 client with full access, for setting up and inspecting."""
    return moto.client()


def new_bucket(s3: Any, *, versioned: bool = False) -> str:
    name = f"rec-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def bucket(s3: Any) -> str:
    return new_bucket(s3)


@pytest.fixture
def location(moto: Moto, bucket: str) -> S3Location:
    return S3Location(bucket=bucket, key=KEY, endpoint_url=moto.url)


def body(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise
    return data


def state_bytes(state: State) -> bytes:
    return (json.dumps(state.to_dict(), indent=2) + "\n").encode()


# ---------------------------------------------------------------------------- conformance


class TestS3Conformance(BackendConformance):
    @pytest.fixture(params=["plain", "versioned"])
    def backend_factory(self, request: pytest.FixtureRequest, s3: Any, moto: Moto) -> Any:
        name = new_bucket(s3, versioned=request.param == "versioned")
        where = S3Location(bucket=name, key=KEY, endpoint_url=moto.url)
        return lambda: S3StateBackend(where)


# ---------------------------------------------------------------------------- locations


def test_backend_for_s3_url_with_options() -> None:
    backend = backend_for(
        "s3://my-bucket/a/b%20c.json?region=eu-west-1&endpoint_url=https%3A%2F%2Fs3.example"
        "&kms_key_id=alias%2Frec"
    )
    assert isinstance(backend, S3StateBackend)
    assert backend.describe() == "s3://my-bucket/a/b c.json"
    loc = backend.location
    assert (loc.region, loc.endpoint_url, loc.kms_key_id) == (
        "eu-west-1",
        "https://s3.example",
        "alias/rec",
    )
    assert loc.encryption == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/rec"}
    assert S3Location.parse(loc.to_location()) == loc
    assert backend.lock_key == "a/b c.json.lock" and backend.backup_key == "a/b c.json.backup"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://Bad_Bucket/key", "not a valid S3 bucket name"),
        ("s3://my-bucket", "give the state object's key"),
        ("s3://my-bucket/dir/", "give the state object's key"),
        ("s3://my-bucket/k?colour=blue", "unknown S3 option colour"),
        ("s3://my-bucket/k?sse=des", "sse 'des' is not one of"),
        ("s3://my-bucket/k?sse=AES256&kms_key_id=x", "kms_key_id needs sse aws:kms"),
        ("s3://my-bucket/k?region=a&region=b", "given twice"),
        ("gs://my-bucket/k", "gs:// state is not supported"),
    ],
)
def test_bad_locations_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        backend_for(url)


def test_sse_defaults_and_none() -> None:
    assert S3Location("my-bucket", "k").encryption == {"ServerSideEncryption": "AES256"}
    assert S3Location("my-bucket", "k", sse="none").encryption == {}
    assert S3Location("my-bucket", "k", sse="aws:kms").encryption == {
        "ServerSideEncryption": "aws:kms"
    }


# ---------------------------------------------------------------------------- storage


def test_every_object_is_encrypted_aes256_by_default(s3: Any, location: S3Location) -> None:
    backend = S3StateBackend(location)
    with backend.lock("apply", timeout=0):
        state = backend.write(sample_state())
        backend.write(state)
        for key in (backend.key, backend.backup_key, backend.lock_key):
            head = s3.head_object(Bucket=location.bucket, Key=key)
            assert head["ServerSideEncryption"] == "AES256", key


def test_kms_key_is_requested(s3: Any, moto: Moto, bucket: str) -> None:
    where = S3Location(bucket, KEY, endpoint_url=moto.url, kms_key_id="alias/reconciler")
    S3StateBackend(where).write(sample_state())
    head = s3.head_object(Bucket=bucket, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/reconciler")


def test_backup_object_holds_previous_version(s3: Any, location: S3Location) -> None:
    backend = S3StateBackend(location)
    first = backend.write(sample_state())
    assert body(s3, location.bucket, backend.backup_key) is None
    first_bytes = body(s3, location.bucket, KEY)
    second = backend.write(first.without_token("reader"))
    assert body(s3, location.bucket, backend.backup_key) == first_bytes
    backup = S3StateBackend(replace_key(location, backend.backup_key)).read()
    assert backup == first
    assert S3StateBackend(location).read() == second


def replace_key(location: S3Location, key: str) -> S3Location:
    return S3Location(location.bucket, key, endpoint_url=location.endpoint_url)


def test_versioned_bucket_keeps_history_instead_of_backup(s3: Any, moto: Moto) -> None:
    name = new_bucket(s3, versioned=True)
    backend = S3StateBackend(S3Location(name, KEY, endpoint_url=moto.url))
    state = backend.write(sample_state())
    state = backend.write(state)
    backend.write(state)
    assert backend.bucket_versioned()
    assert body(s3, name, backend.backup_key) is None
    versions = s3.list_object_versions(Bucket=name, Prefix=KEY)["Versions"]
    serials = sorted(
        json.loads(s3.get_object(Bucket=name, Key=KEY, VersionId=v["VersionId"])["Body"].read())[
            "serial"
        ]
        for v in versions
        if v["Key"] == KEY
    )
    assert serials == [1, 2, 3]


def test_state_object_is_plain_json_without_secrets(s3: Any, location: S3Location) -> None:
    S3StateBackend(location).write(sample_state())
    raw = body(s3, location.bucket, KEY)
    assert raw is not None
    data = json.loads(raw)
    assert data["serial"] == 1 and data["endpoint"] == ENDPOINT
    assert s3.head_object(Bucket=location.bucket, Key=KEY)["ContentType"] == "application/json"


def test_corrupt_object_is_reported_and_never_overwritten(s3: Any, location: S3Location) -> None:
    s3.put_object(Bucket=location.bucket, Key=KEY, Body=b'{"format_version": 1, "serial": ')
    backend = S3StateBackend(location)
    with pytest.raises(StateError) as caught:
        backend.read()
    message = str(caught.value)
    assert f"s3://{location.bucket}/{KEY}" in message and "not changed" in message
    assert f"{KEY}.backup" in message
    with pytest.raises(StateError, match="unreadable"):
        backend.write(State.new(ENDPOINT))
    assert body(s3, location.bucket, KEY) == b'{"format_version": 1, "serial": '


def test_newer_format_is_refused_and_untouched(s3: Any, location: S3Location) -> None:
    data = sample_state().to_dict()
    data["format_version"] = 99
    raw = json.dumps(data).encode()
    s3.put_object(Bucket=location.bucket, Key=KEY, Body=raw)
    with pytest.raises(StateError, match="newer"):
        S3StateBackend(location).read()
    assert body(s3, location.bucket, KEY) == raw


def on_put(backend: S3StateBackend, key: str, action: Any) -> list[dict[str, Any]]:
    """Run ``action(params)`` once, just before ``backend`` sends its next PutObject on
    ``key``: another writer getting in between the decision to write and the write."""
    seen: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key and not seen:
            seen.append(dict(params))
            action(params)

    backend.client.meta.events.register("before-parameter-build.s3.PutObject", hook)
    return seen


def test_write_racing_another_writer_is_refused_by_if_match(s3: Any, location: S3Location) -> None:
    backend = S3StateBackend(location)
    state = backend.write(State.new(ENDPOINT))
    theirs = state_bytes(replace_serial(state.with_pending(pending("theirs")), 2))

    def rival(_params: dict[str, Any]) -> None:
        s3.put_object(Bucket=location.bucket, Key=KEY, Body=theirs)

    raced = on_put(backend, KEY, rival)
    with pytest.raises(StateError, match="changed since this run read it"):
        backend.write(state.with_pending(pending("mine")))
    assert raced and raced[0]["IfMatch"]  # the server refused, not a read before the write
    assert body(s3, location.bucket, KEY) == theirs


def test_first_write_racing_another_creator_is_refused_by_if_none_match(
    s3: Any, location: S3Location
) -> None:
    backend = S3StateBackend(location)
    assert backend.read() is None
    theirs = state_bytes(replace_serial(State.new(ENDPOINT), 1))
    raced = on_put(
        backend, KEY, lambda _p: s3.put_object(Bucket=location.bucket, Key=KEY, Body=theirs)
    )
    with pytest.raises(StateError, match="this run saw no state"):
        backend.write(State.new(ENDPOINT))
    assert raced and raced[0]["IfNoneMatch"] == "*"
    assert body(s3, location.bucket, KEY) == theirs


def test_own_write_whose_answer_was_lost_is_recognised(s3: Any, location: S3Location) -> None:
    # The first attempt landed, its answer was lost and the retry got 412: that is success.
    backend = S3StateBackend(location)
    state = backend.write(State.new(ENDPOINT))
    on_put(
        backend,
        KEY,
        lambda params: s3.put_object(Bucket=location.bucket, Key=KEY, Body=params["Body"]),
    )
    written = backend.write(state.with_pending(pending("x")))
    assert written.serial == 2
    assert S3StateBackend(location).read() == written
    assert backend.write(written).serial == 3


def test_own_lock_whose_answer_was_lost_is_recognised(s3: Any, location: S3Location) -> None:
    backend = S3StateBackend(location)
    on_put(
        backend,
        backend.lock_key,
        lambda params: s3.put_object(
            Bucket=location.bucket, Key=backend.lock_key, Body=params["Body"]
        ),
    )
    info = backend.acquire("apply", timeout=0)
    assert backend.current_lock() == info
    assert backend.release(info)


def test_release_never_deletes_a_lock_replaced_meanwhile(s3: Any, location: S3Location) -> None:
    backend, other = S3StateBackend(location), S3StateBackend(location)
    info = backend.acquire("apply", timeout=0)
    replacement: list[bytes] = []

    def steal(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == backend.lock_key and not replacement:
            # Between our read of the lock and our delete, it is force-unlocked and re-taken.
            other.force_unlock(info.id)
            theirs = other.acquire("apply", timeout=0)
            replacement.append(json.dumps(theirs.to_dict()).encode())

    backend.client.meta.events.register("before-parameter-build.s3.DeleteObject", steal)
    assert backend.release(info) is False
    assert replacement
    holder = S3StateBackend(location).current_lock()
    assert holder is not None and holder.id != info.id


def test_unreadable_lock_object_is_reported(s3: Any, location: S3Location) -> None:
    s3.put_object(Bucket=location.bucket, Key=KEY + ".lock", Body=b"{not json")
    with pytest.raises(LockError, match="delete"):
        S3StateBackend(location).acquire("apply", timeout=0)
    assert body(s3, location.bucket, KEY + ".lock") == b"{not json"


def pending(name: str) -> PendingCreate:
    return PendingCreate(name, datetime(2026, 1, 1, tzinfo=timezone.utc))


def replace_serial(state: State, serial: int) -> State:
    return State(
        endpoint=state.endpoint,
        lineage=state.lineage,
        serial=serial,
        tokens=state.tokens,
        pending=state.pending,
        previous=state.previous,
    )


# ---------------------------------------------------------------------------- errors


def test_missing_bucket_is_a_clear_state_error(moto: Moto) -> None:
    backend = S3StateBackend(S3Location("rec-no-such-bucket", KEY, endpoint_url=moto.url))
    for attempt in (backend.read, lambda: backend.acquire("apply", timeout=0)):
        with pytest.raises(StateError) as caught:
            attempt()
        message = str(caught.value)
        assert "bucket rec-no-such-bucket does not exist" in message
        assert f"s3://rec-no-such-bucket/{KEY}" in message
        assert "not changed" in message


def test_unreachable_endpoint_is_a_clear_state_error(
    s3: Any, moto: Moto, location: S3Location
) -> None:
    S3StateBackend(location).write(sample_state())
    before = body(s3, location.bucket, KEY)
    closed = f"http://127.0.0.1:{free_port()}"
    backend = S3StateBackend(S3Location(location.bucket, KEY, endpoint_url=closed))
    with pytest.raises(StateError) as caught:
        backend.read()
    message = str(caught.value)
    assert f"cannot reach S3 at {closed}" in message
    assert f"s3://{location.bucket}/{KEY}" in message and "not changed" in message
    assert body(s3, location.bucket, KEY) == before


def test_missing_boto3_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from reconciler.cli.main import main\n"
        "main(sys.argv[1:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--state", "s3://my-bucket/k", "state", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert "pip install 'bentocloud-reconciler[s3]'" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- the CLI


MANIFEST = textwrap.dedent(
    """
    tokens:
      - name: s3-deployer
        description: Deploys from CI
        scopes: [api, write_cluster]
        expires: 90d
      - name: s3-reader
        scopes: [read_organization]
      - name: s3-auditor
        scopes: [read_cluster]
    """
)
NAMES = {"s3-deployer", "s3-reader", "s3-auditor"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository checkout: manifests/ and nothing else."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "tokens.yaml").write_text(MANIFEST)
    return tmp_path


def api_args(api: LocalApi) -> tuple[str, ...]:
    return ("--endpoint", api.url, "--api-key", api.admin_key)


def apply_args(api: LocalApi, *extra: str) -> tuple[str, ...]:
    return ("apply", *api_args(api), "--auto-approve", "--discard-secrets", *extra)


def live_names(api: LocalApi) -> list[str]:
    with api.client() as client:
        response = client.get("/api/v1/api_tokens", params={"count": 1000})
    response.raise_for_status()
    return sorted(item["name"] for item in response.json()["items"])


def stored(s3: Any, bucket: str, key: str = KEY) -> dict[str, Any]:
    raw = body(s3, bucket, key)
    assert raw is not None, f"no object s3://{bucket}/{key}"
    data: dict[str, Any] = json.loads(raw)
    return data


def test_plan_apply_round_trip_with_reconciler_yaml(
    s3: Any, moto: Moto, bucket: str, project: Path, local_api: LocalApi
) -> None:
    (project / "reconciler.yaml").write_text(
        textwrap.dedent(
            f"""
            state:
              backend: s3
              bucket: {bucket}
              key: {KEY}
              region: {REGION}
              endpoint_url: {moto.url}
            """
        )
    )
    planned = run_cli_subprocess("plan", *api_args(local_api), "--detailed-exitcode", cwd=project)
    assert planned.code == 2, planned
    assert body(s3, bucket, KEY) is None  # plan writes nothing
    assert body(s3, bucket, KEY + ".lock") is None  # and released its lock

    applied = run_cli_subprocess(*apply_args(local_api), cwd=project)
    assert applied.code == 0, applied
    state = stored(s3, bucket)
    assert {t["name"] for t in state["tokens"]} == NAMES
    assert state["endpoint"] == local_api.url
    assert s3.head_object(Bucket=bucket, Key=KEY)["ServerSideEncryption"] == "AES256"
    assert body(s3, bucket, KEY + ".lock") is None

    again = run_cli_subprocess("plan", *api_args(local_api), "--detailed-exitcode", cwd=project)
    assert again.code == 0, again
    listed = run_cli_subprocess("state", "list", cwd=project)
    assert listed.code == 0 and "s3-deployer" in listed.stdout, listed
    assert live_names(local_api) == sorted(NAMES)


def test_state_location_precedence(
    s3: Any, moto: Moto, bucket: str, project: Path, local_api: LocalApi
) -> None:
    (project / "reconciler.yaml").write_text(
        f"state: {{backend: s3, bucket: {bucket}, key: from-yaml.json, endpoint_url: {moto.url}}}\n"
    )
    env = {"RECONCILER_STATE": f"s3://{bucket}/from-env.json", "AWS_ENDPOINT_URL_S3": moto.url}
    result = run_cli_subprocess(*apply_args(local_api), cwd=project, env=env)
    assert result.code == 0, result
    assert body(s3, bucket, "from-env.json") is not None
    assert body(s3, bucket, "from-yaml.json") is None

    flag = run_cli_subprocess("--state", "local.json", "state", "list", cwd=project, env=env)
    assert flag.code == 0 and "No tokens" in flag.stdout, flag

    from_yaml = run_cli_subprocess("state", "list", cwd=project)
    assert from_yaml.code == 0 and "No tokens" in from_yaml.stdout, from_yaml
    from_env = run_cli_subprocess("state", "list", cwd=project, env=env)
    assert from_env.code == 0 and "s3-reader" in from_env.stdout, from_env


def test_concurrent_applies_one_fails_naming_the_holder(
    s3: Any, location: S3Location, project: Path, local_api: LocalApi
) -> None:
    local_api.set_faults(latency_ms=400)  # each apply holds the lock for seconds
    state = location.to_location()
    args = ("--state", state, *apply_args(local_api, "--parallelism", "1"))
    processes = [start_cli(*args, cwd=project) for _ in range(2)]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        outcomes.append((process.returncode, out, err, process.pid))
    codes = sorted(code for code, *_ in outcomes)
    assert codes == [0, 1], outcomes
    loser = next(o for o in outcomes if o[0] == 1)
    winner = next(o for o in outcomes if o[0] == 0)
    assert "locked by" in loser[2] and f"(pid {winner[3]})" in loser[2], loser
    assert "for apply" in loser[2] and "force-unlock" in loser[2]
    local_api.reset_faults()
    assert live_names(local_api) == sorted(NAMES)  # never a duplicate
    assert {t["name"] for t in stored(s3, location.bucket)["tokens"]} == NAMES


def test_concurrent_applies_with_lock_timeout_wait_and_converge(
    s3: Any, location: S3Location, project: Path, local_api: LocalApi
) -> None:
    local_api.set_faults(latency_ms=200)
    args = ("--state", location.to_location(), *apply_args(local_api, "--lock-timeout", "2m"))
    processes = [start_cli(*args, cwd=project) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    local_api.reset_faults()
    assert live_names(local_api) == sorted(NAMES)
    created = [out for out, _ in outputs if "Apply complete" in out]
    assert len(created) == 1, outputs  # the other saw the first one's state: no changes
    assert stored(s3, location.bucket)["serial"] >= 1


HOLDER = textwrap.dedent(
    """
    import sys, time
    from reconciler.state.backends import backend_for
    backend = backend_for(sys.argv[1])
    info = backend.acquire("apply", timeout=0)
    print(info.id, flush=True)
    time.sleep(300)
    """
)


def test_lock_of_killed_process_then_force_unlock(
    s3: Any, location: S3Location, project: Path, local_api: LocalApi
) -> None:
    state = location.to_location()
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, state], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        lock_id = child.stdout.readline().strip()
        assert lock_id, "the child did not take the lock"
        busy = run_cli_subprocess("--state", state, *apply_args(local_api), cwd=project)
        assert busy.code == 1, busy
        assert f"pid {child.pid}" in busy.stderr and lock_id in busy.stderr
        assert "no longer runs" not in busy.stderr
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    stale = run_cli_subprocess(
        "--state", state, *apply_args(local_api, "--lock-timeout", "1s"), cwd=project
    )
    assert stale.code == 1, stale
    assert f"pid {child.pid} no longer runs on this host" in stale.stderr
    assert f"reconciler force-unlock {lock_id}" in stale.stderr
    assert "Traceback" not in stale.stderr
    assert body(s3, location.bucket, KEY) is None  # nothing was written
    assert live_names(local_api) == []

    wrong = run_cli_subprocess("--state", state, "force-unlock", "not-the-id", cwd=project)
    assert wrong.code == 1 and lock_id in wrong.stderr, wrong
    unlocked = run_cli_subprocess("--state", state, "force-unlock", lock_id, cwd=project)
    assert unlocked.code == 0, unlocked
    assert f"Released lock {lock_id} on s3://{location.bucket}/{KEY}" in unlocked.stdout
    applied = run_cli_subprocess("--state", state, *apply_args(local_api), cwd=project)
    assert applied.code == 0, applied
    assert live_names(local_api) == sorted(NAMES)


def test_cli_missing_bucket_exits_1_with_a_clear_message(
    moto: Moto, project: Path, local_api: LocalApi
) -> None:
    state = f"s3://rec-missing-bucket/{KEY}?endpoint_url={moto.url}"
    for args in (("state", "list"), ("plan", *api_args(local_api))):
        result = run_cli_subprocess("--state", state, *args, cwd=project)
        assert result.code == 1, result
        assert "S3 bucket rec-missing-bucket does not exist" in result.stderr, result
        assert f"s3://rec-missing-bucket/{KEY}" in result.stderr
        assert "Traceback" not in result.stderr
    assert live_names(local_api) == []


def test_cli_unreachable_endpoint_exits_1_and_leaves_state(
    s3: Any, location: S3Location, project: Path, local_api: LocalApi
) -> None:
    S3StateBackend(location).write(sample_state())
    before = body(s3, location.bucket, KEY)
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"AWS_ENDPOINT_URL_S3": closed}  # boto3 reads this itself
    result = run_cli_subprocess(
        "--state", f"s3://{location.bucket}/{KEY}", *apply_args(local_api), cwd=project, env=env
    )
    assert result.code == 1, result
    assert f"cannot reach S3 at {closed}" in result.stderr
    assert f"s3://{location.bucket}/{KEY}" in result.stderr
    assert "Traceback" not in result.stderr
    assert body(s3, location.bucket, KEY) == before
    assert live_names(local_api) == []


# ---------------------------------------------------------------------------- access


@dataclass(frozen=True)
class AuthS3:
    """A moto server enforcing IAM: a bucket holding a state, a read-only user and a user
    with no permissions at all."""

    server: Moto
    bucket: str
    state: bytes
    reader: dict[str, str]
    nobody: dict[str, str]


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    # The first SETUP_ACTIONS requests are free; from then on every request needs IAM.
    setup_actions = 7
    server = start_moto(
        tmp_path_factory.mktemp("moto-auth"),
        AWS_ENV,
        service="s3",
        INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions),
    )
    try:
        admin, iam = server.client(), server.iam()
        name = "rec-auth-bucket"
        state = state_bytes(replace_serial(sample_state(), 4))
        admin.create_bucket(Bucket=name)  # 1
        admin.put_object(Bucket=name, Key=KEY, Body=state)  # 2
        iam.create_user(UserName="reader")  # 3
        reader = iam.create_access_key(UserName="reader")["AccessKey"]  # 4
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
            ],
        }
        iam.put_user_policy(  # 5
            UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy)
        )
        iam.create_user(UserName="nobody")  # 6
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]  # 7
        yield AuthS3(
            server=server,
            bucket=name,
            state=state,
            reader={
                "AWS_ACCESS_KEY_ID": reader["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": reader["SecretAccessKey"],
            },
            nobody={
                "AWS_ACCESS_KEY_ID": nobody["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": nobody["SecretAccessKey"],
            },
        )
    finally:
        server.stop()


def auth_state_url(auth: AuthS3) -> str:
    return f"s3://{auth.bucket}/{KEY}?endpoint_url={auth.server.url}"


def stored_with(auth: AuthS3, key: str = KEY) -> bytes | None:
    reader = auth.server.client(
        key=auth.reader["AWS_ACCESS_KEY_ID"], secret=auth.reader["AWS_SECRET_ACCESS_KEY"]
    )
    return body(reader, auth.bucket, key)


def test_access_denied_on_write_exits_1_and_leaves_state(
    auth_s3: AuthS3, project: Path, local_api: LocalApi
) -> None:
    state = auth_state_url(auth_s3)
    readable = run_cli_subprocess(
        "--state", state, "state", "list", cwd=project, env=auth_s3.reader
    )
    assert readable.code == 0 and "ci-deploy" in readable.stdout, readable
    for args in (
        ("apply", *api_args(local_api), "--auto-approve", "--discard-secrets"),
        ("state", "rm", "ci-deploy", "--yes"),
    ):
        denied = run_cli_subprocess("--state", state, *args, cwd=project, env=auth_s3.reader)
        assert denied.code == 1, denied
        assert "access denied by S3 while taking the lock of" in denied.stderr, denied
        assert f"s3://{auth_s3.bucket}/{KEY}.lock" in denied.stderr
        assert "s3:PutObject" in denied.stderr and "Traceback" not in denied.stderr
    assert stored_with(auth_s3) == auth_s3.state
    assert live_names(local_api) == []


def test_access_denied_on_read_exits_1(auth_s3: AuthS3, project: Path) -> None:
    result = run_cli_subprocess(
        "--state", auth_state_url(auth_s3), "state", "list", cwd=project, env=auth_s3.nobody
    )
    assert result.code == 1, result
    assert f"access denied by S3 while reading state s3://{auth_s3.bucket}/{KEY}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_credentials_exit_1(auth_s3: AuthS3, project: Path) -> None:
    result = run_cli_subprocess("--state", auth_state_url(auth_s3), "state", "pull", cwd=project)
    assert result.code == 1, result
    assert "S3 refused the AWS credentials (InvalidAccessKeyId)" in result.stderr, result
    assert f"s3://{auth_s3.bucket}/{KEY}" in result.stderr
    assert stored_with(auth_s3) == auth_s3.state


# ---------------------------------------------------------------------------- migration


def local_state(path: Path, serial: int = 3) -> State:
    """A state file at ``path`` written ``serial`` times."""
    backend = LocalStateBackend(path)
    state = backend.write(sample_state())
    while state.serial < serial:
        state = backend.write(state)
    return state


def test_migrate_local_to_s3_and_back_preserves_lineage_and_serial(
    s3: Any, location: S3Location, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "tokens.state.json"
    original = local_state(path, serial=3)
    url = location.to_location()

    to_s3 = run_cli_subprocess("--state", str(path), "state", "migrate", "--to", url, cwd=tmp_path)
    assert to_s3.code == 0, to_s3
    on_s3 = S3StateBackend(location).read()
    assert on_s3 == original
    assert (on_s3.lineage, on_s3.serial) == (original.lineage, 3)
    assert not path.exists()  # moved aside, so that nobody keeps using it
    assert LocalStateBackend(tmp_path / "state" / "tokens.state.json.migrated").read() == original
    assert f"--state {location.url}" in to_s3.stdout
    assert body(s3, location.bucket, KEY + ".lock") is None

    # Used on S3 for a while: two more writes.
    backend = S3StateBackend(location)
    current = backend.read()
    assert current is not None
    current = backend.write(backend.write(current.without_token("reader")))

    back = tmp_path / "back" / "tokens.state.json"
    to_local = run_cli_subprocess(
        "--state", url, "state", "migrate", "--to", str(back), cwd=tmp_path
    )
    assert to_local.code == 0, to_local
    returned = LocalStateBackend(back).read()
    assert returned == current
    assert returned is not None and (returned.lineage, returned.serial) == (original.lineage, 5)
    assert body(s3, location.bucket, KEY) is None
    assert stored(s3, location.bucket, KEY + ".migrated")["serial"] == 5
    assert not (back.parent / "tokens.state.json.lock").exists()


def test_migrate_refuses_a_destination_of_another_lineage(
    s3: Any, location: S3Location, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.state.json"
    local_state(path, serial=2)
    local_before = path.read_bytes()
    S3StateBackend(location).write(State.new(ENDPOINT))
    s3_before = body(s3, location.bucket, KEY)
    result = run_cli_subprocess(
        "--state", str(path), "state", "migrate", "--to", location.to_location(), cwd=tmp_path
    )
    assert result.code == 1, result
    assert "holds another state" in result.stderr and "Nothing was changed" in result.stderr
    assert path.read_bytes() == local_before
    assert body(s3, location.bucket, KEY) == s3_before
    assert body(s3, location.bucket, KEY + ".lock") is None
    assert not (tmp_path / "tokens.state.json.lock").exists()


def test_migrate_waits_for_neither_and_refuses_when_destination_locked(
    location: S3Location, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.state.json"
    local_state(path)
    holder = S3StateBackend(location)
    with holder.lock("apply", timeout=0) as info:
        result = run_cli_subprocess(
            "--state", str(path), "state", "migrate", "--to", location.to_location(), cwd=tmp_path
        )
    assert result.code == 1, result
    assert info.id in result.stderr
    assert path.exists() and not (tmp_path / "tokens.state.json.lock").exists()


def test_push_and_pull(s3: Any, location: S3Location, tmp_path: Path) -> None:
    path = tmp_path / "tokens.state.json"
    local_state(path, serial=4)
    url = location.to_location()

    first = run_cli_subprocess("--state", url, "state", "push", str(path), cwd=tmp_path)
    assert first.code == 0, first
    assert stored(s3, location.bucket)["serial"] == 4  # kept as it was

    pulled = run_cli_subprocess("--state", url, "state", "pull", cwd=tmp_path)
    assert pulled.code == 0, pulled
    assert pulled.stdout.encode() == path.read_bytes() == body(s3, location.bucket, KEY)

    same = run_cli_subprocess("--state", url, "state", "push", str(path), cwd=tmp_path)
    assert same.code == 0 and "already holds" in same.stdout, same

    # The destination moved on: pushing the older file is refused.
    backend = S3StateBackend(location)
    current = backend.read()
    assert current is not None
    backend.write(current)
    older = run_cli_subprocess("--state", url, "state", "push", str(path), cwd=tmp_path)
    assert older.code == 1 and "is newer (serial 5 > 4)" in older.stderr, older

    other = tmp_path / "other.json"
    LocalStateBackend(other).write(State.new(ENDPOINT))
    foreign = run_cli_subprocess("--state", url, "state", "push", str(other), cwd=tmp_path)
    assert foreign.code == 1 and "holds another state" in foreign.stderr, foreign
    assert stored(s3, location.bucket)["serial"] == 5


def test_push_from_stdin_over_an_older_version(
    s3: Any, location: S3Location, tmp_path: Path
) -> None:
    backend = S3StateBackend(location)
    base = backend.write(sample_state())
    newer = replace_serial(base.without_token("reader"), 7)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "--state",
            location.to_location(),
            "state",
            "push",
            "-",
        ],
        input=json.dumps(newer.to_dict()),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    data = stored(s3, location.bucket)
    assert data["lineage"] == base.lineage and data["serial"] == 2
    assert [t["name"] for t in data["tokens"]] == ["ci-deploy"]


def test_pull_without_state_fails(location: S3Location, tmp_path: Path) -> None:
    result = run_cli_subprocess("--state", location.to_location(), "state", "pull", cwd=tmp_path)
    assert result.code == 1 and "no state at s3://" in result.stderr, result


def test_aws_region_alone_is_the_region_requests_are_signed_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS_REGION, as AWS documents it, without AWS_DEFAULT_REGION: the requests are signed
    for that region (botocore alone would sign them for us-east-1)."""
    import http.server
    import threading

    scopes: list[str] = []

    class Catcher(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scopes.append(self.headers.get("Authorization", ""))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        monkeypatch.setenv("AWS_REGION", "eu-west-3")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        backend = S3StateBackend(S3Location(bucket="rec-region", key=KEY, endpoint_url=url))
        assert backend.read() is None  # 404: no state yet
    finally:
        server.shutdown()
        server.server_close()
    assert scopes and all("/eu-west-3/s3/aws4_request" in scope for scope in scopes), scopes
