"""The REST transport: one httpx client, typed errors, and retries with shared backoff."""

from __future__ import annotations

import json
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# httpx imports its own command line (rich, pygments: ~40 ms) whenever rich is installed,
# as it is beside BentoML; reconciler never runs it, so that import is declined (httpx
# then defines a stub `httpx.main`). Done only when httpx is not loaded already.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx

from reconciler import __version__
from reconciler.api.settings import check_api_key
from reconciler.errors import (
    ApiError,
    AuthenticationError,
    ConnectError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    RequestRejectedError,
    RequestTimeout,
    ServerError,
    TransportError,
    excerpt,
    redact,
    register_secret,
)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
CONNECT_RETRIES = 2


class Backoff:
    """When the next request may go out. Shared by every worker of a client, so one 429
    slows the whole pool down instead of each worker hammering the API in turn."""

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._sleep = sleep

    def hold_off(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def wait(self) -> None:
        while True:
            with self._lock:
                delay = self._not_before - time.monotonic()
            if delay <= 0:
                return
            self._sleep(delay)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare: only for an HTTP-date

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


class RestClient:
    """Talks to one BentoCloud endpoint with one API key.

    Every call either returns a 200 response or raises an ``ApiError`` subclass whose
    message names the endpoint and the problem, never the key. Idempotent calls (GET,
    DELETE) are retried with exponential backoff and jitter on 429, 502/503/504 and
    connection errors; other calls are retried only when the request provably never
    reached the server (connection refused, 429).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: str,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        verify: ssl.SSLContext | bool | str = True,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 64,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        register_secret(api_key, "API key")
        check_api_key(api_key)
        self.endpoint = endpoint.rstrip("/")
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self.backoff = Backoff(sleep=sleep)
        self.requests_sent = 0
        # Workers of a pool share the client: count under a lock so no request is missed.
        self._count_lock = threading.Lock()
        self._random = random.Random()
        self._http = httpx.Client(
            base_url=self.endpoint,
            headers={
                "X-YATAI-API-TOKEN": api_key,
                "User-Agent": f"reconciler/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            verify=verify,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"RestClient(endpoint={self.endpoint!r})"

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = retry_after_seconds(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self._backoff_max)
        ceiling = min(self._backoff_max, self._backoff_base * (2**attempt))
        return self._random.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool,
        what: str,
        key: str | None = None,
    ) -> httpx.Response:
        """Send one call, retrying as allowed; ``what`` names the call in error messages.
        ``key`` authenticates this one call instead of the client's key (proving that a new
        token's value works); it is registered for redaction like the client's own."""
        headers = None
        if key is not None:
            register_secret(key, "token value")
            headers = {"X-YATAI-API-TOKEN": key}
        attempt = 0
        while True:
            self.backoff.wait()
            response: httpx.Response | None = None
            try:
                with self._count_lock:
                    self.requests_sent += 1
                response = self._http.request(
                    method, path, params=params, json=json_body, headers=headers
                )
            except httpx.ConnectError as exc:
                # Nothing reached the server: safe to retry any method. A server that is down
                # stays down, so retry only briefly and fail fast.
                if attempt < min(self._max_retries, CONNECT_RETRIES):
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise ConnectError(
                    f"{what}: cannot connect to {self.endpoint} ({_reason(exc)})"
                ) from None
            except httpx.TimeoutException as exc:
                if idempotent and attempt < self._max_retries:
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise RequestTimeout(
                    f"{what}: {self.endpoint} did not answer in time ({_reason(exc)})"
                ) from None
            except httpx.HTTPError as exc:
                if idempotent and attempt < self._max_retries:
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(
                    f"{what}: connection to {self.endpoint} failed ({_reason(exc)})"
                ) from None

            if response.status_code == 200:
                return response
            retryable = response.status_code in RETRYABLE_STATUS and (
                idempotent or response.status_code == 429
            )
            if retryable and attempt < self._max_retries:
                delay = self._delay(attempt, response)
                if response.status_code == 429:
                    self.backoff.hold_off(delay)
                else:
                    self._sleep(delay)
                attempt += 1
                continue
            raise self._error(response, what, attempts=attempt + 1)

    def _error(self, response: httpx.Response, what: str, *, attempts: int) -> ApiError:
        status = response.status_code
        detail = _detail(response)
        suffix = f" after {attempts} attempts" if attempts > 1 else ""
        if status in (401, 403):
            return AuthenticationError(
                f"{what}: {self.endpoint} refused the API key (HTTP {status}); check "
                "--api-key / BENTO_CLOUD_API_KEY",
                status=status,
            )
        if status == 404 or (status == 400 and "record not found" in response.text):
            return NotFoundError(f"{what}: not found (HTTP {status})", status=status)
        if status == 429:
            return RateLimitedError(
                f"{what}: {self.endpoint} kept rate-limiting (HTTP 429){suffix}", status=status
            )
        if status >= 500:
            # A server may echo anything here, the key included: redacted and short.
            sent = response.headers.get("x-trace-id")
            trace = excerpt(sent, 80) if sent else None
            trace_text = f", trace id {trace}" if trace else ""
            return ServerError(
                f"{what}: {self.endpoint} failed with HTTP {status}{suffix}{trace_text}",
                status=status,
                trace_id=trace,
            )
        if 300 <= status < 400:
            location = excerpt(response.headers.get("location", "?"), 300)
            return RequestRejectedError(
                f"{what}: {self.endpoint} redirected (HTTP {status} to {location}); use the "
                "final URL as --endpoint",
                status=status,
            )
        return RequestRejectedError(
            f"{what}: {self.endpoint} rejected the request (HTTP {status}){detail}", status=status
        )

    def json(self, response: httpx.Response, what: str) -> Any:
        """The decoded JSON body of a 200, or InvalidResponseError."""
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested deeper than the decoder goes ([[[[...]]]]).
            kind = excerpt(response.headers.get("content-type", "unknown content type"), 80)
            raise InvalidResponseError(
                f"{what}: {self.endpoint} answered 200 with a body that is not JSON ({kind}, "
                f"{len(response.content)} bytes)"
            ) from None


def _reason(exc: httpx.HTTPError) -> str:
    # Redacted whole before cutting to its first line: a key split by a newline is caught.
    text = redact(str(exc)).strip()
    return excerpt(text.splitlines()[0], 200) if text else type(exc).__name__


def _detail(response: httpx.Response) -> str:
    """A short server-provided error message, if the body has one."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return ""
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return f": {excerpt(value, 300)}"
    return ""
