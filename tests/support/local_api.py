"""The local API as tests drive it: a running server's handles (LocalApi) and its database
edited directly, to move a token's clock without sleeping."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from reconciler.api.client import ApiTokenAPI
from reconciler.server.embedded import LocalServer
from reconciler.server.store import Store, format_db_time

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
# make_ws-like factory of ApiTokenAPI clients (tests/api/conftest.py).
MakeApi = Callable[..., ApiTokenAPI]

TOKENS_ROUTE = "/api/v1/api_tokens"


def create(client: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    """Create a token with POST /api/v1/api_tokens (fields the wire allows default to
    null); the answer must be 200. Returns the created token, its value included."""
    body = {"name": name, "description": None, "scopes": None, "expired_at": None, **fields}
    response = client.post(TOKENS_ROUTE, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def names(client: httpx.Client) -> list[str]:
    """The names of the live tokens the client's key may see (one page of 1000)."""
    return [t["name"] for t in client.get(TOKENS_ROUTE, params={"count": 1000}).json()["items"]]


def age_token(
    api: LocalApi, uid: str, *, created_at: datetime, expired_at: datetime | None
) -> None:
    """Set a token's created_at and expired_at in the local API's database, as if time had
    passed since it was created."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        cursor = conn.execute(
            "UPDATE tokens SET created_at = ?, updated_at = ?, expired_at = ? WHERE uid = ?",
            (
                format_db_time(created_at),
                format_db_time(created_at),
                format_db_time(expired_at) if expired_at is not None else None,
                uid,
            ),
        )
        assert cursor.rowcount == 1, uid
    conn.close()


def token_times(api: LocalApi, uid: str) -> dict[str, str | None]:
    """created_at / deleted_at / expired_at of any token row, deleted ones included."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        row = conn.execute(
            "SELECT created_at, deleted_at, expired_at FROM tokens WHERE uid = ?", (uid,)
        ).fetchone()
    conn.close()
    assert row is not None, uid
    return {"created_at": row[0], "deleted_at": row[1], "expired_at": row[2]}


def all_uids(api: LocalApi) -> dict[str, str]:
    """uid -> name of every token row, deleted ones included (for normalising output)."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        rows = conn.execute("SELECT uid, name FROM tokens").fetchall()
    conn.close()
    return {str(uid): str(name) for uid, name in rows}


def set_last_used(api: LocalApi, uid: str, when: datetime) -> None:
    """Set a token's last_used_at in the local API's database, as if it had last
    authenticated at ``when``."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        cursor = conn.execute(
            "UPDATE tokens SET last_used_at = ? WHERE uid = ?", (format_db_time(when), uid)
        )
        assert cursor.rowcount == 1, uid
    conn.close()
