"""The local API behaves as Yatai does where servers differ (docs/wire-format.md sections 7 and 8):
unique live names, the error body, the update route and its absence, scopes, and the
hostile inputs of issue 15. All over real HTTP, and `reconciler serve` as a process."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import pytest

from reconciler.manifest.spec import MAX_DESCRIPTION
from reconciler.server.store import Store

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory

TOKENS = "/api/v1/api_tokens"
CURRENT = "/api/v1/auth/current"
AUTH = "X-YATAI-API-TOKEN"
DUPLICATE = {
    "error": "create apiToken: ERROR: duplicate key value violates unique constraint "
    '"uk_apiToken_organizationId_userId_name" (SQLSTATE 23505)'
}


def create(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "description": None, "scopes": None, "expired_at": None, **fields}
    response = client.post(TOKENS, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def names(client: httpx.Client) -> list[str]:
    return [t["name"] for t in client.get(TOKENS, params={"count": 1000}).json()["items"]]


# ---------------------------------------------------------------- unique names


def test_a_taken_name_is_refused_with_yatais_400(local_api: LocalApi) -> None:
    with local_api.client() as client:
        first = create(client, "ci-deployer", scopes=["api"])
        again = client.post(TOKENS, json={"name": "ci-deployer", "scopes": ["read_cluster"]})
        assert again.status_code == 400
        assert again.json() == DUPLICATE
        assert names(client) == ["ci-deployer"]
        # A deleted token holds no name, as Yatai deletes the row.
        assert client.delete(f"{TOKENS}/{first['uid']}").status_code == 200
        second = create(client, "ci-deployer")
        assert second["uid"] != first["uid"]
        assert names(client) == ["ci-deployer"]


def test_names_are_unique_per_user_only(local_api: LocalApi) -> None:
    store = local_api.store
    other_key = store.create_api_key(store.create_user("bob"))
    with local_api.client() as admin, local_api.client(other_key) as bob:
        create(admin, "shared-name")
        create(bob, "shared-name")
        assert names(admin) == names(bob) == ["shared-name"]


def test_an_expired_token_still_holds_its_name(local_api: LocalApi) -> None:
    # Yatai's index covers every row until it is deleted, expired or not.
    store = local_api.store
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    store.create_token(store.default_user, "lapsed", expired_at=past)
    with local_api.client() as client:
        assert client.post(TOKENS, json={"name": "lapsed"}).json() == DUPLICATE


def test_duplicates_are_allowed_with_the_option(local_api_factory: LocalApiFactory) -> None:
    api = local_api_factory(allow_duplicate_names=True)
    with api.client() as client:
        uids = {create(client, "twin")["uid"], create(client, "twin")["uid"]}
        assert len(uids) == 2
        assert names(client) == ["twin", "twin"]
    indexes = _indexes(api.db_path)
    assert "tokens_unique_live_name" not in indexes


def test_concurrent_creates_of_one_name_make_one_token(local_api: LocalApi) -> None:
    import threading

    statuses: list[int] = []

    def worker() -> None:
        with local_api.client() as client:
            statuses.append(client.post(TOKENS, json={"name": "race"}).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [400] * 7
    assert local_api.store.count_tokens() == 1


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {str(r[0]) for r in rows}


def test_an_old_database_with_duplicates_still_opens(tmp_path: Path) -> None:
    """A database written while duplicates were allowed keeps its tokens; new duplicates
    are refused even though the unique index cannot be built over the old ones."""
    db = tmp_path / "old.db"
    with Store(db, unique_names=False) as old:
        old.create_token(old.default_user, "twin")
        old.create_token(old.default_user, "twin")
        old.create_token(old.default_user, "single")
    with Store(db) as store:
        assert store.count_tokens() == 3
        assert "tokens_unique_live_name" not in _indexes(db)
        from reconciler.server.store import NameTakenError

        with pytest.raises(NameTakenError):
            store.create_token(store.default_user, "single")
        with pytest.raises(NameTakenError):
            store.create_token(store.default_user, "twin")
        twins = [r for r in store.list_tokens(store.default_user)[0] if r.name == "twin"]
        store.delete_token(store.default_user, twins[0].uid)
    with Store(db) as store:
        assert "tokens_unique_live_name" in _indexes(db)  # built once the duplicates went
        store.create_token(store.default_user, "fresh")
    with Store(db, unique_names=False) as store:
        assert "tokens_unique_live_name" not in _indexes(db)
        store.create_token(store.default_user, "fresh")
        assert store.count_tokens() == 4


# ---------------------------------------------------------------- error bodies


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


# ---------------------------------------------------------------- reconciler serve


def _serve(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "s.db"),
            *flags,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    out = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
    url = re.search(r"BENTO_CLOUD_API_ENDPOINT=(\S+)", out)
    key = re.search(r"BENTO_CLOUD_API_KEY=(\S+)", out + proc.stderr.readline())
    assert url and key, out
    return proc, url.group(1), key.group(1)


def _read_until(stream: IO[str], marker: str) -> str:
    seen = ""
    deadline = time.monotonic() + 30
    while marker not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    return seen


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.mark.parametrize(
    ("flags", "duplicate_status", "patch_status"),
    [((), 400, 200), (("--allow-duplicate-names", "--no-update-route"), 200, 404)],
)
def test_serve_flags(
    tmp_path: Path, flags: tuple[str, ...], duplicate_status: int, patch_status: int
) -> None:
    proc, url, key = _serve(tmp_path, *flags)
    try:
        with httpx.Client(base_url=url, headers={AUTH: key}, timeout=30) as client:
            token = create(client, "served")
            again = client.post(TOKENS, json={"name": "served"})
            assert again.status_code == duplicate_status
            patch = client.patch(f"{TOKENS}/{token['uid']}", json={"description": "x"})
            assert patch.status_code == patch_status
            if patch_status == 404:
                assert patch.text == "404 page not found"
    finally:
        _stop(proc)
