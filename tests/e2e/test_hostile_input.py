"""Hostile input: generated manifests through load_manifests and `reconciler validate`, and
malformed API responses from a real HTTP server through ApiTokenAPI and `reconciler plan`.

Every case ends in success or a clear error (ManifestError / ApiError; exit 1, one message,
no traceback), in bounded time and memory, and a plan against a broken API never writes.
Hypothesis runs derandomized with explicit example counts, printed per property.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.cli import CliResult, run_cli

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.errors import ApiError, InvalidResponseError, ManifestError
from reconciler.manifest.loader import load_manifests

# A problem message quotes what it complains about, never all of it.
MAX_MESSAGE = 600
# Per generated case; generous so a slow CI machine does not fail, tight enough to catch a
# blow-up (an alias bomb expanded, a quadratic parse).
MAX_SECONDS = 3.0
# Growth of this process's peak RSS over a whole property.
MAX_RSS_GROWTH_MB = 300


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Property:
    """Counts the examples a property ran and the slowest one; prints a line at the end."""

    name: str
    examples: int = 0
    slowest: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    rss_before: float = field(default_factory=_peak_rss_mb)

    def ran(self, seconds: float, outcome: str) -> None:
        self.examples += 1
        self.slowest = max(self.slowest, seconds)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        assert seconds < MAX_SECONDS, f"one case took {seconds:.2f}s"

    def report(self, capsys: pytest.CaptureFixture[str]) -> None:
        growth = _peak_rss_mb() - self.rss_before
        with capsys.disabled():
            print(
                f"\nhypothesis {self.name}: {self.examples} examples, slowest "
                f"{self.slowest * 1000:.0f} ms, peak RSS +{growth:.0f} MB, outcomes {self.outcomes}"
            )
        assert growth < MAX_RSS_GROWTH_MB


def _check_manifest(path: Path, prop: Property) -> None:
    started = time.perf_counter()
    try:
        load_manifests([path])
        outcome = "valid"
    except ManifestError as exc:
        outcome = "ManifestError"
        assert exc.problems
        for problem in exc.problems:
            assert problem.message and len(problem.message) <= MAX_MESSAGE, problem
            assert "Traceback" not in problem.message
    prop.ran(time.perf_counter() - started, outcome)


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "generated.yaml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(content)
    return path


# ---------------------------------------------------------------- strategies

SCOPES = ["api", "read_organization", "write_organization", "read_cluster", "write_cluster"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**70, max_value=2**14000),  # str() refuses > 4300 digits
    st.floats(),
    st.text(max_size=40),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["never", "90d", "0d", "-1d", "99999999999d", "2027-02-30", "yes", "~"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=16,
)
huge_text = st.integers(min_value=64, max_value=300_000).map(lambda n: "a" * n)
names = st.one_of(
    st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    st.text(max_size=80),
    huge_text,
    values,
)
token_entries = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "description": st.one_of(st.text(max_size=200), huge_text, values),
        "scopes": st.one_of(st.lists(st.sampled_from(SCOPES), max_size=6), values),
        "expires": st.one_of(
            st.sampled_from(["never", "12h", "90d", "2w", "2027-01-31", "2027-01-31T12:00:00Z"]),
            values,
        ),
        "rotate_before": st.one_of(st.sampled_from(["1h", "14d", "3w"]), values),
        "colour": values,
        "scope": values,
    },
)
documents = st.one_of(
    st.fixed_dictionaries({"tokens": st.lists(token_entries, max_size=6)}),
    st.fixed_dictionaries({"tokens": values}),
    st.dictionaries(st.text(max_size=10), values, max_size=3),
    values,
)
FRAGMENTS = [
    "tokens:",
    "  - name: a",
    "    scopes: [api]",
    "- ",
    "  ",
    ":",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    '"',
    "\t",
    "\x00",
    "\ufeff",
    "\u2028",
    "&a",
    "*a",
    "<<: *a",
    "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=",
    "!!set",
    "!!omap",
    "!custom",
    "%YAML 1.1",
    "%TAG ! tag:x,2000:",
    "---",
    "...",
    "? ",
    "|",
    ">-",
    "#",
    "0x" + "f" * 5000,
    "1:" * 2000 + "1",
    "9" * 5000,
    "é✓🙂",
]
fragment_documents = st.lists(st.sampled_from(FRAGMENTS), max_size=30).flatmap(
    lambda parts: st.sampled_from(["\n", " ", ""]).map(lambda sep: sep.join(parts))
)


def _alias_bomb(levels: int, fanout: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"tokens: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _nested(kind: str, depth: int) -> str:
    if kind == "flow-list":
        return "tokens: " + "[" * depth + "]" * depth
    if kind == "flow-map":
        return "tokens: " + "{a: " * depth + "b" + "}" * depth
    if kind == "block-map":
        return "".join("  " * d + f"k{d}:\n" for d in range(min(depth, 3000)))
    return "".join("  " * d + "-\n" for d in range(min(depth, 3000)))


# ---------------------------------------------------------------- manifest properties


def test_random_text_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prop = Property("random text")

    @_settings(250)
    @given(st.text(max_size=400))
    def check(text: str) -> None:
        _check_manifest(_write(tmp_path, text), prop)

    check()
    prop.report(capsys)


def test_random_bytes_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Non-UTF-8 bytes, BOMs, NULs and control characters."""
    prop = Property("random bytes")

    @_settings(150)
    @given(st.binary(max_size=400) | st.text(max_size=100).map(lambda t: t.encode("utf-16")))
    def check(data: bytes) -> None:
        _check_manifest(_write(tmp_path, data), prop)

    check()
    prop.report(capsys)


