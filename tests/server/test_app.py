"""The local API's routes over real HTTP (reconciler.server.app): the shapes of
docs/wire-format.md, auth, paging, validation, Yatai's behaviour where servers differ
(the error body, PATCH, scopes), hostile requests, and a schemathesis run against its own
OpenAPI schema."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from support.local_api import create, names

from reconciler.server.wire import ApiToken, ApiTokenList, CreatedApiToken, User

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory
import json
import socket
from typing import TYPE_CHECKING

from reconciler.manifest.spec import MAX_DESCRIPTION

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory
import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.local_api import LocalApi


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


def test_shared_api_fixture(shared_api: LocalApi) -> None:
    with shared_api.client() as client:
        name = f"shared-{os.getpid()}-{time.monotonic_ns()}"
        uid = create(client, name)["uid"]
        assert client.get(f"{TOKENS}/{uid}").status_code == 200


# ---------------------------------------------------------------- Yatai's error body


CURRENT = "/api/v1/auth/current"
AUTH = "X-YATAI-API-TOKEN"


def test_every_error_body_is_yatais(local_api: LocalApi) -> None:
    with local_api.client() as client:
        answers = [
            client.get(f"{TOKENS}/tok_missing"),
            client.delete(f"{TOKENS}/tok_missing"),
            client.patch(f"{TOKENS}/tok_missing", json={"description": "x"}),
            client.post(TOKENS, json={"name": "Bad_Name"}),
            client.post(TOKENS, json={"name": "ok", "scopes": ["admin"]}),
            client.post(TOKENS, content=b"{not json", headers={"content-type": "application/json"}),
            client.get(TOKENS, params={"start": -1}),
        ]
    with httpx.Client(base_url=local_api.url, timeout=30) as anonymous:
        answers.append(anonymous.get(TOKENS))
    statuses = [a.status_code for a in answers]
    assert statuses == [404, 404, 404, 400, 400, 400, 400, 401]
    for answer in answers:
        body = answer.json()
        assert set(body) == {"error"} and body["error"], answer.text
    for answer in answers[:3]:
        assert "record not found" in answer.json()["error"]


def test_another_users_token_is_record_not_found_everywhere(local_api: LocalApi) -> None:
    store = local_api.store
    mallory = store.create_api_key(store.create_user("mallory"))
    with local_api.client() as admin:
        token = create(admin, "private", description="mine")
    uid = token["uid"]
    with local_api.client(mallory) as client:
        for answer in (
            client.get(f"{TOKENS}/{uid}"),
            client.delete(f"{TOKENS}/{uid}"),
            client.patch(f"{TOKENS}/{uid}", json={"description": "stolen"}),
        ):
            assert answer.status_code == 404
            assert "record not found" in answer.json()["error"]
    with local_api.client() as admin:
        assert admin.get(f"{TOKENS}/{uid}").json()["description"] == "mine"


# ---------------------------------------------------------------- PATCH


def test_patch_changes_only_what_is_given(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(
            client,
            "patched",
            description="before",
            scopes=["read_cluster"],
            expired_at="2031-01-02 03:04:05.000000",
        )
        path = f"{TOKENS}/{token['uid']}"
        time.sleep(0.002)
        answer = client.patch(path, json={"description": "after"})
        assert answer.status_code == 200
        updated = answer.json()
        assert "token" not in updated
        assert updated["uid"] == token["uid"] and updated["name"] == "patched"
        assert updated["description"] == "after"
        assert updated["scopes"] == ["read_cluster"]
        assert updated["expired_at"] == "2031-01-02T03:04:05.000000Z"
        assert updated["updated_at"] > token["updated_at"]
        assert updated["created_at"] == token["created_at"]

        nulls = {"description": None, "scopes": None, "expired_at": None, "last_used_at": None}
        for body in ({}, nulls):
            unchanged = client.patch(path, json=body).json()
            assert unchanged["description"] == "after"
            assert unchanged["scopes"] == ["read_cluster"]
            # null cannot clear an expiry: there is no way to say "never" through PATCH
            assert unchanged["expired_at"] == "2031-01-02T03:04:05.000000Z"

        both = client.patch(path, json={"scopes": ["api", "write_cluster", "api"]}).json()
        assert both["scopes"] == ["api", "write_cluster"]
        assert both["description"] == "after"
        emptied = client.patch(path, json={"description": ""}).json()
        assert emptied["description"] == ""
        assert client.get(path).json() == emptied


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2032-03-31T00:00:00Z", "2032-03-31T00:00:00.000000Z"),
        ("2032-03-31T02:00:00+02:00", "2032-03-31T00:00:00.000000Z"),
        ("2032-03-31 00:00:00.000000", "2032-03-31T00:00:00.000000Z"),
        ("2032-03-31T00:00:00.123456Z", "2032-03-31T00:00:00.123456Z"),
    ],
)
def test_patch_reads_rfc3339_and_the_create_form(
    shared_api: LocalApi, sent: str, stored: str
) -> None:
    with shared_api.client() as client:
        token = create(client, f"expiry-{abs(hash(sent)) % 10**8}")
        answer = client.patch(f"{TOKENS}/{token['uid']}", json={"expired_at": sent})
        assert answer.status_code == 200, answer.text
        assert answer.json()["expired_at"] == stored
        client.delete(f"{TOKENS}/{token['uid']}")


def test_patch_keeps_the_value_working(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(client, "keeps-value", scopes=["api"])
    value = token["token"]
    with local_api.client(value) as as_token:
        assert as_token.get(CURRENT).status_code == 200
        answer = as_token.patch(
            f"{TOKENS}/{token['uid']}",
            json={"description": "renewed", "expired_at": "2040-01-01T00:00:00Z"},
        )
        assert answer.status_code == 200
        assert "token" not in answer.json() and value not in answer.text
        assert as_token.get(CURRENT).status_code == 200
        assert as_token.get(TOKENS).json()["items"][0]["description"] == "renewed"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"description": "x" * (MAX_DESCRIPTION + 1)}, "description"),
        ({"description": 5}, "description"),
        ({"scopes": ["admin"]}, "unknown scope"),
        ({"scopes": "api"}, "scopes"),
        ({"expired_at": "tomorrow"}, "expired_at"),
        ({"expired_at": "2031-13-45T00:00:00Z"}, "expired_at"),
        (["description"], "body"),
    ],
)
def test_patch_validation(shared_api: LocalApi, body: Any, fragment: str) -> None:
    with shared_api.client() as client:
        token = create(client, f"invalid-patch-{abs(hash(json.dumps(body))) % 10**8}")
        path = f"{TOKENS}/{token['uid']}"
        answer = client.patch(path, json=body)
        assert answer.status_code == 400, answer.text
        assert fragment in answer.json()["error"]
        after = client.get(path).json()
        client.delete(path)
    del token["token"]
    assert after == token


def test_patch_of_a_deleted_token_is_not_found(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(client, "gone")
        path = f"{TOKENS}/{token['uid']}"
        client.delete(path)
        answer = client.patch(path, json={"description": "x"})
        assert answer.status_code == 404
        assert "record not found" in answer.json()["error"]


def test_without_the_update_route_patch_is_a_routers_404(
    local_api_factory: LocalApiFactory,
) -> None:
    api = local_api_factory(update_route=False)
    with api.client() as client:
        token = create(client, "cannot-patch", description="same")
        path = f"{TOKENS}/{token['uid']}"
        for answer in (
            client.patch(path, json={"description": "x"}),
            client.patch(f"{TOKENS}/tok_missing", json={}),
            httpx.patch(api.url + path, json={"description": "x"}),  # before authentication
        ):
            assert answer.status_code == 404
            assert answer.headers["content-type"].startswith("text/plain")
            assert answer.text == "404 page not found"
        assert client.get(path).json()["description"] == "same"
        assert client.get(f"{TOKENS}/tok_missing").json()["error"]  # JSON elsewhere
    schema = httpx.get(api.url + "/openapi.json").json()
    assert set(schema["paths"][TOKENS + "/{uid}"]) == {"get", "delete"}
    assert api.requests(f"PATCH {TOKENS}/{{uid}}") == 3


# ---------------------------------------------------------------- scopes


def test_managing_tokens_needs_the_api_scope(local_api: LocalApi) -> None:
    with local_api.client() as admin:
        victim = create(admin, "victim")
        weak = create(admin, "weak", scopes=["read_cluster", "write_organization"])
    with local_api.client(weak["token"]) as client:
        assert client.get(CURRENT).status_code == 200  # proves the value works
        answers = [
            client.get(TOKENS),
            client.get(f"{TOKENS}/{victim['uid']}"),
            client.delete(f"{TOKENS}/{victim['uid']}"),
            client.patch(f"{TOKENS}/{weak['uid']}", json={"scopes": ["api"]}),
            client.post(TOKENS, json={"name": "minted", "scopes": ["api", "write_organization"]}),
        ]
    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert set(answer.json()) == {"error"}
        assert "api" in answer.json()["error"]
    with local_api.client() as admin:
        assert sorted(names(admin)) == ["victim", "weak"]
        assert admin.get(f"{TOKENS}/{weak['uid']}").json()["scopes"] == [
            "read_cluster",
            "write_organization",
        ]


def test_a_token_with_api_may_grant_every_scope(local_api: LocalApi) -> None:
    # Yatai's api scope grants everything, so it holds every scope it hands out.
    with local_api.client() as admin:
        manager = create(admin, "manager", scopes=["api"])
    with local_api.client(manager["token"]) as client:
        minted = create(client, "minted", scopes=["write_organization", "read_cluster"])
        assert minted["scopes"] == ["write_organization", "read_cluster"]
        answer = client.patch(f"{TOKENS}/{minted['uid']}", json={"scopes": ["write_cluster"]})
        assert answer.json()["scopes"] == ["write_cluster"]


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize("name", ["name\n", "name\r\n", "\nname", "a" * 63 + "\n"])
def test_names_must_match_whole(shared_api: LocalApi, name: str) -> None:
    with shared_api.client() as client:
        answer = client.post(TOKENS, json={"name": name})
        assert answer.status_code == 400
        assert "DNS-1035" in answer.json()["error"]
        assert name.strip() not in names(client)


@pytest.mark.parametrize("field", ["description", "name"])
def test_a_lone_surrogate_is_a_400(local_api: LocalApi, field: str) -> None:
    body = {"name": "surrogate", "description": "ok"}
    raw = json.dumps(body).replace('"ok"' if field == "description" else '"surrogate"', '"\\ud800"')
    headers = {"content-type": "application/json"}
    with local_api.client() as client:
        answer = client.post(TOKENS, content=raw.encode(), headers=headers)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"}
        token = create(client, "surrogate-patch")
        patched = client.patch(
            f"{TOKENS}/{token['uid']}",
            content=b'{"description": "\\udc00 tail"}',
            headers=headers,
        )
        assert patched.status_code == 400
        assert "surrogate" in patched.json()["error"]
    assert local_api.store.count_tokens() == 1


def _raw(api: LocalApi, request: bytes) -> bytes:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_huge_uid_is_not_echoed(local_api: LocalApi) -> None:
    uid = "tok_" + "u" * 100_000
    key = local_api.admin_key.encode()
    for method in (b"GET", b"DELETE", b"PATCH"):
        request = (
            method + b" " + TOKENS.encode() + b"/" + uid.encode() + b" HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\nX-YATAI-API-TOKEN: " + key + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        answer = _raw(local_api, request)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert len(answer) < 1000
        assert b"record not found" in answer
    with local_api.client() as client:
        huge_name = client.post(TOKENS, json={"name": "n" * 50_000})
        assert huge_name.status_code == 400 and len(huge_name.content) < 600


def test_a_trailing_slash_is_not_redirected_by_host(local_api: LocalApi) -> None:
    with local_api.client() as client:
        for path in (TOKENS + "/", CURRENT + "/"):
            answer = client.get(path, headers={"Host": "evil.example"})
            assert answer.status_code == 404
            assert "location" not in answer.headers
            assert "evil.example" not in answer.text


def test_description_limit_is_the_manifests(local_api: LocalApi, tmp_path: Path) -> None:
    with local_api.client() as client:
        create(client, "at-the-limit", description="x" * MAX_DESCRIPTION)
        over = client.post(
            TOKENS, json={"name": "over", "description": "x" * (MAX_DESCRIPTION + 1)}
        )
        assert over.status_code == 400
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for n, size in ((1, MAX_DESCRIPTION), (2, MAX_DESCRIPTION + 1)):
        text = f'tokens:\n  - name: t{n}\n    scopes: [api]\n    description: "{"x" * size}"\n'
        (manifests / f"t{n}.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(manifests)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "t2.yaml:4" in proc.stderr and str(MAX_DESCRIPTION) in proc.stderr
    assert "t1.yaml" not in proc.stderr


# ---------------------------------------------------------------- authentication edge cases


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
