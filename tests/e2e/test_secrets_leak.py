"""Secrets never leak: token values and API keys stay out of output, logs, state, plans and
errors; the API key goes only to the configured endpoint, over TLS that is verified.

The session-wide harness is tests/support/leaks.py (every CLI run of the chaos, fault and
concurrency tests is scanned too); the scenario here drives every command and failure path
with -v and -vv and every logger at DEBUG, then scans what it produced.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from support.cli import CliResult, run_cli, run_cli_subprocess
from support.convergence import user_workspace
from support.leaks import REGISTRY, SecretRegistry, all_loggers_at_debug
from support.local_api import LocalApi
from support.moto import CLEARED_ENV
from support.stores import Stores, StoreWorkspace
from support.workspace import Workspace, token

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.api.settings import resolve_connection
from reconciler.errors import ApiError
from reconciler.session import SessionSettings

if TYPE_CHECKING:
    from support.local_api import LocalApi

EMPTY_LISTING = json.dumps({"start": 0, "count": 100, "total": 0, "items": []}).encode()


# ---------------------------------------------------------------- the harness itself


def test_the_harness_finds_a_planted_secret() -> None:
    """A positive control, so that "0 leaks" means something."""
    registry = SecretRegistry()
    registry.add_secret("rct_" + "Ab-_9" * 8 + "xyz", "token value")
    registry.add_secret("not/url-safe+key=with/other!chars", "api key")
    registry.record("clean", "nothing to see: rct_other, tok_123")
    registry.record("embedded", 'KEY=rct_Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9xyz"')
    registry.record(
        "inside a longer run", "prefixrct_Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9Ab-_9xyzsuffix"
    )
    registry.record("other charset", "header: not/url-safe+key=with/other!chars\n")
    leaks = registry.leaks()
    assert [leak.artifact for leak in leaks] == ["embedded", "inside a longer run", "other charset"]
    assert all("Ab-_9" not in str(leak) for leak in leaks)


# ---------------------------------------------------------------- the full scenario


def _bentoml_config(home: Path, endpoint: str, key: str) -> None:
    config = home / ".no-bentoml-home" / ".yatai.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        yaml.safe_dump(
            {
                "current_context_name": "ctx",
                "contexts": [{"name": "ctx", "endpoint": endpoint, "api_token": key}],
            }
        )
    )


def test_a_full_scenario_leaks_no_secret(
    local_api: LocalApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mark = REGISTRY.mark()
    secrets_before = REGISTRY.secret_count
    # A second API key of the same user: the one reconciler is given.
    key = local_api.store.create_api_key()
    REGISTRY.add_secret(key, "api key")
    REGISTRY.add_secret(local_api.admin_key, "admin key")
    ws = user_workspace(tmp_path, local_api)
    connection = ["--endpoint", local_api.url, "--api-key", key, "--state", str(ws.state_path)]
    manifest = str(ws.manifest_path)
    dotenv = tmp_path / "secrets" / "rotated.env"
    plan_file = tmp_path / "plan.json"
    runs = []

    def cli(*args: str, env: dict[str, str] | None = None) -> None:
        runs.append(run_cli(*args, cwd=tmp_path, env=env))

    with all_loggers_at_debug():
        ws.declare(*(token(f"leak-{n}", scopes=("api", "read_cluster")) for n in range(6)))
        cli("validate", manifest, "-v")
        cli("plan", manifest, *connection, "-v")
        cli("plan", manifest, *connection, "-vv", "--format", "json")
        cli("plan", manifest, *connection, "--format", "markdown", "--out", str(plan_file))
        for fmt in ("text", "json", "markdown"):
            cli("show", str(plan_file), "--format", fmt)
        cli("apply", str(plan_file), *connection, "-vv", "--secrets-out", str(ws.secrets_path))
        assert runs[-1].code == 0, runs[-1]
        cli("state", "list", "--state", str(ws.state_path), "-vv")
        cli("state", "show", "leak-0", "--state", str(ws.state_path), "-vv")

        # Replace two, delete one, create one, through lost and failed answers.
        ws.declare(
            *[token(f"leak-{n}", scopes=("api",)) for n in range(2)]
            + [token(f"leak-{n}", scopes=("api", "read_cluster")) for n in range(2, 5)]
            + [token("leak-new")]
        )
        local_api.set_faults(lose_next_creates=1, error_after_next_creates=1)
        cli("apply", manifest, *connection, "-v", "--auto-approve", "--secrets-out", str(dotenv))
        local_api.set_faults(fail_next=1, fail_status=503)
        cli("plan", manifest, *connection, "-vv", "--detailed-exitcode")
        local_api.reset_faults()

        # Failures, with tracebacks: a server error, a refused key, a dead endpoint.
        ws.declare(*ws.specs.values(), token("leak-doomed"))
        local_api.set_faults(error_rate=1.0, error_status=500)
        cli("apply", manifest, *connection, "-vv", "--auto-approve", "--secrets-out", str(dotenv))
        local_api.reset_faults()
        wrong = "rca_" + "W" * 43
        REGISTRY.add_secret(wrong, "wrong api key")
        cli(
            "plan", manifest, "--endpoint", local_api.url, "--api-key", wrong, "--state", "x", "-vv"
        )
        assert runs[-1].code == 1 and "refused the API key" in runs[-1].err, runs[-1]
        cli("plan", manifest, "--endpoint", "http://127.0.0.1:9", "--api-key", key, "-vv")
        assert runs[-1].code == 1, runs[-1]

        # The key from the environment and from BentoML's config file, at -vv.
        cli(
            "apply",
            manifest,
            "--state",
            str(ws.state_path),
            "-vv",
            "--auto-approve",
            "--secrets-out",
            str(dotenv),
            env={"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": key},
        )
        assert runs[-1].code == 0, runs[-1]
        _bentoml_config(tmp_path, local_api.url, key)
        cli("plan", manifest, "--state", str(ws.state_path), "-vv", "--detailed-exitcode")
        assert runs[-1].code == 0, runs[-1]

        # A pasted key (trailing newline), and the config's key asked to go elsewhere.
        pasted = key + "\n"
        REGISTRY.add_secret(pasted, "pasted api key")
        cli("plan", manifest, "--endpoint", local_api.url, "--api-key", pasted, "-vv")
        assert runs[-1].code == 1 and "check how it was pasted" in runs[-1].err, runs[-1]
        _bentoml_config(tmp_path, "https://cloud.example.invalid", key)
        cli("plan", manifest, "--endpoint", local_api.url, "--state", str(ws.state_path), "-vv")
        assert runs[-1].code == 1 and "pass --api-key" in runs[-1].err, runs[-1]
        _bentoml_config(tmp_path, local_api.url, key)

        # The objects that hold secrets, as a careless log line would print them.
        api = ApiTokenAPI(RestClient(endpoint=local_api.url, api_key=key))
        created = api.create("leak-object", scopes=["api"])
        assert created.token
        objects = [
            created,
            str(created),
            created.to_dict(),
            created.to_yaml(),
            created.model_dump(),
            created.model_dump_json(),
            api.client,
            resolve_connection(endpoint=local_api.url, api_key=key, env={}),
            SessionSettings(endpoint=local_api.url, api_key=key),
        ]
        for index, thing in enumerate(objects):
            REGISTRY.record(f"repr of object {index}", repr(thing))
            REGISTRY.record(f"str of object {index}", str(thing))
        api.delete(created.uid)
        api.client.close()

    ws.record()
    ws.specs.pop("leak-doomed")
    ws.declare(*list(ws.specs.values()))
    assert ws.apply().code == 0
    # Every live token's value was delivered, to one secrets file or the other.
    delivered = {
        principal.token_uid
        for path in (ws.secrets_path, dotenv)
        for value in REGISTRY.add_sink_file(path).values()
        if (principal := local_api.store.authenticate(value)) is not None
    }
    assert {token.uid for token in ws.live()} <= delivered
    REGISTRY.record_file(plan_file, "plan file")
    REGISTRY.record_state_files(ws.state_path)
    for run in runs:
        assert "Traceback" not in run.err or "-vv" in run.args, run

    scanned = REGISTRY.artifacts_since(mark)
    leaks = REGISTRY.leaks(since=mark)
    values = len(REGISTRY.secrets_of_kind("token value"))
    with capsys.disabled():
        print(
            f"\nleak scenario: {len(runs)} CLI runs, {len(scanned)} artifacts "
            f"({sum(len(t) for _l, t in scanned)} characters) scanned for "
            f"{REGISTRY.secret_count} secrets ({REGISTRY.secret_count - secrets_before} new "
            f"here; {values} token values in the session): {len(leaks)} leaks"
        )
    assert not leaks, "\n".join(map(str, leaks))
    assert sum("-vv" in r.args and "Traceback" in r.err for r in runs) >= 3


# ---------------------------------------------------------------- a stub HTTP(S) server

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Stub:
    url: str = ""
    respond: Callable[[str, str], Reply] = lambda method, path: (200, {}, EMPTY_LISTING)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def stub_factory() -> Iterator[Callable[..., Stub]]:
    servers: list[ThreadingHTTPServer] = []

    def start(context: ssl.SSLContext | None = None) -> Stub:
        stub = Stub()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                stub.requests.append((self.command, self.path, dict(self.headers.items())))
                status, headers, body = stub.respond(self.command, self.path)
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        scheme = "https" if context is not None else "http"
        stub.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        return stub

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _manifest(tmp_path: Path) -> str:
    path = tmp_path / "m.yaml"
    path.write_text("tokens:\n  - name: my-token\n    scopes: [api]\n")
    return str(path)


# ---------------------------------------------------------------- where the key goes


def test_a_server_echoing_the_key_does_not_make_us_print_it(
    stub_factory: Callable[..., Stub], tmp_path: Path
) -> None:
    stub = stub_factory()
    key = "rca_" + "E" * 43
    REGISTRY.add_secret(key, "api key")

    def echo(method: str, path: str) -> Reply:
        message = f"API key {key} is not allowed here"
        return 400, {}, json.dumps({"error": message, "message": message}).encode()

    stub.respond = echo
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        stub.url,
        "--api-key",
        key,
        "--state",
        "s.json",
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "is not allowed here" in result.err and "[API key]" in result.err, result
    assert key not in result.text


def test_the_key_is_sent_only_to_the_endpoint_never_after_a_redirect(
    stub_factory: Callable[..., Stub], tmp_path: Path
) -> None:
    elsewhere = stub_factory()
    endpoint = stub_factory()
    endpoint.respond = lambda method, path: (307, {"location": elsewhere.url + path}, b"")
    key = "rca_" + "R" * 43
    REGISTRY.add_secret(key, "api key")
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        endpoint.url,
        "--api-key",
        key,
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "redirected (HTTP 307" in result.err and "use the final URL" in result.err, result
    assert elsewhere.requests == []
    assert len(endpoint.requests) == 1
    _method, _path, headers = endpoint.requests[0]
    sent = {name.lower(): value for name, value in headers.items()}
    assert sent["x-yatai-api-token"] == key
    assert not any(key in value for name, value in sent.items() if name != "x-yatai-api-token")


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("http://example.invalid", "refusing to send the API key over plain http"),
        ("http://10.255.255.1:81", "refusing to send the API key over plain http"),
        ("ftp://example.com", "is not an http(s) URL"),
        ("https://user:pw@example.com", "must not carry credentials"),
    ],
)
def test_unsafe_endpoints_are_refused_before_any_network(
    endpoint: str, fragment: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        endpoint,
        "--api-key",
        "k" * 20,
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert fragment in result.err, result
    assert "Traceback" not in result.err
    # 10.255.255.1 does not answer: trying to connect would take the 30 s timeout.
    assert time.monotonic() - started < 5


def test_allow_insecure_http_lets_plain_http_through(
    stub_factory: Callable[..., Stub], tmp_path: Path
) -> None:
    """With the flag the request is made: to a name that does not resolve, it fails as a
    connection error instead of the refusal."""
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        "http://example.invalid",
        "--api-key",
        "k" * 20,
        "--allow-insecure-http",
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "refusing" not in result.err
    assert "cannot connect to http://example.invalid" in result.err, result
    stub = stub_factory()
    loopback = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        stub.url.replace("127.0.0.1", "localhost"),
        "--api-key",
        "k" * 20,
        "--state",
        str(tmp_path / "s2.json"),
        cwd=tmp_path,
    )
    assert loopback.code == 0, loopback


# ---------------------------------------------------------------- TLS


@pytest.fixture
def tls_stub(stub_factory: Callable[..., Stub], tmp_path: Path) -> tuple[Stub, Path]:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return stub_factory(context), ca_file


def test_tls_is_verified_by_default(tls_stub: tuple[Stub, Path], tmp_path: Path) -> None:
    stub, _ca = tls_stub
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        stub.url,
        "--api-key",
        "k" * 20,
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "CERTIFICATE_VERIFY_FAILED" in result.err or "certificate" in result.err, result
    assert "Traceback" not in result.err
    assert stub.requests == [], "the key must not be sent before the certificate is checked"


def test_ca_bundle_is_used_to_verify_tls(tls_stub: tuple[Stub, Path], tmp_path: Path) -> None:
    stub, ca_file = tls_stub
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        stub.url,
        "--api-key",
        "k" * 20,
        "--ca-bundle",
        str(ca_file),
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 0, result
    assert "my-token" in result.out
    assert [request[0] for request in stub.requests] == ["GET"]


def test_a_client_error_never_carries_the_key(local_api: LocalApi) -> None:
    """ApiError messages from every failing call name the endpoint, never the key."""
    key = local_api.admin_key
    api = ApiTokenAPI(RestClient(endpoint=local_api.url, api_key=key, max_retries=0))
    local_api.set_faults(error_rate=1.0)
    messages = []
    for call in (
        lambda: api.list(),
        lambda: api.create("x", scopes=["api"]),
        lambda: api.get("tok_1"),
        lambda: api.delete("tok_1"),
    ):
        with pytest.raises(ApiError) as caught:
            call()
        messages.append(str(caught.value))
    api.client.close()
    local_api.reset_faults()
    for index, message in enumerate(messages):
        REGISTRY.record(f"ApiError message {index}", message)
    assert not any(key in message for message in messages)


def test_a_ca_bundle_that_is_not_pem_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bundle.pem"
    bogus.write_text("not a certificate\n")
    result = run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        "https://127.0.0.1:9",
        "--api-key",
        "k" * 20,
        "--ca-bundle",
        str(bogus),
        "--state",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "Traceback" not in result.err
    assert result.err.startswith("Error: --ca-bundle"), result


# ---------------------------------------------------------------- what a server echoes


ENV_SECRETS = {
    "VAULT_TOKEN": "hvs." + "V" * 40,
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/" + "A" * 20,
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2Vj" + "S" * 40,
}


def _plan_against(stub: Stub, tmp_path: Path, key: str, *verbose: str) -> Any:
    return run_cli(
        "plan",
        _manifest(tmp_path),
        "--endpoint",
        stub.url,
        "--api-key",
        key,
        "--state",
        str(tmp_path / "s.json"),
        *verbose,
        cwd=tmp_path,
        env=ENV_SECRETS,
    )


@pytest.mark.parametrize("verbose", [(), ("-v",), ("-vv",)])
@pytest.mark.parametrize(
    "echo",
    [
        "long-message",
        "trace-id",
        "content-type",
        "location",
    ],
)
def test_no_configured_secret_survives_a_server_echo(
    stub_factory: Callable[..., Stub], tmp_path: Path, echo: str, verbose: tuple[str, ...]
) -> None:
    """The key and the environment's credentials, echoed in a body (past the point where
    the message is cut), a trace id, a content type or a redirect, are blanked before
    anything is shortened: not even their start is printed."""
    stub = stub_factory()
    key = "rca_" + "T" * 43
    REGISTRY.add_secret(key, "api key")
    for name, value in ENV_SECRETS.items():
        REGISTRY.add_secret(value, name)
    echoed = " ".join([key, *ENV_SECRETS.values()])

    def respond(method: str, path: str) -> Reply:
        if echo == "long-message":
            message = "x" * 290 + echoed
            return 400, {}, json.dumps({"message": message}).encode()
        if echo == "trace-id":
            return 500, {"x-trace-id": echoed}, b"{}"
        if echo == "content-type":
            return 200, {"content-type": f"text/html; {echoed}"}, b"<html>"
        return 307, {"location": "https://elsewhere.invalid/" + "p" * 250 + echoed}, b""

    stub.respond = respond
    result = _plan_against(stub, tmp_path, key, *verbose)
    assert result.code == 1, result
    assert "[API key]" in result.err, result
    for secret in (key, *ENV_SECRETS.values()):
        assert secret[:8] not in result.text, result
    if "-vv" not in verbose:
        assert len(result.err.strip().splitlines()) == 1, result


# ---------------------------------------------------------------- secret stores (issue 12)


def test_store_credentials_and_values_never_leak_at_any_verbosity(
    stores: Stores, local_api: LocalApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply delivering to OpenBao, Secrets Manager and commands, at -v and -vv with every
    logger at DEBUG, through successes and every kind of failure (a refused token, a
    command that fails after Vault took the value, one that prints what it inherited):
    neither VAULT_TOKEN, nor the AWS secret key, nor a value appears anywhere."""
    for name in (*CLEARED_ENV, "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    ws = StoreWorkspace(tmp_path / "ws", local_api, stores)
    assert REGISTRY.secrets_of_kind("vault token") and REGISTRY.secrets_of_kind("AWS secret")
    # leakcheck registers these from every run's environment too (STORE_CREDENTIAL_VARS).
    mark = REGISTRY.mark()
    noisy = 'exec:cat; echo; echo "vault=$VAULT_TOKEN aws=$AWS_SECRET_ACCESS_KEY"'
    failing = 'exec:cat >&2; echo " $VAULT_TOKEN"; exit 4'
    runs = []

    def cli(*args: str, env: dict[str, str] | None = None) -> None:
        connection = ["--endpoint", local_api.url, "--api-key", local_api.admin_key]
        connection += ["--state", str(ws.state_path)]
        with monkeypatch.context() as patched:
            for key, value in {**ws.env, **(env or {})}.items():
                patched.setenv(key, value)
            patched.chdir(ws.root)  # manifests/ and reconciler.yaml of the workspace
            runs.append(run_cli(*connection, *args, cwd=ws.root))

    with all_loggers_at_debug():
        for verbosity in ("-v", "-vv"):
            names = [f"leak{verbosity[1:]}-{n}" for n in range(3)]
            ws.declare(*(token(name) for name in names))
            cli("plan", verbosity)
            cli("apply", "--auto-approve", verbosity, "--secrets-out", ws.vault,
                "--secrets-out", ws.aws, "--secrets-out", noisy)  # fmt: skip
            assert runs[-1].code == 0, runs[-1]
            ws.declare(*(token(name) for name in names), token(f"doomed{verbosity[1:]}"))
            cli("apply", "--auto-approve", verbosity, "--secrets-out", ws.vault,
                env={"VAULT_TOKEN": "root-" + "f" * 40})  # fmt: skip
            assert runs[-1].code == 1 and "vault://" in runs[-1].err, runs[-1]
            cli("apply", "--auto-approve", verbosity, "--secrets-out", ws.vault,
                "--secrets-out", failing)  # fmt: skip
            assert runs[-1].code == 1 and "status 4" in runs[-1].err, runs[-1]
            cli("apply", "--auto-approve", verbosity, "--secrets-out", ws.aws,
                env={"AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:9"})  # fmt: skip
            assert runs[-1].code == 1 and "aws-sm://" in runs[-1].err, runs[-1]
    REGISTRY.add_secret("root-" + "f" * 40, "wrong vault token")
    for name in ws.owned():
        ws.vault_document(name)  # registers every delivered value
    REGISTRY.record_state_files(ws.state_path)
    assert "***" in runs[1].text  # the command's echo of the value, masked
    assert "[VAULT_TOKEN]" in runs[1].text and "[AWS_SECRET_ACCESS_KEY]" in runs[1].text
    leaks = REGISTRY.leaks(since=mark)
    assert not leaks, "\n".join(map(str, leaks))


# ---------------------------------------------------------------- every command of a workspace


def test_no_secret_value_or_api_key_leaks_anywhere(ws: Workspace) -> None:
    outputs: list[CliResult] = []
    ws.declare(token("ci-deployer", ["api"]), token("reader", ["read_cluster"]))
    outputs.append(ws.apply("-v"))
    ws.declare(token("ci-deployer", ["api", "write_cluster"]), token("reader", ["read_cluster"]))
    plan_file = ws.root / "plan.json"
    outputs.append(ws.plan("--out", str(plan_file), "-vv"))
    outputs.append(ws.plan("--format", "json"))
    outputs.append(ws.plan("--format", "markdown"))
    outputs.append(ws.run("show", str(plan_file)))
    outputs.append(
        ws.run("apply", "--auto-approve", "--secrets-out", str(ws.secrets_path), str(plan_file))
    )
    # The key from the environment rather than a flag, and an API failure's error path.
    ws.declare(token("ci-deployer", ["api"]), token("reader", ["read_cluster"]))
    ws.api.set_faults(fail_next=100, fail_status=500)
    env_connection = {
        "BENTO_CLOUD_API_ENDPOINT": ws.api.url,
        "BENTO_CLOUD_API_KEY": ws.api.admin_key,
    }
    outputs.append(
        run_cli_subprocess(
            "--state", str(ws.state_path), "plan", "-vv", cwd=ws.root, env=env_connection
        )
    )
    ws.api.reset_faults()
    outputs.append(ws.run("state", "list"))
    outputs.append(ws.run("state", "show", "ci-deployer"))

    assert [r.exit_code for r in outputs] == [0, 0, 0, 0, 0, 0, 1, 0, 0], outputs
    assert "HTTP 500" in outputs[6].stderr
    assert "Traceback" in outputs[6].stderr  # -vv shows it: it must not carry the key either
    secrets = ws.secrets()
    # reader once, ci-deployer twice (created, then replaced): three values in all.
    assert set(secrets) == {"ci-deployer", "reader"}
    forbidden = {*secrets.values(), ws.api.admin_key}
    files = [ws.state_path, plan_file, *ws.state_path.parent.iterdir()]
    assert ws.state_path.with_name(ws.state_path.name + ".backup") in files
    texts = {f"output of {r.args}": r.output for r in outputs}
    texts |= {str(path): path.read_text(encoding="utf-8") for path in files}
    for where, text in texts.items():
        for value in forbidden:
            assert value not in text, f"a secret leaked into {where}"
        assert "rct_" not in text, f"something like a token value is in {where}"