def test_yaml_fragment_soup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YAML syntax at its edges: tags, anchors, directives, documents, block scalars."""
    prop = Property("YAML fragments")

    @_settings(300)
    @given(fragment_documents)
    def check(text: str) -> None:
        _check_manifest(_write(tmp_path, text), prop)

    check()
    prop.report(capsys)


def test_generated_documents_with_wrong_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Token-shaped documents whose every field may have a wrong type, a huge or unicode
    value, or be misspelt."""
    prop = Property("generated documents")

    @_settings(300)
    @given(documents)
    def check(document: Any) -> None:
        text = yaml.safe_dump(document, allow_unicode=True, width=2**31 - 1)
        _check_manifest(_write(tmp_path, text), prop)

    check()
    prop.report(capsys)


def test_alias_bombs_and_deep_nesting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prop = Property("alias bombs and nesting")

    @_settings(60)
    @given(
        st.one_of(
            st.builds(_alias_bomb, st.integers(2, 12), st.integers(2, 12)),
            st.builds(
                _nested,
                st.sampled_from(["flow-list", "flow-map", "block-map", "block-list"]),
                st.integers(1, 200_000),
            ),
        )
    )
    def check(text: str) -> None:
        _check_manifest(_write(tmp_path, text), prop)

    check()
    prop.report(capsys)


def _assert_clean_cli_failure(result: CliResult) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.err, result
    assert result.err.startswith("Error: "), result
    assert all(len(line) <= MAX_MESSAGE + 100 for line in result.err.splitlines()), result


