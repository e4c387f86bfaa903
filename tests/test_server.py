"""The local API over real HTTP: endpoints, the shapes of docs/wire-format.md, auth, paging,
persistence, faults."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from reconciler.server.embedded import LocalServer, admin_key_path, resolve_admin_key
from reconciler.server.faults import FaultInjector, Faults
from reconciler.server.store import Store, hash_secret
from reconciler.server.wire import ApiToken, ApiTokenList, CreatedApiToken, User

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory

TOKENS = "/api/v1/api_tokens"
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
TOKEN_KEYS = {
    "uid",
    "created_at",
    "updated_at",
    "deleted_at",
    "name",
    "resource_type",
    "labels",
    "description",
    "scopes",
    "user",
    "organization",
    "expired_at",
    "last_used_at",
    "is_expired",
    "is_api_token",
    "is_organization_token",
    "is_global_access",
}
ORG_KEYS = {
    "uid",
    "created_at",
    "updated_at",
    "deleted_at",
    "name",
    "resource_type",
    "labels",
    "description",
}
USER_KEYS = {"name", "email", "first_name", "last_name"}


def create(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "description": None, "scopes": None, "expired_at": None, **fields}
    response = client.post(TOKENS, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def check_token_shape(token: dict[str, Any], *, with_secret: bool = False) -> None:
    """Every key docs/wire-format.md section 4 requires, with the types BentoML's client accepts."""
    expected = TOKEN_KEYS | ({"token"} if with_secret else set())
    assert set(token) == expected
    (CreatedApiToken if with_secret else ApiToken).model_validate(token)
    assert isinstance(token["description"], str)
    assert isinstance(token["labels"], list)
    assert isinstance(token["scopes"], list)
    assert token["resource_type"] == "api_token"
    assert set(token["user"]) == USER_KEYS
    assert all(isinstance(v, str) for v in token["user"].values())
    assert set(token["organization"]) == ORG_KEYS
    assert token["organization"]["resource_type"] == "organization"
    assert token["organization"]["labels"] == []
    assert isinstance(token["organization"]["description"], str)
    for key in ("created_at", "updated_at", "deleted_at", "expired_at", "last_used_at"):
        value = token[key]
        assert value is None or RFC3339_Z.match(value), (key, value)
    assert RFC3339_Z.match(token["created_at"])
    assert RFC3339_Z.match(token["organization"]["created_at"])
    for key in ("is_expired", "is_api_token", "is_organization_token", "is_global_access"):
        assert isinstance(token[key], bool)


def wire_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# endpoints and shapes


def test_create_answers_200_with_the_full_token_and_its_secret(local_api: LocalApi) -> None:
    with local_api.client() as client:
        response = client.post(
            TOKENS,
            json={"name": "ci-deployer", "description": None, "scopes": None, "expired_at": None},
        )
    assert response.status_code == 200
    token = response.json()
    check_token_shape(token, with_secret=True)
    assert token["name"] == "ci-deployer"
    assert token["description"] == ""
    assert token["scopes"] == []
    assert token["labels"] == []
    assert token["expired_at"] is None
    assert token["is_expired"] is False
    assert token["uid"].startswith("tok_")
    assert token["token"].startswith("rct_") and len(token["token"]) > 40
    assert token["user"]["name"] == "admin"


def test_create_with_every_field(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(
            client,
            "full",
            description="Deploys bentos",
            scopes=["api", "read_cluster", "api"],
            expired_at="2031-12-27 21:24:30.123456",
        )
    assert token["description"] == "Deploys bentos"
    assert token["scopes"] == ["api", "read_cluster"]
    assert token["expired_at"] == "2031-12-27T21:24:30.123456Z"
    assert token["is_expired"] is False


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2031-01-01 12:00:00.000000", "2031-01-01T12:00:00.000000Z"),
        ("2031-01-01 12:00:00", "2031-01-01T12:00:00.000000Z"),
        ("2031-01-01T12:00:00Z", "2031-01-01T12:00:00.000000Z"),
        ("2031-01-01T12:00:00.5+05:00", "2031-01-01T07:00:00.500000Z"),
        ("2031-01-01", "2031-01-01T00:00:00.000000Z"),
    ],
)
def test_expired_at_formats(local_api: LocalApi, sent: str, stored: str) -> None:
    with local_api.client() as client:
        token = create(client, "exp", expired_at=sent)
        assert token["expired_at"] == stored
        assert client.get(f"{TOKENS}/{token['uid']}").json()["expired_at"] == stored


