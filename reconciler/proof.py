"""Proof that a new token's value works before the generation it replaces is retired: one
``GET /api/v1/auth/current`` sent with the new value (BentoML's own client calls it)."""

from __future__ import annotations

import httpx

from reconciler.client import ApiTokenAPI
from reconciler.errors import ApiError
from reconciler.http import RETRYABLE_STATUS

AUTH_CURRENT = "/api/v1/auth/current"
AUTH_HEADER = "X-YATAI-API-TOKEN"
# Busy or briefly failing APIs get a few more tries: a proof that cannot be made only
# keeps the previous generation (and stops the run), it never loses anything.
ATTEMPTS = 5


class ProofFailed(ApiError):
    """A new token's value was not accepted at /auth/current: its predecessor is kept."""


def authenticates(api: ApiTokenAPI, value: str) -> str | None:
    """None when the API accepts ``value`` as a key, else why not (never the value).

    Sent through the client's own connection pool and TLS settings, with the new value in
    place of the run's key for this one request; 429, 502-504 and connection failures are
    retried with the client's backoff, any other answer is the verdict."""
    rest = api.client
    reason = "no answer"
    for attempt in range(ATTEMPTS):
        response: httpx.Response | None = None
        try:
            response = rest._http.get(AUTH_CURRENT, headers={AUTH_HEADER: value})
        except httpx.HTTPError as exc:
            reason = f"{AUTH_CURRENT} could not be reached ({type(exc).__name__})"
        else:
            if response.status_code == 200:
                return None
            reason = f"{AUTH_CURRENT} answered {response.status_code}"
            if response.status_code not in RETRYABLE_STATUS:
                return reason
        if attempt + 1 < ATTEMPTS:
            rest._sleep(rest._delay(attempt, response))
    return reason