def test_validate_command_on_generated_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reconciler validate`: exit 0 with a summary, or exit 1 with problems; never a
    traceback."""
    prop = Property("`reconciler validate`")

    @_settings(80)
    @given(st.one_of(documents.map(yaml.safe_dump), fragment_documents, st.binary(max_size=200)))
    def check(content: str | bytes) -> None:
        path = _write(tmp_path, content)
        result = run_cli("validate", str(path), cwd=tmp_path)
        if result.code == 0:
            assert result.out.endswith("valid.\n") and not result.err, result
            outcome = "valid"
        else:
            _assert_clean_cli_failure(result)
            outcome = "exit 1"
        prop.ran(result.seconds, outcome)

    check()
    prop.report(capsys)


BIG_CASES = {
    "alias-bomb-9x9": _alias_bomb(9, 9),
    "flow-nesting-1M": "[" * 1_000_000 + "]" * 1_000_000,
    "name-5MB": "tokens:\n  - name: " + "a" * 5_000_000 + "\n    scopes: [api]\n",
    "hex-int-1MB": "tokens:\n  - name: 0x" + "f" * 1_000_000 + "\n    scopes: [api]\n",
    "over-10MiB": "# " + "x" * (10 * 1024 * 1024) + "\ntokens: []\n",
    "100k-problems": "tokens:\n" + "  - {name: BAD, scopes: []}\n" * 20_000,
}


@pytest.mark.parametrize("content", BIG_CASES.values(), ids=BIG_CASES.keys())
def test_big_hostile_manifests_are_bounded(content: str, tmp_path: Path) -> None:
    """As a separate process so its time and peak memory are its own."""
    path = tmp_path / "big.yaml"
    path.write_text(content)
    env = {**os.environ, "NO_COLOR": "1", "BENTOML_HOME": str(tmp_path / "none")}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "validate", str(path)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    killer = threading.Timer(60, proc.kill)
    killer.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    # wait4 rather than wait: it also tells this child's own peak memory.
    _pid, status, usage = os.wait4(proc.pid, 0)
    killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    seconds = time.monotonic() - started
    stderr = err.decode()
    assert proc.returncode == 1, stderr[:2000]
    assert "Traceback" not in stderr and stderr.startswith("Error: "), stderr[:2000]
    assert all(len(line) <= MAX_MESSAGE + 100 for line in stderr.splitlines())
    assert seconds < 20, f"took {seconds:.1f}s"
    assert usage.ru_maxrss / 1024 < 800, f"peak RSS {usage.ru_maxrss / 1024:.0f} MB"


# ---------------------------------------------------------------- malformed API responses

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeApi:
    """A tiny real HTTP server on 127.0.0.1 answering with whatever ``respond`` returns;
    records every request (method, path, headers)."""

    url: str
    respond: Callable[[str, str, dict[str, list[str]]], Reply]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    # Past this many requests every answer is a 400, so a client stuck in a loop stops.
    budget: int = 5000
    # Clients made by _api(), closed at teardown whatever happened.
    clients: list[RestClient] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _h in self.requests if m not in ("GET", "HEAD")]


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi(url="", respond=lambda method, path, query: (200, {}, b""))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            parts = urlsplit(self.path)
            api.requests.append((self.command, parts.path, dict(self.headers.items())))
            reply: Reply = (400, {}, b'{"error": "request budget exhausted"}')
            if len(api.requests) <= api.budget:
                reply = api.respond(self.command, parts.path, parse_qs(parts.query))
            status, headers, body = reply
            self.send_response(status)
            headers = {"content-type": "application/json", **headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        for client in api.clients:
            client.close()
        server.shutdown()
        server.server_close()


def _token(**changes: Any) -> dict[str, Any]:
    token: dict[str, Any] = {
        "uid": "tok_1",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": None,
        "deleted_at": None,
        "name": "my-token",
        "resource_type": "api_token",
        "labels": [],
        "description": "",
        "scopes": ["api"],
        "user": {"name": "u", "email": "u@example.com", "first_name": "", "last_name": ""},
        "organization": {
            "uid": "org_1",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": None,
            "deleted_at": None,
            "name": "org",
            "resource_type": "organization",
            "labels": [],
            "description": "",
        },
        "expired_at": None,
        "last_used_at": None,
        "is_expired": False,
    }
    for key, value in changes.items():
        if value is _DROP:
            token.pop(key, None)
        else:
            token[key] = value
    return token


_DROP = object()


def _listing(items: Any = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start": 0,
        "count": 100,
        "total": 1,
        "items": [_token()] if items is None else items,
    }
    if items is _DROP:
        del body["items"]
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"

MALFORMED_LISTS: dict[str, Reply] = {
    "empty-body": (200, {}, b""),
    "html-200": (200, {"content-type": "text/html"}, HTML),
    "html-500": (500, {"content-type": "text/html"}, HTML),
    "html-400": (400, {"content-type": "text/html"}, HTML),
    "html-404": (404, {"content-type": "text/html"}, HTML),
    "redirect": (302, {"location": "https://login.example.com/"}, b""),
    "truncated-json": (200, {}, _json(_listing())[:60]),
    "not-utf8": (200, {}, b'{"items": ["\xff\xfe"], "total": 1}'),
    "json-null": (200, {}, b"null"),
    "json-list": (200, {}, _json([_token()])),
    "json-string": (200, {}, b'"ok"'),
    "items-missing": (200, {}, _json(_listing(items=_DROP))),
    "items-null": (200, {}, _json(_listing(items=None) | {"items": None})),
    "items-object": (200, {}, _json(_listing(items={"0": _token()}))),
    "items-string": (200, {}, _json(_listing(items="tok_1"))),
    "items-numbers": (200, {}, _json(_listing(items=[1, 2]))),
    "items-nulls": (200, {}, _json(_listing(items=[None]))),
    "total-missing": (200, {}, _json(_listing(total=_DROP))),
    "total-string": (200, {}, _json(_listing(total="1"))),
    "total-negative": (200, {}, _json(_listing(total=-1))),
    "total-float": (200, {}, _json(_listing(total=1.5))),
    "total-bool": (200, {}, _json(_listing(total=True))),
    "total-short": (200, {}, _json(_listing(items=[_token(), _token(uid="tok_2")], total=1))),
    "total-too-big": (200, {}, _json(_listing(total=3))),
    "uid-missing": (200, {}, _json(_listing(items=[_token(uid=_DROP)]))),
    "uid-null": (200, {}, _json(_listing(items=[_token(uid=None)]))),
    "uid-number": (200, {}, _json(_listing(items=[_token(uid=7)]))),
    "name-missing": (200, {}, _json(_listing(items=[_token(name=_DROP)]))),
    "name-list": (200, {}, _json(_listing(items=[_token(name=["a"])]))),
    "created-garbage": (200, {}, _json(_listing(items=[_token(created_at="yesterday")]))),
    "created-object": (200, {}, _json(_listing(items=[_token(created_at={"s": 1})]))),
    "expired-bad-date": (200, {}, _json(_listing(items=[_token(expired_at="9999-99-99")]))),
    "deleted-garbage": (200, {}, _json(_listing(items=[_token(deleted_at=[])]))),
    "scopes-string": (200, {}, _json(_listing(items=[_token(scopes="api")]))),
    "scopes-null": (200, {}, _json(_listing(items=[_token(scopes=None)]))),
    "scopes-numbers": (200, {}, _json(_listing(items=[_token(scopes=[1, 2])]))),
    "user-string": (200, {}, _json(_listing(items=[_token(user="u")]))),
    "labels-null": (200, {}, _json(_listing(items=[_token(labels=None)]))),
    "labels-strings": (200, {}, _json(_listing(items=[_token(labels=["a"])]))),
    "deeply-nested": (200, {}, b"[" * 100_000 + b"]" * 100_000),
    "nested-items": (200, {}, b'{"total": 1, "items": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
}


# Not what BentoCloud sends, but unambiguous: read as an epoch timestamp and a boolean.
TOLERATED_LISTS: dict[str, Reply] = {
    "created-epoch": (200, {}, _json(_listing(items=[_token(created_at=1700000000)]))),
    "is-expired-string": (200, {}, _json(_listing(items=[_token(is_expired="no")]))),
    "extra-keys": (200, {}, _json(_listing(items=[_token(colour="red")]) | {"next": None})),
}


def _serve(fake: FakeApi, listing: Reply) -> None:
    def respond(method: str, path: str, query: dict[str, list[str]]) -> Reply:
        if method == "GET" and path == "/api/v1/api_tokens":
            return listing
        return 404, {}, _json({"error": "not found", "message": "not found"})

    fake.respond = respond


def _api(fake: FakeApi) -> ApiTokenAPI:
    client = RestClient(endpoint=fake.url, api_key="hostile-test-key-0123456789")
    fake.clients.append(client)
    return ApiTokenAPI(client)


def _run_bounded(call: Callable[[], Any], seconds: float = 20) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging) when it does not return."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not return within {seconds}s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.parametrize("reply", MALFORMED_LISTS.values(), ids=MALFORMED_LISTS.keys())
def test_malformed_list_responses(reply: Reply, fake_api: FakeApi, tmp_path: Path) -> None:
    """ApiTokenAPI.list raises an ApiError (never anything else); `plan` exits 1 with one
    clear message and writes nothing."""
    _serve(fake_api, reply)
    api = _api(fake_api)
    with pytest.raises(ApiError) as caught:
        _run_bounded(api.list)
    assert len(str(caught.value)) <= MAX_MESSAGE, caught.value
    api.client.close()

    result = _plan(fake_api, tmp_path)
    _assert_clean_cli_failure(result)
    assert len(result.err.strip().splitlines()) == 1, result
    assert fake_api.writes() == []
    assert not (tmp_path / "state.json").exists()


def _plan(fake_api: FakeApi, tmp_path: Path) -> CliResult:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("tokens:\n  - name: my-token\n    scopes: [api]\n")
    result: CliResult = _run_bounded(
        lambda: run_cli(
            "plan",
            str(manifest),
            "--endpoint",
            fake_api.url,
            "--api-key",
            "hostile-test-key-0123456789",
            "--state",
            str(tmp_path / "state.json"),
            cwd=tmp_path,
        )
    )
    return result


@pytest.mark.parametrize("reply", TOLERATED_LISTS.values(), ids=TOLERATED_LISTS.keys())
def test_tolerated_list_responses(reply: Reply, fake_api: FakeApi, tmp_path: Path) -> None:
    _serve(fake_api, reply)
    api = _api(fake_api)
    tokens = _run_bounded(api.list)
    api.client.close()
    assert [t.uid for t in tokens] == ["tok_1"]
    result = _plan(fake_api, tmp_path)
    assert result.code == 0, result
    assert "adopt" in result.out, result
    assert fake_api.writes() == []


def test_total_far_beyond_the_items_is_bounded(fake_api: FakeApi) -> None:
    """A server claiming a billion tokens while serving one (it honours start/count) must
    not send the client into a billion requests."""

    def respond(method: str, path: str, query: dict[str, list[str]]) -> Reply:
        start = int(query.get("start", ["0"])[0])
        items = [_token()] if start == 0 else []
        return 200, {}, _json(_listing(items=items, total=1_000_000_000))

    fake_api.respond = respond
    api = _api(fake_api)
    with pytest.raises(InvalidResponseError):
        _run_bounded(api.list)
    assert len(fake_api.requests) < 100


MALFORMED_TOKENS: dict[str, Reply] = {
    "empty-body": (200, {}, b""),
    "html-200": (200, {"content-type": "text/html"}, HTML),
    "truncated": (200, {}, _json(_token(token="rct_secret-value-xyz-0123456789"))[:50]),
    "json-list": (200, {}, _json([_token()])),
    "uid-missing": (200, {}, _json(_token(uid=_DROP, token="rct_secret-value-xyz-0123456789"))),
    "no-token-value": (200, {}, _json(_token())),
    "token-number": (200, {}, _json(_token(token=12345))),
    "deeply-nested": (200, {}, b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("reply", MALFORMED_TOKENS.values(), ids=MALFORMED_TOKENS.keys())
def test_malformed_create_and_get_responses(reply: Reply, fake_api: FakeApi) -> None:
    fake_api.respond = lambda method, path, query: reply
    api = _api(fake_api)
    with pytest.raises(ApiError) as caught:
        _run_bounded(lambda: api.create("my-token", scopes=["api"]))
    assert "rct_secret" not in str(caught.value)
    if reply[2] != _json(_token()):  # a token without its value is a fine `get` answer
        with pytest.raises(ApiError):
            _run_bounded(lambda: api.get("tok_1"))
    api.client.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
token_keys = sorted(_token())


@st.composite
def near_valid_listings(draw: st.DrawFn) -> Any:
    """A valid listing with a few fields replaced by arbitrary JSON, or dropped."""
    token = _token()
    for key in draw(st.lists(st.sampled_from(token_keys), max_size=3)):
        if draw(st.booleans()):
            token.pop(key, None)
        else:
            token[key] = draw(json_values)
    listing = _listing(items=[token])
    for key in draw(st.lists(st.sampled_from(["start", "count", "total", "items"]), max_size=2)):
        listing[key] = draw(json_values)
    return listing


def test_generated_list_responses(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    """Arbitrary JSON and near-valid listings: list() returns tokens or raises ApiError."""
    prop = Property("generated API listings")
    api = _api(fake_api)

    @_settings(200)
    @given(st.one_of(near_valid_listings(), json_values))
    def check(body: Any) -> None:
        _serve(fake_api, (200, {}, _json(body)))
        started = time.perf_counter()
        try:
            tokens = _run_bounded(api.list, 10)
            assert isinstance(tokens, list)
            outcome = "accepted"
        except ApiError as exc:
            assert len(str(exc)) <= MAX_MESSAGE
            outcome = type(exc).__name__
        prop.ran(time.perf_counter() - started, outcome)

    check()
    api.client.close()
    assert fake_api.writes() == []
    prop.report(capsys)
