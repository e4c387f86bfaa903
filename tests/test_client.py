"""reconciler.client against the real local API over HTTP: every call, paging, errors, retries."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.ports import free_port

from reconciler.api.client import ApiTokenAPI, RestClient, wire_datetime
from reconciler.errors import (
    AmbiguousCreateError,
    AuthenticationError,
    ConfigError,
    ConnectError,
    NotFoundError,
    RateLimitedError,
    RequestRejectedError,
    RequestTimeout,
    ServerError,
    TransportError,
)
from reconciler.server.embedded import LocalServer
from reconciler.server.faults import Faults


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "api.sqlite3", max_page_size=100) as running:
        yield running


_open_clients: list[RestClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def make_api(server: LocalServer, *, key: str | None = None, retries: int = 3) -> ApiTokenAPI:
    client = RestClient(
        endpoint=server.url,
        api_key=key or server.admin_key,
        max_retries=retries,
        backoff_base=0.01,
        backoff_max=0.05,
    )
    _open_clients.append(client)
    return ApiTokenAPI(client, page_size=1000)


def test_create_get_list_delete_round_trip(server: LocalServer) -> None:
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


def test_get_of_missing_uid_is_none_and_delete_of_missing_raises(server: LocalServer) -> None:
    api = make_api(server)
    assert api.get("tok_does_not_exist") is None
    with pytest.raises(NotFoundError):
        api.delete("tok_does_not_exist")
    api.delete("tok_does_not_exist", missing_ok=True)


def test_uid_with_slash_cannot_reach_another_route(server: LocalServer) -> None:
    api = make_api(server)
    assert api.get("../api_tokens") is None
    assert api.get("a?start=0") is None


def test_list_follows_every_page_when_server_pages_are_smaller(server: LocalServer) -> None:
    server.store.seed_tokens(1050)
    api = make_api(server)
    before = api.client.requests_sent
    tokens = api.list()
    assert len(tokens) == 1050
    assert len({t.uid for t in tokens}) == 1050
    # The server caps pages at 100 although we ask for 1000.
    assert api.client.requests_sent - before == math.ceil(1050 / 100)


def test_list_in_large_pages_when_server_allows(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "big.sqlite3", max_page_size=1000) as big:
        big.store.seed_tokens(2500)
        api = make_api(big)
        assert len(api.list()) == 2500
        assert api.client.requests_sent == 3


def test_wrong_key_is_authentication_error_without_the_key(server: LocalServer) -> None:
    api = make_api(server, key="rct_wrong-key-value")
    with pytest.raises(AuthenticationError) as caught:
        api.list()
    assert "rct_wrong-key-value" not in str(caught.value)
    assert "401" in str(caught.value)


def test_created_token_is_itself_a_key_until_deleted(server: LocalServer) -> None:
    admin = make_api(server)
    created = admin.create("worker", scopes=["api"])
    assert created.token
    as_token = make_api(server, key=created.token)
    assert [t.name for t in as_token.list()] == ["worker"]  # same user, same tokens
    admin.delete(created.uid)
    with pytest.raises(AuthenticationError):
        as_token.list()


def test_invalid_create_is_rejected_with_the_servers_reason(server: LocalServer) -> None:
    api = make_api(server)
    with pytest.raises(RequestRejectedError) as caught:
        api.create("Not_A_DNS_Label")
    assert "400" in str(caught.value)
    with pytest.raises(RequestRejectedError):
        api.create("ok-name", scopes=["root"])


def test_get_retries_503_then_succeeds(server: LocalServer) -> None:
    api = make_api(server)
    created = api.create("retry-me")
    server.set_faults(fail_next=2, fail_status=503)
    before = api.client.requests_sent
    assert api.get(created.uid) is not None
    assert api.client.requests_sent - before == 3


def test_503_storm_gives_server_error_with_trace_id(server: LocalServer) -> None:
    api = make_api(server, retries=2)
    server.set_faults(error_rate=1.0)
    with pytest.raises(ServerError) as caught:
        api.list()
    message = str(caught.value)
    assert "503" in message and "after 3 attempts" in message
    assert caught.value.trace_id and caught.value.trace_id in message


def test_429_honours_retry_after_and_then_gives_up(server: LocalServer) -> None:
    api = make_api(server, retries=1)
    server.set_faults(fail_next=1, fail_status=429, retry_after=1)
    api.client._backoff_max = 30.0
    started = time.monotonic()
    assert api.list() == []
    assert time.monotonic() - started >= 0.9  # waited out Retry-After: 1
    waited = server.stats()
    assert api.client.requests_sent == 2
    assert waited["requests"]["GET /api/v1/api_tokens"] == 2
    server.set_faults(rate_limit_rate=1.0)
    with pytest.raises(RateLimitedError):
        api.list()


def test_create_is_retried_after_429_since_nothing_was_done(server: LocalServer) -> None:
    api = make_api(server)
    server.set_faults(fail_next=1, fail_status=429, retry_after=0)
    assert api.create("after-429").token
    assert len(api.list()) == 1


def test_create_is_never_retried_after_503(server: LocalServer) -> None:
    api = make_api(server)
    server.set_faults(fail_next=1, fail_status=503)
    with pytest.raises(AmbiguousCreateError) as caught:
        api.create("maybe")
    assert caught.value.name == "maybe"
    assert server.stats()["requests"].get("POST /api/v1/api_tokens", 0) == 1


def test_lost_create_response_is_ambiguous_and_the_token_exists(server: LocalServer) -> None:
    api = make_api(server)
    server.set_faults(lose_next_creates=1)
    with pytest.raises(AmbiguousCreateError):
        api.create("lost-answer")
    assert [t.name for t in api.list()] == ["lost-answer"]


def test_dead_server_is_a_transport_error_naming_the_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = RestClient(endpoint=endpoint, api_key="rct_secret-key", backoff_base=0.01)
    _open_clients.append(client)
    api = ApiTokenAPI(client)
    with pytest.raises(TransportError) as caught:
        api.list()
    assert endpoint in str(caught.value)
    assert "rct_secret-key" not in str(caught.value)


def test_secret_never_in_repr_str_or_logs(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(server)
    created = api.create("secretive")
    assert created.token is not None
    logging.getLogger("test").info("created %s / %r", created, created)
    for text in (
        repr(created),
        str(created),
        str(created.to_dict()),
        created.to_yaml(),
        caplog.text,
        repr(api.client),
    ):
        assert created.token not in text
        assert server.admin_key not in text
    assert created.to_dict(include_secret=True)["token"] == created.token


def test_wire_datetime_matches_bentoml_format() -> None:
    aware = datetime(2031, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    assert wire_datetime(aware) == "2031-01-01 07:00:00.000000"


def test_a_refused_connection_is_a_connect_error_and_no_create_is_ambiguous() -> None:
    """Nothing reached the server: the create is certainly not made, so it is not reported
    as 'may have been created' (told apart by type, not by message text)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = RestClient(endpoint=endpoint, api_key="rct_secret-key", backoff_base=0.01)
    _open_clients.append(client)
    api = ApiTokenAPI(client)
    with pytest.raises(ConnectError) as listing:
        api.list()
    with pytest.raises(ConnectError) as creating:
        api.create("never-made", scopes=["api"])
    assert not isinstance(creating.value, AmbiguousCreateError)
    assert "cannot connect" in str(listing.value) and endpoint in str(creating.value)


def test_a_slow_server_is_a_request_timeout_and_a_create_is_ambiguous(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "slow.sqlite3", faults=Faults(latency_ms=400)) as slow:
        client = RestClient(
            endpoint=slow.url,
            api_key=slow.admin_key,
            timeout=0.1,
            max_retries=1,
            backoff_base=0.01,
        )
        _open_clients.append(client)
        api = ApiTokenAPI(client)
        with pytest.raises(RequestTimeout) as listing:
            api.list()
        assert not isinstance(listing.value, ConnectError)
        assert "did not answer in time" in str(listing.value)
        with pytest.raises(AmbiguousCreateError) as creating:
            api.create("maybe-made", scopes=["api"])
        assert "may have been created" in str(creating.value)


@pytest.mark.parametrize("key", ["rct_pasted-key\n", "rct_pasted-key ", " rct_x", "rct_kéy"])
def test_a_key_headers_cannot_carry_is_refused_before_any_request(
    server: LocalServer, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RestClient(endpoint=server.url, api_key=key)
    assert str(caught.value) == (
        "the API key contains a newline or a character HTTP headers cannot carry; check how "
        "it was pasted"
    )
    assert server.injector.stats()["total"] == 0
