"""The layer of the local API outside Starlette (reconciler.server.outer): the body limit
before authentication, garbage requests refused without a 500, request statistics."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import httpx
from support.local_api import create

from reconciler.server.app import MAX_BODY_BYTES

if TYPE_CHECKING:
    from support.local_api import LocalApi
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.local_api import LocalApi


TOKENS = "/api/v1/api_tokens"
AUTH = "X-YATAI-API-TOKEN"


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
