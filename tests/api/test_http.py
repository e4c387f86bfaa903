"""The REST transport (reconciler.api.http) against the real local API over HTTP:
retries and backoff, Retry-After, what is never retried, timeouts and dead servers, and a
key refused before any request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.local_api import MakeApi
from support.ports import free_port

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.errors import (
    AmbiguousCreateError,
    ConfigError,
    ConnectError,
    RateLimitedError,
    RequestTimeout,
    ServerError,
    TransportError,
)
from reconciler.server.embedded import LocalServer
from reconciler.server.faults import Faults

if TYPE_CHECKING:
    from support.local_api import LocalApi


def test_get_retries_503_then_succeeds(server: LocalServer, make_api: MakeApi) -> None:
    api = make_api(server)
    created = api.create("retry-me")
    server.set_faults(fail_next=2, fail_status=503)
    before = api.client.requests_sent
    assert api.get(created.uid) is not None
    assert api.client.requests_sent - before == 3


def test_503_storm_gives_server_error_with_trace_id(server: LocalServer, make_api: MakeApi) -> None:
    api = make_api(server, retries=2)
    server.set_faults(error_rate=1.0)
    with pytest.raises(ServerError) as caught:
        api.list()
    message = str(caught.value)
    assert "503" in message and "after 3 attempts" in message
    assert caught.value.trace_id and caught.value.trace_id in message


def test_429_honours_retry_after_and_then_gives_up(server: LocalServer, make_api: MakeApi) -> None:
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


def test_create_is_retried_after_429_since_nothing_was_done(
    server: LocalServer, make_api: MakeApi
) -> None:
    api = make_api(server)
    server.set_faults(fail_next=1, fail_status=429, retry_after=0)
    assert api.create("after-429").token
    assert len(api.list()) == 1


def test_create_is_never_retried_after_503(server: LocalServer, make_api: MakeApi) -> None:
    api = make_api(server)
    server.set_faults(fail_next=1, fail_status=503)
    with pytest.raises(AmbiguousCreateError) as caught:
        api.create("maybe")
    assert caught.value.name == "maybe"
    assert server.stats()["requests"].get("POST /api/v1/api_tokens", 0) == 1


def test_lost_create_response_is_ambiguous_and_the_token_exists(
    server: LocalServer, make_api: MakeApi
) -> None:
    api = make_api(server)
    server.set_faults(lose_next_creates=1)
    with pytest.raises(AmbiguousCreateError):
        api.create("lost-answer")
    assert [t.name for t in api.list()] == ["lost-answer"]


def test_dead_server_is_a_transport_error_naming_the_endpoint(clients: list[RestClient]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = RestClient(endpoint=endpoint, api_key="rct_secret-key", backoff_base=0.01)
    clients.append(client)
    api = ApiTokenAPI(client)
    with pytest.raises(TransportError) as caught:
        api.list()
    assert endpoint in str(caught.value)
    assert "rct_secret-key" not in str(caught.value)


def test_a_refused_connection_is_a_connect_error_and_no_create_is_ambiguous(
    clients: list[RestClient],
) -> None:
    """Nothing reached the server: the create is certainly not made, so it is not reported
    as 'may have been created' (told apart by type, not by message text)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = RestClient(endpoint=endpoint, api_key="rct_secret-key", backoff_base=0.01)
    clients.append(client)
    api = ApiTokenAPI(client)
    with pytest.raises(ConnectError) as listing:
        api.list()
    with pytest.raises(ConnectError) as creating:
        api.create("never-made", scopes=["api"])
    assert not isinstance(creating.value, AmbiguousCreateError)
    assert "cannot connect" in str(listing.value) and endpoint in str(creating.value)


def test_a_slow_server_is_a_request_timeout_and_a_create_is_ambiguous(
    tmp_path: Path, clients: list[RestClient]
) -> None:
    with LocalServer(tmp_path / "slow.sqlite3", faults=Faults(latency_ms=400)) as slow:
        client = RestClient(
            endpoint=slow.url,
            api_key=slow.admin_key,
            timeout=0.1,
            max_retries=1,
            backoff_base=0.01,
        )
        clients.append(client)
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


CURRENT = "/api/v1/auth/current"


def test_update_is_retried_like_get(local_api: LocalApi, make_api: MakeApi) -> None:
    api = make_api(local_api)
    token = api.create("retried")
    local_api.reset_stats()
    local_api.set_faults(fail_next=2, fail_status=503)
    updated = api.update(token.uid, description="after retries")
    assert updated is not None and updated.description == "after retries"
    assert local_api.requests("PATCH /api/v1/api_tokens/{uid}") == 3
