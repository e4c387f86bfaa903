"""The local API against hostile clients: size limits, authentication edge cases, SQL built
only from constants, keys compared in constant time, and a schemathesis run against its
own OpenAPI schema that must find no 5xx and no response that contradicts the schema."""

from __future__ import annotations

import ast
import collections
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import reconciler.server.app as app_module
import reconciler.server.store as store_module
from reconciler.server.app import MAX_BODY_BYTES

if TYPE_CHECKING:
    from support.local_api import LocalApi

TOKENS = "/api/v1/api_tokens"
AUTH = "X-YATAI-API-TOKEN"
STORE_SOURCE = Path(store_module.__file__)
APP_SOURCE = Path(app_module.__file__)


# ---------------------------------------------------------------- size limits


def test_bodies_over_the_limit_get_413_before_authentication(local_api: LocalApi) -> None:
    big = b'{"name": "x", "description": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with httpx.Client(base_url=local_api.url, timeout=30) as anonymous:
        response = anonymous.post(TOKENS, content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"].startswith("request body larger than")
    json_type = {"content-type": "application/json"}
    with local_api.client() as client:
        under = b'{"name": "under-the-limit", "description": "' + b"x" * 1000 + b'"}'
        assert client.post(TOKENS, content=under, headers=json_type).status_code == 200
        assert client.post(TOKENS, content=big, headers=json_type).status_code == 413
        # Every route, not only create.
        assert client.request("DELETE", f"{TOKENS}/tok_1", content=big).status_code == 413
    assert local_api.store.count_tokens() == 1


def test_admin_routes_do_not_read_bodies_for_strangers(local_api: LocalApi) -> None:
    with httpx.Client(base_url=local_api.url, timeout=30) as anonymous:
        response = anonymous.post("/_admin/faults", content=b"x" * (5 * 1024 * 1024))
    assert response.status_code == 401


def test_huge_headers_and_garbage_requests_are_refused_without_a_500(
    local_api: LocalApi,
) -> None:
    with httpx.Client(base_url=local_api.url, timeout=30) as client:
        try:
            status = client.get(TOKENS, headers={"X-Filler": "x" * 200_000}).status_code
        except httpx.HTTPError:
            status = None  # the server may just close the connection
        assert status is None or 400 <= status < 500
    host, port = local_api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
        answer = sock.recv(1024)
    assert not answer.startswith(b"HTTP/1.1 5")
    with local_api.client() as client:
        assert client.get(TOKENS).status_code == 200  # still serving


# ---------------------------------------------------------------- authentication


def _status(api: LocalApi, key: str | bytes | None, path: str = TOKENS) -> int:
    headers: dict[str, Any] = {} if key is None else {AUTH: key}
    with httpx.Client(base_url=api.url, timeout=30) as client:
        return client.get(path, headers=headers).status_code


def test_keys_that_must_not_work(local_api: LocalApi) -> None:
    store = local_api.store
    admin = local_api.admin_key
    with local_api.client() as client:
        created = client.post(TOKENS, json={"name": "short-lived", "scopes": ["api"]}).json()
    value, uid = created["token"], created["uid"]
    assert _status(local_api, value) == 200  # a live token is a key

    _record, expired = store.create_token(
        store.default_user,
        "expired",
        expired_at=datetime.now(timezone.utc) - timedelta(seconds=1),
    )
    assert _status(local_api, expired) == 401
    with local_api.client() as client:
        assert client.delete(f"{TOKENS}/{uid}").status_code == 200
    assert _status(local_api, value) == 401  # deleted: refused at once

    for wrong in [
        None,
        "",
        admin[:-1],
        admin + "x",
        admin[:-1] + ("A" if admin[-1] != "A" else "B"),
        admin.upper(),
        "x" * 8000,
        "' OR '1'='1",
        "é".encode("latin-1"),
        b"\xff\xfe",
    ]:
        assert _status(local_api, wrong) == 401, wrong
    for path in (f"{TOKENS}/tok_1", "/api/v1/auth/current", "/_admin/stats"):
        assert _status(local_api, "nope-" * 10, path) == 401

    rotated = "rca_" + "R" * 43
    store.set_admin_key(rotated)
    assert _status(local_api, admin) == 401  # the old admin key stops working
    assert _status(local_api, rotated) == 200


def test_a_401_does_not_echo_the_key(local_api: LocalApi) -> None:
    wrong = "rca_" + "Z" * 43
    with httpx.Client(base_url=local_api.url, timeout=30) as client:
        response = client.get(TOKENS, headers={AUTH: wrong})
    assert response.status_code == 401
    assert wrong not in response.text
    assert response.headers["content-type"].startswith("application/json")


def test_another_users_token_is_not_found_not_a_leak(local_api: LocalApi) -> None:
    store = local_api.store
    other = store.create_user("mallory")
    mallory_key = store.create_api_key(other)
    with local_api.client() as client:
        uid = client.post(TOKENS, json={"name": "admins", "scopes": ["api"]}).json()["uid"]
    with local_api.client(mallory_key) as client:
        assert client.get(f"{TOKENS}/{uid}").status_code == 404
        assert client.delete(f"{TOKENS}/{uid}").status_code == 404
        assert client.get(TOKENS).json()["total"] == 0
    assert store.count_tokens() == 1


def test_injection_through_parameters_is_inert(local_api: LocalApi) -> None:
    with local_api.client() as client:
        client.post(TOKENS, json={"name": "victim", "scopes": ["api"]})
        for search in ["' OR 1=1 --", "%", "_", '"; DROP TABLE tokens; --', "\\"]:
            listing = client.get(TOKENS, params={"search": search})
            assert listing.status_code == 200
            assert listing.json()["total"] == 0, search
        for uid in ["tok_1' OR '1'='1", "1; DELETE FROM tokens", "%25", "tok_%"]:
            assert client.delete(f"{TOKENS}/{uid}").status_code == 404
        assert client.get(TOKENS).json()["total"] == 1


# ---------------------------------------------------------------- source checks


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                constants[target.id] = node.value
    return constants


def _is_static_sql(node: ast.expr, constants: dict[str, ast.expr], seen: frozenset[str]) -> bool:
    """True when the SQL text is built from string literals and module constants only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name) and node.id in constants and node.id not in seen:
        return _is_static_sql(constants[node.id], constants, seen | {node.id})
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static_sql(node.left, constants, seen) and _is_static_sql(
            node.right, constants, seen
        )
    if isinstance(node, ast.Tuple):  # the _SCHEMA tuple of statements
        return all(_is_static_sql(e, constants, seen) for e in node.elts)
    return False


def test_store_sql_is_built_from_constants_only() -> None:
    """Every statement the store executes is a literal (or a concatenation of literals and
    module constants); values always travel as parameters. No f-string, %, or format()."""
    tree = ast.parse(STORE_SOURCE.read_text())
    constants = _module_constants(tree)
    read = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_read")
    read_lines = range(read.lineno, (read.end_lineno or read.lineno) + 1)
    calls = 0
    dynamic: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("execute", "executemany", "executescript", "_read"):
            continue
        calls += 1
        sql = node.args[0] if node.args else None
        if isinstance(sql, ast.Name) and sql.id == "statement":
            sql = ast.Name(id="_SCHEMA")  # `for statement in _SCHEMA: cur.execute(statement)`
        if isinstance(sql, ast.Name) and sql.id == "sql" and node.lineno in read_lines:
            continue  # _read(sql, params) passes on what its callers (checked here) give it
        if sql is None or not _is_static_sql(sql, constants, frozenset()):
            dynamic.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
    assert calls >= 15
    assert not dynamic, "SQL not built from constants:\n" + "\n".join(dynamic)

    source = STORE_SOURCE.read_text()
    sql_word = r"(SELECT|INSERT|UPDATE|DELETE|WHERE|CREATE|DROP|ORDER BY|LIMIT)"
    assert not re.search(rf"""\bf["'][^"'\n]*\b{sql_word}\b""", source), "f-string SQL"
    assert not re.search(rf"""["'][^"'\n]*\b{sql_word}\b[^"'\n]*["']\s*%""", source), "% SQL"
    assert not re.search(rf"""\b{sql_word}\b[^"'\n]*["']\s*\.format\(""", source), ".format SQL"


def test_keys_are_compared_in_constant_time() -> None:
    """authenticate() compares digests with hmac.compare_digest, and no server module
    compares a key, digest or hash with == or !=."""
    tree = ast.parse(STORE_SOURCE.read_text())
    authenticate = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "authenticate"
    )
    compared = [
        node
        for node in ast.walk(authenticate)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
    ]
    assert len(compared) >= 2  # API keys and token values
    secret_words = re.compile(r"digest|hash|secret|api_key|token_value|value", re.I)
    for path in sorted(APP_SOURCE.parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
            ):
                text = ast.unparse(node)
                operands = [node.left, *node.comparators]
                names = [ast.unparse(o) for o in operands if not isinstance(o, ast.Constant)]
                if all(secret_words.search(name) for name in names) and len(names) == 2:
                    pytest.fail(f"{path.name}:{node.lineno}: secret compared with ==: {text}")


# ---------------------------------------------------------------- schemathesis

SCHEMATHESIS_EXAMPLES = 25  # per operation and generation mode


def test_schemathesis_finds_no_server_error(
    local_api: LocalApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """Positive and negative cases for every operation of the local API's own schema: no
    5xx, status codes, content types, headers and bodies as the schema says."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis import checks as st_checks

    checks = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_headers_conformance,
        st_checks.response_schema_conformance,
    ]
    headers = {AUTH: local_api.admin_key}
    document = httpx.get(f"{local_api.url}/openapi.json", headers=headers, timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    statuses: dict[str, collections.Counter[int]] = {}

    def exercise(operation: Any, mode: Any, seen: collections.Counter[int]) -> None:
        @settings(
            max_examples=SCHEMATHESIS_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=local_api.url, headers=headers, timeout=30)
            seen[response.status_code] += 1
            assert response.status_code < 500, response.text
            case.validate_response(response, checks=checks, headers=headers)

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        statuses[operation.label] = collections.Counter()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode, statuses[operation.label])
    with capsys.disabled():
        total = sum(sum(c.values()) for c in statuses.values())
        print(f"\nschemathesis: {total} requests, statuses by operation:")
        for label, seen in statuses.items():
            print(f"  {label}: {dict(sorted(seen.items()))}")
    assert len(statuses) >= 5
    assert all(seen for seen in statuses.values())
