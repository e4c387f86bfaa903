"""Proof that a new token's value works before the generation it replaces is retired: one
``GET /api/v1/auth/current`` sent with the new value (BentoML's own client calls it)."""

from __future__ import annotations

from reconciler.api.client import ApiTokenAPI
from reconciler.errors import ApiError

AUTH_CURRENT = "/api/v1/auth/current"


def authenticates(api: ApiTokenAPI, value: str) -> str | None:
    """None when the API accepts ``value`` as a key, else why not (never the value, nor
    anything the server said: the reason is kept in state).

    Sent through the client's own transport (connection pool, TLS settings, retries of
    429, 502-504 and connection failures with its backoff) with the new value in place of
    the run's key for this one request; any other answer is the verdict."""
    try:
        api.client.request(
            "GET", AUTH_CURRENT, idempotent=True, what="prove the new value", key=value
        )
    except ApiError as exc:
        if exc.status is not None:
            return f"{AUTH_CURRENT} answered {exc.status}"
        return f"{AUTH_CURRENT} could not be reached ({type(exc).__name__})"
    return None
