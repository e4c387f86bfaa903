"""ApiTokenAPI (reconciler.api.client) against the real local API over HTTP: every call,
paging, errors, updates with and without the route, and names already taken."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from support.local_api import MakeApi

from reconciler.api.client import rfc3339, wire_datetime
from reconciler.errors import (
    AuthenticationError,
    NameTakenError,
    NotFoundError,
    RequestRejectedError,
    UpdateRouteMissing,
)
from reconciler.server.embedded import LocalServer

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory


def test_create_get_list_delete_round_trip(server: LocalServer, make_api: MakeApi) -> None:
    api = make_api(server)
    expiry = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    created = api.create(
        "ci-deployer", description="from CI", scopes=["api", "write_cluster"], expired_at=expiry
    )
    assert created.token and created.uid
    assert created.expired_at == expiry
    fetched = api.get(created.uid)
    assert fetched is not None
    assert fetched.token is None
    assert (fetched.name, fetched.description) == ("ci-deployer", "from CI")
    assert sorted(fetched.scopes) == ["api", "write_cluster"]
    assert fetched.created_by == created.created_by is not None
    assert [t.uid for t in api.list()] == [created.uid]
    assert api.list(search="deploy")[0].uid == created.uid
    assert api.list(search="nothing-like-it") == []
    api.delete(created.uid)
    assert api.get(created.uid) is None
    assert api.list() == []


def test_get_of_missing_uid_is_none_and_delete_of_missing_raises(
    server: LocalServer, make_api: MakeApi
) -> None:
    api = make_api(server)
    assert api.get("tok_does_not_exist") is None
    with pytest.raises(NotFoundError):
        api.delete("tok_does_not_exist")
    api.delete("tok_does_not_exist", missing_ok=True)


def test_uid_with_slash_cannot_reach_another_route(server: LocalServer, make_api: MakeApi) -> None:
    api = make_api(server)
    assert api.get("../api_tokens") is None
    assert api.get("a?start=0") is None


def test_list_follows_every_page_when_server_pages_are_smaller(
    server: LocalServer, make_api: MakeApi
) -> None:
    server.store.seed_tokens(1050)
    api = make_api(server)
    before = api.client.requests_sent
    tokens = api.list()
    assert len(tokens) == 1050
    assert len({t.uid for t in tokens}) == 1050
    # The server caps pages at 100 although we ask for 1000.
    assert api.client.requests_sent - before == math.ceil(1050 / 100)


def test_list_in_large_pages_when_server_allows(tmp_path: Path, make_api: MakeApi) -> None:
    with LocalServer(tmp_path / "big.sqlite3", max_page_size=1000) as big:
        big.store.seed_tokens(2500)
        api = make_api(big)
        assert len(api.list()) == 2500
        assert api.client.requests_sent == 3


def test_wrong_key_is_authentication_error_without_the_key(
    server: LocalServer, make_api: MakeApi
) -> None:
    api = make_api(server, key="rct_wrong-key-value")
    with pytest.raises(AuthenticationError) as caught:
        api.list()
    assert "rct_wrong-key-value" not in str(caught.value)
    assert "401" in str(caught.value)


def test_created_token_is_itself_a_key_until_deleted(
    server: LocalServer, make_api: MakeApi
) -> None:
    admin = make_api(server)
    created = admin.create("worker", scopes=["api"])
    assert created.token
    as_token = make_api(server, key=created.token)
    assert [t.name for t in as_token.list()] == ["worker"]  # same user, same tokens
    admin.delete(created.uid)
    with pytest.raises(AuthenticationError):
        as_token.list()


def test_invalid_create_is_rejected_with_the_servers_reason(
    server: LocalServer, make_api: MakeApi
) -> None:
    api = make_api(server)
    with pytest.raises(RequestRejectedError) as caught:
        api.create("Not_A_DNS_Label")
    assert "400" in str(caught.value)
    with pytest.raises(RequestRejectedError):
        api.create("ok-name", scopes=["root"])


def test_wire_datetime_matches_bentoml_format() -> None:
    aware = datetime(2031, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    assert wire_datetime(aware) == "2031-01-01 07:00:00.000000"


# ---------------------------------------------------------------- updates


CURRENT = "/api/v1/auth/current"


def test_update_changes_the_token_in_place(local_api: LocalApi, make_api: MakeApi) -> None:
    api = make_api(local_api)
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
    local_api_factory: LocalApiFactory, make_api: MakeApi
) -> None:
    for update_route in (True, False):
        server = local_api_factory(update_route=update_route)
        api = make_api(server)
        assert api.update("tok_missing", description="x") is None
        gone = api.create("gone")
        api.delete(gone.uid)
        assert api.update(gone.uid, description="x") is None


def test_update_without_the_route_raises_update_route_missing(
    local_api_factory: LocalApiFactory, make_api: MakeApi
) -> None:
    server = local_api_factory(update_route=False)
    api = make_api(server)
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


def test_a_405_means_no_update_route(make_api: MakeApi) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoPatchHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        api = make_api(f"http://127.0.0.1:{httpd.server_address[1]}", "k")
        with pytest.raises(UpdateRouteMissing):
            api.update("tok_1", description="x")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(datetime(2027, 3, 31)) == "2027-03-31T00:00:00.000000Z"
    eastern = datetime(2027, 3, 31, 5, tzinfo=timezone(timedelta(hours=5)))
    assert rfc3339(eastern) == "2027-03-31T00:00:00.000000Z"


def test_a_taken_name_raises_name_taken(local_api: LocalApi, make_api: MakeApi) -> None:
    api = make_api(local_api)
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
    local_api_factory: LocalApiFactory, make_api: MakeApi
) -> None:
    server = local_api_factory(allow_duplicate_names=True)
    api = make_api(server)
    first, second = api.create("twin"), api.create("twin")
    assert first.uid != second.uid