def test_get_returns_the_token_without_its_secret(local_api: LocalApi) -> None:
    with local_api.client() as client:
        created = create(client, "getme", description="d", scopes=["api"])
        response = client.get(f"{TOKENS}/{created['uid']}")
    assert response.status_code == 200
    token = response.json()
    check_token_shape(token)
    assert "token" not in token
    del created["token"]
    assert token == created


def test_get_unknown_uid_is_404_json(local_api: LocalApi) -> None:
    with local_api.client() as client:
        response = client.get(f"{TOKENS}/tok_missing")
    assert response.status_code == 404
    assert "record not found" in response.json()["error"]
    assert set(response.json()) == {"error"}  # Yatai's error body: one key


def test_delete_answers_200_with_the_deleted_token(local_api: LocalApi) -> None:
    with local_api.client() as client:
        created = create(client, "doomed")
        response = client.delete(f"{TOKENS}/{created['uid']}")
        assert response.status_code == 200
        deleted = response.json()
        check_token_shape(deleted)
        assert deleted["uid"] == created["uid"]
        assert deleted["deleted_at"] is not None
        assert client.get(f"{TOKENS}/{created['uid']}").status_code == 404
        assert client.delete(f"{TOKENS}/{created['uid']}").status_code == 404
        assert client.get(TOKENS).json()["total"] == 0


def test_delete_unknown_uid_is_404(local_api: LocalApi) -> None:
    with local_api.client() as client:
        response = client.delete(f"{TOKENS}/tok_nope")
    assert response.status_code == 404
    assert response.json()["error"]


def test_list_shape_and_order(local_api: LocalApi) -> None:
    with local_api.client() as client:
        names = [f"tok-{n}" for n in range(5)]
        for name in names:
            create(client, name)
        response = client.get(TOKENS, params={"start": 0, "count": 100})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"start", "count", "total", "items"}
    ApiTokenList.model_validate(body)
    assert (body["start"], body["count"], body["total"]) == (0, 100, 5)
    assert [t["name"] for t in body["items"]] == names[::-1]
    for token in body["items"]:
        check_token_shape(token)
        assert "token" not in token


def test_list_of_nothing_has_empty_items(local_api: LocalApi) -> None:
    with local_api.client() as client:
        body = client.get(TOKENS, params={"start": 0, "count": 100}).json()
    assert body == {"start": 0, "count": 100, "total": 0, "items": []}


def test_list_search_is_a_substring_of_the_name(local_api: LocalApi) -> None:
    with local_api.client() as client:
        for name in ("ci-deployer", "ci-reader", "ops-admin", "deploy-bot"):
            create(client, name)
        body = client.get(TOKENS, params={"search": "deploy"}).json()
        assert sorted(t["name"] for t in body["items"]) == ["ci-deployer", "deploy-bot"]
        assert body["total"] == 2
        body = client.get(TOKENS, params={"search": "ci-", "count": 1}).json()
        assert [t["name"] for t in body["items"]] == ["ci-reader"]
        assert body["total"] == 2
        assert client.get(TOKENS, params={"search": "zzz"}).json()["items"] == []
        assert client.get(TOKENS, params={"search": ""}).json()["total"] == 4


