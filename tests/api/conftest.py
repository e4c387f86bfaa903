"""Fixtures of the API tests: a local API that pages by 100, and clients closed after each
test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.local_api import LocalApi, MakeApi

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.server.embedded import LocalServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(tmp_path / "api.sqlite3", max_page_size=100) as running:
        yield running


@pytest.fixture
def clients() -> Iterator[list[RestClient]]:
    """The RestClients a test opened; each is closed when the test ends."""
    opened: list[RestClient] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def make_api(clients: list[RestClient]) -> MakeApi:
    """``make_api(where, key=None, retries=3)``: an ApiTokenAPI on a running local API (with
    its admin key unless ``key`` is given) or on a URL (``key`` then needed); backoff is
    short so that tests of retries stay quick."""

    def make(
        where: LocalServer | LocalApi | str, key: str | None = None, *, retries: int = 3
    ) -> ApiTokenAPI:
        endpoint = where if isinstance(where, str) else where.url
        if not key:
            assert not isinstance(where, str), "a URL needs a key"
            key = where.admin_key
        client = RestClient(
            endpoint=endpoint,
            api_key=key,
            max_retries=retries,
            backoff_base=0.01,
            backoff_max=0.05,
        )
        clients.append(client)
        return ApiTokenAPI(client, page_size=1000)

    return make
