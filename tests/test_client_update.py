"""ApiTokenAPI.update and the create refused for a taken name, against the real local API
over HTTP: with the update route, without it (a router's 404, and a 405), and faulty."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest

from reconciler.api.client import ApiTokenAPI, RestClient, rfc3339
from reconciler.errors import NameTakenError, RequestRejectedError, UpdateRouteMissing

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory

CURRENT = "/api/v1/auth/current"


@pytest.fixture
def clients() -> Iterator[list[RestClient]]:
    opened: list[RestClient] = []
    yield opened
    for client in opened:
        client.close()


def make_api(url: str, key: str, clients: list[RestClient]) -> ApiTokenAPI:
    client = RestClient(
        endpoint=url, api_key=key, max_retries=3, backoff_base=0.01, backoff_max=0.05
    )
    clients.append(client)
    return ApiTokenAPI(client)


def test_update_changes_the_token_in_place(local_api: LocalApi, clients: list[RestClient]) -> None:
    api = make_api(local_api.url, local_api.admin_key, clients)
    created = api.create("in-place", description="old", scopes=["api"])
    assert created.token
    expiry = datetime(2033, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    updated = api.update(
        created.uid, description="new", scopes=["read_cluster", "api"], expired_at=expiry
    )
    assert updated is not None
    assert updated.uid == created.uid and updated.name == "in-place"
    assert updated.description == "new"
    assert set(updated.scopes) == {"read_cluster", "api"}
    assert updated.expired_at == datetime(2033, 5, 6, 5, 8, 9, tzinfo=timezone.utc)
    assert not updated.token
    assert api.get(created.uid) == updated
    # The secret did not change: the old value still authenticates.
    response = httpx.get(local_api.url + CURRENT, headers={"X-YATAI-API-TOKEN": created.token})
    assert response.status_code == 200

    same = api.update(created.uid)  # nothing given: nothing changes
    assert same is not None
    assert (same.description, same.scopes, same.expired_at) == (
        updated.description,
        updated.scopes,
        updated.expired_at,
    )
    only_description = api.update(created.uid, description="")
    assert only_description is not None and only_description.description == ""
    assert only_description.expired_at == updated.expired_at


def test_update_of_a_missing_token_is_none(
    local_api_factory: LocalApiFactory, clients: list[RestClient]
) -> None:
    for update_route in (True, False):
        server = local_api_factory(update_route=update_route)
        api = make_api(server.url, server.admin_key, clients)
        assert api.update("tok_missing", description="x") is None
        gone = api.create("gone")
        api.delete(gone.uid)
        assert api.update(gone.uid, description="x") is None


def test_update_without_the_route_raises_update_route_missing(
    local_api_factory: LocalApiFactory, clients: list[RestClient]
) -> None:
    server = local_api_factory(update_route=False)
    api = make_api(server.url, server.admin_key, clients)
    token = api.create("stays", description="same")
    with pytest.raises(UpdateRouteMissing) as caught:
        api.update(token.uid, description="changed")
    assert "replacing the token" in str(caught.value)
    assert server.admin_key not in str(caught.value)
    got = api.get(token.uid)
    assert got is not None and got.description == "same"


class _NoPatchHandler(BaseHTTPRequestHandler):
    """A server whose router knows the path but not the method."""

    def do_PATCH(self) -> None:
        body = b"405 method not allowed"
        self.send_response(405)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_405_means_no_update_route(clients: list[RestClient]) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoPatchHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        api = make_api(f"http://127.0.0.1:{httpd.server_address[1]}", "k", clients)
        with pytest.raises(UpdateRouteMissing):
            api.update("tok_1", description="x")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_update_is_retried_like_get(local_api: LocalApi, clients: list[RestClient]) -> None:
    api = make_api(local_api.url, local_api.admin_key, clients)
    token = api.create("retried")
    local_api.reset_stats()
    local_api.set_faults(fail_next=2, fail_status=503)
    updated = api.update(token.uid, description="after retries")
    assert updated is not None and updated.description == "after retries"
    assert local_api.requests("PATCH /api/v1/api_tokens/{uid}") == 3


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(datetime(2027, 3, 31)) == "2027-03-31T00:00:00.000000Z"
    eastern = datetime(2027, 3, 31, 5, tzinfo=timezone(timedelta(hours=5)))
    assert rfc3339(eastern) == "2027-03-31T00:00:00.000000Z"


def test_a_taken_name_raises_name_taken(local_api: LocalApi, clients: list[RestClient]) -> None:
    api = make_api(local_api.url, local_api.admin_key, clients)
    api.create("taken")
    with pytest.raises(NameTakenError) as caught:
        api.create("taken", scopes=["api"])
    error = caught.value
    assert isinstance(error, RequestRejectedError)
    assert error.name == "taken" and error.status == 400
    assert "already has a live token named 'taken'" in str(error)
    assert [t.name for t in api.list()] == ["taken"]
    # Other refusals keep their own type.
    with pytest.raises(RequestRejectedError) as invalid:
        api.create("Not_Valid")
    assert not isinstance(invalid.value, NameTakenError)


def test_duplicates_allowed_create_twice(
    local_api_factory: LocalApiFactory, clients: list[RestClient]
) -> None:
    server = local_api_factory(allow_duplicate_names=True)
    api = make_api(server.url, server.admin_key, clients)
    first, second = api.create("twin"), api.create("twin")
    assert first.uid != second.uid