def test_paging_with_a_page_size_cap(local_api_factory: LocalApiFactory) -> None:
    api = local_api_factory(max_page_size=100)
    uids = api.store.seed_tokens(1050)
    api.reset_stats()
    seen: list[str] = []
    with api.client() as client:
        start = 0
        while True:
            body = client.get(TOKENS, params={"start": start, "count": 1000}).json()
            assert body["start"] == start
            assert body["count"] == 100
            assert body["total"] == 1050
            seen.extend(t["uid"] for t in body["items"])
            if len(body["items"]) < body["count"]:
                break
            start += len(body["items"])
    assert seen == uids[::-1]
    assert api.requests("GET /api/v1/api_tokens") == 11


def test_list_start_beyond_the_end(local_api: LocalApi) -> None:
    local_api.store.seed_tokens(3)
    with local_api.client() as client:
        body = client.get(TOKENS, params={"start": 10, "count": 5}).json()
    assert body == {"start": 10, "count": 5, "total": 3, "items": []}


@pytest.mark.parametrize(
    "params",
    [{"start": -1}, {"count": -1}, {"start": "x"}, {"count": "1.5"}, {"search": "a" * 300}],
)
def test_list_rejects_bad_paging(local_api: LocalApi, params: dict[str, Any]) -> None:
    with local_api.client() as client:
        response = client.get(TOKENS, params=params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_listing_10000_tokens_is_fast(local_api: LocalApi) -> None:
    local_api.store.seed_tokens(10_000)
    with local_api.client() as client:
        client.get(TOKENS, params={"count": 1})
        began = time.perf_counter()
        total = 0
        for start in range(0, 10_000, 1000):
            total += len(client.get(TOKENS, params={"start": start, "count": 1000}).json()["items"])
        elapsed = time.perf_counter() - began
    assert total == 10_000
    # Around 25 ms a page on a laptop; the bound only catches an accidental O(n) per row.
    assert elapsed < 5.0


def test_auth_current_returns_the_key_holder(local_api: LocalApi) -> None:
    with local_api.client() as client:
        response = client.get("/api/v1/auth/current")
        assert response.status_code == 200
        User.model_validate(response.json())
        assert response.json()["name"] == "admin"
        secret = create(client, "as-key")["token"]
    with local_api.client(secret) as client:
        assert client.get("/api/v1/auth/current").json()["name"] == "admin"


# authentication


@pytest.mark.parametrize("key", [None, "", "wrong", "rct_" + "x" * 43])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", TOKENS),
        ("POST", TOKENS),
        ("GET", f"{TOKENS}/tok_x"),
        ("DELETE", f"{TOKENS}/tok_x"),
        ("GET", "/api/v1/auth/current"),
    ],
)
def test_every_route_needs_a_valid_key(
    local_api: LocalApi, key: str | None, method: str, path: str
) -> None:
    headers = {"X-YATAI-API-TOKEN": key} if key is not None else {}
    response = httpx.request(method, local_api.url + path, headers=headers, json={"name": "x"})
    assert response.status_code == 401
    assert response.json()["error"]


def test_a_created_token_is_a_valid_key(local_api: LocalApi) -> None:
    with local_api.client() as admin:
        secret = create(admin, "machine", scopes=["api"])["token"]
    with local_api.client(secret) as client:
        assert client.get(TOKENS).status_code == 200
        child = create(client, "child")
        assert child["user"]["name"] == "admin"


def test_deleted_token_stops_working_at_once(local_api: LocalApi) -> None:
    with local_api.client() as admin:
        token = create(admin, "short-lived", scopes=["api"])
        with local_api.client(token["token"]) as client:
            assert client.get(TOKENS).status_code == 200
            admin.delete(f"{TOKENS}/{token['uid']}")
            assert client.get(TOKENS).status_code == 401


def test_expired_token_is_refused(local_api: LocalApi) -> None:
    store = local_api.store
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    record, secret = store.create_token(store.default_user, "expired", expired_at=past)
    with local_api.client(secret) as client:
        assert client.get(TOKENS).status_code == 401
    with local_api.client() as client:
        token = client.get(f"{TOKENS}/{record.uid}").json()
    assert token["is_expired"] is True


