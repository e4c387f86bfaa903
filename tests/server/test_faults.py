"""Fault injection of the local API (reconciler.server.faults): errors with trace ids,
rate limits, exact and seeded faults, latency, and lost create answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from support.local_api import create

from reconciler.server.faults import FaultInjector, Faults
from reconciler.server.store import Store

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory

TOKENS = "/api/v1/api_tokens"


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
