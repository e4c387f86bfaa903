"""Shared fixtures: the local API running for real on 127.0.0.1, reached over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import leakcheck
import pytest
from leakcheck import leak_registry, leakcheck_session, pytest_terminal_summary  # noqa: F401

from reconciler.server.embedded import LocalServer
from reconciler.server.faults import Faults
from reconciler.server.store import Store

# The secrets-leak harness (tests/leakcheck.py): its session fixture scans every recorded
# artifact for every secret at the end, and the summary says how much was scanned.
leakcheck.install()

AUTH_HEADER = "X-YATAI-API-TOKEN"


class LocalApi:
    """A running local API and the handles tests need: its URL and admin key, its store
    (for fast seeding and inspection), fault control and request statistics."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin_key(self) -> str:
        return self.server.admin_key

    @property
    def db_path(self) -> Path:
        return Path(self.server.db_path)

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def headers(self) -> dict[str, str]:
        return {AUTH_HEADER: self.admin_key}

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the API, authenticated with ``key`` (default: the admin key)."""
        headers = {AUTH_HEADER: key if key is not None else self.admin_key}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def _admin(self, method: str, path: str, json: Any = None) -> Any:
        with self.client() as client:
            response = client.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings at runtime (see reconciler.server.faults.Faults); the
        others keep their values. Returns the settings now in force."""
        result: dict[str, Any] = self._admin("POST", "/_admin/faults", settings)
        return result

    def reset_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "/_admin/faults", {"reset": True})
        return result

    def stats(self) -> dict[str, Any]:
        """``{"total", "requests": {"GET /api/v1/api_tokens": n, ...}, "statuses", "faults"}``"""
        result: dict[str, Any] = self._admin("GET", "/_admin/stats")
        return result

    def requests(self, route: str) -> int:
        """How many requests reached ``route``, e.g. ``"GET /api/v1/api_tokens"``."""
        return int(self.stats()["requests"].get(route, 0))

    def reset_stats(self) -> None:
        self._admin("POST", "/_admin/stats/reset")

    def restart(self) -> None:
        """Stop and start again: same port, database and admin key."""
        self.server.restart()

    def stop(self) -> None:
        self.server.stop()


LocalApiFactory = Callable[..., LocalApi]


@pytest.fixture
def local_api_factory(tmp_path: Path) -> Iterator[LocalApiFactory]:
    """Start local APIs with custom options (``max_page_size``, ``faults``, ``api_key``,
    ``db_path``, ``allow_duplicate_names``, ``update_route``); every one is stopped at
    teardown. Names are unique among live tokens by default, as on Yatai."""
    started: list[LocalServer] = []

    def start(
        *,
        db_path: Path | None = None,
        api_key: str | None = None,
        faults: Faults | None = None,
        max_page_size: int = 1000,
        allow_duplicate_names: bool = False,
        update_route: bool = True,
    ) -> LocalApi:
        path = db_path or tmp_path / f"local-api-{len(started)}.db"
        server = LocalServer(
            path,
            api_key=api_key,
            faults=faults,
            max_page_size=max_page_size,
            allow_duplicate_names=allow_duplicate_names,
            update_route=update_route,
        )
        started.append(server)
        server.start()
        return LocalApi(server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def local_api(local_api_factory: LocalApiFactory) -> LocalApi:
    """A fresh local API with an empty database of its own."""
    return local_api_factory()


@pytest.fixture(scope="session")
def shared_local_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    """One local API for the whole session, for tests that only add uniquely named tokens.
    Faults are off when a test starts; stats are shared, so reset them before counting."""
    path = tmp_path_factory.mktemp("shared-local-api") / "local.db"
    server = LocalServer(path)
    server.start()
    try:
        yield LocalApi(server)
    finally:
        server.stop()


@pytest.fixture
def shared_api(shared_local_api: LocalApi) -> Iterator[LocalApi]:
    """``shared_local_api`` with faults reset before and after the test."""
    shared_local_api.server.injector.reset()
    yield shared_local_api
    shared_local_api.server.injector.reset()