def test_token_expiring_soon_works_until_it_expires(local_api: LocalApi) -> None:
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    with local_api.client() as admin:
        token = create(admin, "soon", scopes=["api"], expired_at=soon.isoformat())
    with local_api.client(token["token"]) as client:
        assert client.get(TOKENS).status_code == 200
        time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.05)
        assert client.get(TOKENS).status_code == 401


def test_last_used_at_is_maintained(local_api: LocalApi) -> None:
    with local_api.client() as admin:
        token = create(admin, "used")
        assert token["last_used_at"] is None
        with local_api.client(token["token"]) as client:
            client.get("/api/v1/auth/current")
        used = admin.get(f"{TOKENS}/{token['uid']}").json()["last_used_at"]
    assert used is not None
    assert abs(wire_time(used) - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_tokens_are_private_to_their_user(local_api: LocalApi) -> None:
    other = local_api.store.create_user("other", email="other@example.com")
    other_key = local_api.store.create_api_key(other)
    with local_api.client() as admin:
        mine = create(admin, "mine")
    with local_api.client(other_key) as client:
        assert client.get(TOKENS).json()["total"] == 0
        assert client.get(f"{TOKENS}/{mine['uid']}").status_code == 404
        assert client.delete(f"{TOKENS}/{mine['uid']}").status_code == 404
        theirs = create(client, "theirs")
        assert theirs["user"]["name"] == "other"
        assert client.get("/_admin/stats").status_code == 403
    with local_api.client() as admin:
        assert [t["name"] for t in admin.get(TOKENS).json()["items"]] == ["mine"]


# secrets


def test_the_secret_is_returned_only_by_create_and_stored_hashed(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(client, "secretive")
        secret = token["token"]
        bodies = [
            client.get(TOKENS).text,
            client.get(f"{TOKENS}/{token['uid']}").text,
            client.delete(f"{TOKENS}/{token['uid']}").text,
        ]
    assert all(secret not in body and '"token"' not in body for body in bodies)
    local_api.stop()
    raw = b"".join(p.read_bytes() for p in local_api.db_path.parent.glob("*.db*"))
    assert secret.encode() not in raw
    assert local_api.admin_key.encode() not in local_api.db_path.read_bytes()
    with sqlite3.connect(local_api.db_path) as db:
        (hashed,) = db.execute(
            "SELECT hashed_token FROM tokens WHERE uid = ?", (token["uid"],)
        ).fetchone()
    assert hashed == hashlib.sha256(secret.encode()).hexdigest()


# validation


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"description": "no name"}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "DNS-1035"),
        ({"name": "Upper"}, "DNS-1035"),
        ({"name": "1starts-with-digit"}, "DNS-1035"),
        ({"name": "ends-with-"}, "DNS-1035"),
        ({"name": "has_underscore"}, "DNS-1035"),
        ({"name": "a" * 64}, "DNS-1035"),
        ({"name": 5}, "name"),
        ({"name": "ok", "scopes": ["admin"]}, "unknown scope"),
        ({"name": "ok", "scopes": "api"}, "scopes"),
        ({"name": "ok", "description": 5}, "description"),
        ({"name": "ok", "description": "x" * 1025}, "description"),
        ({"name": "ok", "expired_at": "tomorrow"}, "expired_at"),
        ({"name": "ok", "expired_at": "2031-13-45 00:00:00"}, "expired_at"),
        (["name"], "body"),
    ],
)
def test_create_validation(local_api: LocalApi, body: Any, fragment: str) -> None:
    with local_api.client() as client:
        response = client.post(TOKENS, json=body)
        assert response.status_code == 400, response.text
        error = response.json()
        assert fragment in error["error"]
        assert set(error) == {"error"}
        assert client.get(TOKENS).json()["total"] == 0


def test_create_rejects_a_body_that_is_not_json(local_api: LocalApi) -> None:
    with local_api.client() as client:
        response = client.post(
            TOKENS, content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400


def test_a_63_character_name_is_fine(local_api: LocalApi) -> None:
    with local_api.client() as client:
        assert create(client, "a" * 63)["name"] == "a" * 63


def test_body_size_limit(local_api: LocalApi) -> None:
    big = {"name": "big", "description": "x" * 70_000}
    with local_api.client() as client:
        assert client.post(TOKENS, json=big).status_code == 413

        def chunks() -> Any:
            for _ in range(20):
                yield b"x" * 5000

        response = client.post(
            TOKENS, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert client.get(TOKENS).json()["total"] == 0


def test_unknown_routes_and_methods_answer_json(local_api: LocalApi) -> None:
    with local_api.client() as client:
        missing = client.get("/api/v1/nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]
        wrong = client.put(TOKENS, json={})
        assert wrong.status_code == 405
        assert wrong.json()["error"]


def test_openapi_schema_is_accurate(local_api: LocalApi) -> None:
    schema = httpx.get(local_api.url + "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {TOKENS, TOKENS + "/{uid}", "/api/v1/auth/current"}
    assert set(paths[TOKENS]) == {"get", "post"}
    assert set(paths[TOKENS + "/{uid}"]) == {"get", "delete", "patch"}
    for operations in paths.values():
        for operation in operations.values():
            assert "200" in operation["responses"]
            assert "401" in operation["responses"]
            assert "422" not in operation["responses"]
    post_ok = paths[TOKENS]["post"]["responses"]["200"]["content"]["application/json"]
    assert post_ok["schema"]["$ref"].endswith("/CreatedApiToken")
    components = schema["components"]["schemas"]
    assert set(components["ApiToken"]["required"]) == TOKEN_KEYS
    assert "X-YATAI-API-TOKEN" in str(schema["components"]["securitySchemes"])


# concurrency and persistence


def test_concurrent_creates(local_api: LocalApi) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with local_api.client() as client:
                for i in range(10):
                    results.append(create(client, f"w{n}-{i}")["uid"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 80
    with local_api.client() as client:
        assert client.get(TOKENS).json()["total"] == 80


def test_data_and_admin_key_survive_a_restart(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(client, "durable", scopes=["api"])
    url, key = local_api.url, local_api.admin_key
    local_api.restart()
    assert (local_api.url, local_api.admin_key) == (url, key)
    with local_api.client() as client:
        assert client.get(f"{TOKENS}/{token['uid']}").json()["name"] == "durable"
    with local_api.client(token["token"]) as client:
        assert client.get(TOKENS).status_code == 200


def test_a_new_server_on_the_same_database_reuses_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with LocalServer(db) as first:
        key = first.admin_key
        created = httpx.post(
            first.url + TOKENS, headers=first.headers, json={"name": "kept"}
        ).json()
    key_file = admin_key_path(db)
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with LocalServer(db) as second:
        assert second.admin_key == key
        response = httpx.get(f"{second.url}{TOKENS}/{created['uid']}", headers=second.headers)
        assert response.status_code == 200


def test_explicit_api_key_replaces_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with LocalServer(db) as first:
        old = first.admin_key
    with LocalServer(db, api_key="my-own-key") as second:
        assert second.admin_key == "my-own-key"
        headers = {"X-YATAI-API-TOKEN": "my-own-key"}
        assert httpx.get(second.url + TOKENS, headers=headers).status_code == 200
        old_headers = {"X-YATAI-API-TOKEN": old}
        assert httpx.get(second.url + TOKENS, headers=old_headers).status_code == 401
    assert admin_key_path(db).read_text().strip() == "my-own-key"


def test_a_lost_key_file_rotates_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with Store(db) as store:
        first, created = resolve_admin_key(store, db)
        assert created
        assert resolve_admin_key(store, db) == (first, False)
        admin_key_path(db).unlink()
        second, created = resolve_admin_key(store, db)
        assert created and second != first
        assert not store.is_admin_key(first)
        assert store.is_admin_key(second)
        assert store.authenticate(second) is not None
        assert hash_secret(second) != second


def _read_until(stream: Any, marker: str, timeout: float = 20.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        line = stream.readline()
        if not line or time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never printed; got:\n{seen}")
        seen += line
    return seen


def test_run_server_prints_the_admin_key_once(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    script = (
        "import sys\n"
        "from reconciler.server.embedded import run_server\n"
        "run_server('127.0.0.1', 0, sys.argv[1], None, None, 1000, log_level='warning')\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(db)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    proc = serve()
    try:
        assert proc.stderr is not None
        out = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
        out += proc.stderr.readline()
        url = re.search(r"BENTO_CLOUD_API_ENDPOINT=(\S+)", out)
        key = re.search(r"BENTO_CLOUD_API_KEY=(\S+)", out)
        assert url and key
        response = httpx.get(
            url.group(1) + TOKENS, headers={"X-YATAI-API-TOKEN": key.group(1)}, timeout=10
        )
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert admin_key_path(db).read_text().strip() == key.group(1)

    proc = serve()
    try:
        assert proc.stderr is not None
        again = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
        assert key.group(1) not in again
        assert str(admin_key_path(db)) in again
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


# fault injection


def test_admin_endpoints_need_the_admin_key_and_are_hidden(local_api: LocalApi) -> None:
    assert httpx.get(local_api.url + "/_admin/stats").status_code == 401
    headers = {"X-YATAI-API-TOKEN": "wrong"}
    assert httpx.post(local_api.url + "/_admin/faults", headers=headers, json={}).status_code == 401
    with local_api.client() as client:
        secret = create(client, "not-admin")["token"]
        bad = client.post("/_admin/faults", json={"error_rate": 2})
        assert bad.status_code == 400
        assert client.post("/_admin/faults", json={"nonsense": 1}).status_code == 400
    with local_api.client(secret) as client:
        assert client.post("/_admin/faults", json={"error_rate": 1}).status_code == 403
    assert "_admin" not in httpx.get(local_api.url + "/openapi.json").text


def test_injected_errors_carry_a_trace_id(local_api: LocalApi) -> None:
    settings = local_api.set_faults(error_rate=1.0)
    assert settings["error_rate"] == 1.0
    with local_api.client() as client:
        response = client.get(TOKENS)
        assert response.status_code == 503
        assert response.headers["x-trace-id"]
        assert response.json()["error"]
        # Admin routes are never faulted, so a test can always switch faults off.
        local_api.reset_faults()
        assert client.get(TOKENS).status_code == 200
    assert local_api.stats()["faults"]["error"] == 1


def test_injected_rate_limit_has_retry_after(local_api: LocalApi) -> None:
    local_api.set_faults(rate_limit_rate=1.0, retry_after=7)
    with local_api.client() as client:
        response = client.post(TOKENS, json={"name": "limited"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    local_api.reset_faults()
    assert local_api.store.count_tokens() == 0


def test_fail_next_is_exact(local_api: LocalApi) -> None:
    local_api.set_faults(fail_next=2, fail_status=502)
    with local_api.client() as client:
        statuses = [client.get(TOKENS).status_code for _ in range(4)]
    assert statuses == [502, 502, 200, 200]
    local_api.set_faults(fail_next=1, fail_status=429, retry_after=0)
    with local_api.client() as client:
        response = client.get(TOKENS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0"


def test_seeded_faults_are_reproducible(local_api: LocalApi) -> None:
    def run() -> list[int]:
        local_api.set_faults(reset=True, error_rate=0.5, seed=1234)
        with local_api.client() as client:
            return [client.get(TOKENS).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert 503 in first and 200 in first


def test_latency_is_added_without_blocking_other_requests(local_api: LocalApi) -> None:
    local_api.set_faults(latency_ms=300)
    durations: list[float] = []

    def timed() -> None:
        with local_api.client() as client:
            began = time.perf_counter()
            assert client.get(TOKENS).status_code == 200
            durations.append(time.perf_counter() - began)

    began = time.perf_counter()
    threads = [threading.Thread(target=timed) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    assert len(durations) == 5
    assert min(durations) >= 0.29
    assert wall < 1.2  # five sleeps overlapped instead of adding up to 1.5 s


def test_lost_create_commits_but_drops_the_connection(local_api: LocalApi) -> None:
    local_api.set_faults(lose_next_creates=1)
    with local_api.client() as client:
        with pytest.raises(httpx.TransportError):
            client.post(TOKENS, json={"name": "ghost"})
        listed = client.get(TOKENS, params={"search": "ghost"}).json()
        assert [t["name"] for t in listed["items"]] == ["ghost"]
        # Only the next create was lost; the following one answers normally.
        assert create(client, "visible")["name"] == "visible"
    stats = local_api.stats()
    assert stats["faults"]["lost_create"] == 1
    assert stats["requests"]["POST /api/v1/api_tokens"] == 2


def test_lost_create_rate_skips_failed_creates(local_api: LocalApi) -> None:
    local_api.set_faults(lost_create_rate=1.0)
    with local_api.client() as client:
        # A refused create commits nothing, so there is no answer to lose.
        assert client.post(TOKENS, json={"name": "BAD"}).status_code == 400
        for n in range(3):
            with pytest.raises(httpx.TransportError):
                client.post(TOKENS, json={"name": f"lost-{n}"})
        assert client.get(TOKENS).status_code == 200
    assert local_api.store.count_tokens() == 3


def test_faults_given_at_start(local_api_factory: LocalApiFactory) -> None:
    api = local_api_factory(faults=Faults(fail_next=1))
    with api.client() as client:
        assert client.get(TOKENS).status_code == 503
        assert client.get(TOKENS).status_code == 200


def test_stats_count_requests_per_route(local_api: LocalApi) -> None:
    local_api.reset_stats()
    with local_api.client() as client:
        uid = create(client, "counted")["uid"]
        client.get(TOKENS)
        client.get(f"{TOKENS}/{uid}")
        client.delete(f"{TOKENS}/{uid}")
        client.get("/api/v1/auth/current")
    stats = local_api.stats()
    assert stats["requests"] == {
        "POST /api/v1/api_tokens": 1,
        "GET /api/v1/api_tokens": 1,
        "GET /api/v1/api_tokens/{uid}": 1,
        "DELETE /api/v1/api_tokens/{uid}": 1,
        "GET /api/v1/auth/current": 1,
    }
    assert stats["total"] == 5
    assert stats["statuses"] == {"200": 5}


def test_faults_dataclass_validation() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(fail_status=200)
    with pytest.raises(ValueError):
        Faults.from_dict({"latency_ms": "slow"})
    injector = FaultInjector(Faults(fail_next=1))
    assert injector.decide() == ("error", 503)
    assert injector.decide() == ("ok", 200)


def test_shared_api_fixture(shared_api: LocalApi) -> None:
    with shared_api.client() as client:
        name = f"shared-{os.getpid()}-{time.monotonic_ns()}"
        uid = create(client, name)["uid"]
        assert client.get(f"{TOKENS}/{uid}").status_code == 200


def test_lost_create_without_uvicorn_is_a_500_after_the_commit(tmp_path: Path) -> None:
    import asyncio

    from reconciler.server.app import create_app

    async def scenario(store: Store, key: str) -> None:
        app = create_app(store, Faults(lose_next_creates=1))
        transport = httpx.ASGITransport(app=app)
        headers = {"X-YATAI-API-TOKEN": key}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://asgi", headers=headers
        ) as client:
            response = await client.post(TOKENS, json={"name": "in-process"})
            assert response.status_code == 500
            assert (await client.get(TOKENS)).json()["total"] == 1
            assert (await client.post(TOKENS, json={"name": "next"})).status_code == 200

    with Store(tmp_path / "asgi.db") as store:
        asyncio.run(scenario(store, store.create_api_key(admin=True)))
