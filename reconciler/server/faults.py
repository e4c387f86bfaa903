"""Fault injection for the local API: latency, 5xx, 429 and lost create responses."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["ok", "error", "rate_limit"]


@dataclass(frozen=True)
class Faults:
    """What to break, all off by default. Rates are fractions of requests in [0, 1].

    Faults apply to the API routes (``/api/...``) only, never to ``/_admin``.
    ``fail_next`` fails exactly that many of the next requests with ``fail_status`` before
    any random fault is considered; ``lose_next_creates`` likewise loses the responses of
    that many next successful creates. ``error_after_create_rate`` and
    ``error_after_next_creates`` commit a create and then answer ``error_status`` instead of
    the token (a 5xx after commit: the client cannot tell whether the token exists).
    ``seed`` makes the random faults reproducible.
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    lost_create_rate: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    lose_next_creates: int = 0
    error_after_create_rate: float = 0.0
    error_after_next_creates: int = 0
    # /auth/current answers 401 to every key but the admin key: a new token's value is
    # refused when reconciler tries to prove it (its previous generation must survive).
    refuse_auth_current: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "rate_limit_rate",
            "lost_create_rate",
            "error_after_create_rate",
        ):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        for name in (
            "latency_ms",
            "retry_after",
            "fail_next",
            "lose_next_creates",
            "error_after_next_creates",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("error_status", "fail_status"):
            status = getattr(self, name)
            if not 400 <= status <= 599:
                raise ValueError(f"{name} must be an HTTP error status (400-599), not {status}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Faults | None = None) -> Faults:
        """``base`` with the given fields replaced; unknown or mistyped fields raise
        ValueError (the admin endpoint turns that into a 400)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "refuse_auth_current":
                if not isinstance(value, bool):
                    raise ValueError("refuse_auth_current must be true or false")
            elif key == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("seed must be an integer or null")
            elif key in (
                "latency_ms",
                "error_rate",
                "rate_limit_rate",
                "lost_create_rate",
                "error_after_create_rate",
            ):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{key} must be a number")
                value = float(value)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer")
            changes[key] = value
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Counters:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


class FaultInjector:
    """The live fault settings plus the request statistics, shared by all requests.

    Decisions are drawn under a lock from one ``random.Random(seed)``, so a seeded run
    makes the same decisions for the same sequence of requests.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._random = random.Random(self._faults.seed)
        self._fail_next = self._faults.fail_next
        self._lose_next = self._faults.lose_next_creates
        self._error_after_next = self._faults.error_after_next_creates
        self._counters = _Counters()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return dataclasses.replace(
                self._faults,
                fail_next=self._fail_next,
                lose_next_creates=self._lose_next,
                error_after_next_creates=self._error_after_next,
            )

    def configure(self, faults: Faults) -> None:
        """Replace every setting (and reseed when a seed is given)."""
        with self._lock:
            self._faults = faults
            self._random = random.Random(faults.seed)
            self._fail_next = faults.fail_next
            self._lose_next = faults.lose_next_creates
            self._error_after_next = faults.error_after_next_creates

    def update(self, **changes: Any) -> Faults:
        """Change some settings, keeping the others; returns the new settings."""
        new = Faults.from_dict(changes, base=self.faults)
        self.configure(new)
        return new

    def reset(self) -> None:
        self.configure(Faults())

    @property
    def latency_seconds(self) -> float:
        with self._lock:
            return self._faults.latency_ms / 1000.0

    def decide(self) -> tuple[Decision, int]:
        """Whether the next API request fails before reaching the application, and with
        which status."""
        with self._lock:
            faults = self._faults
            if self._fail_next > 0:
                self._fail_next -= 1
                decision: Decision = "rate_limit" if faults.fail_status == 429 else "error"
                return decision, faults.fail_status
            if faults.error_rate and self._random.random() < faults.error_rate:
                return "error", faults.error_status
            if faults.rate_limit_rate and self._random.random() < faults.rate_limit_rate:
                return "rate_limit", 429
            return "ok", 200

    def decide_lose_create(self) -> bool:
        """Whether the response of this create (if it succeeds) is to be lost."""
        with self._lock:
            if self._lose_next > 0:
                self._lose_next -= 1
                return True
            rate = self._faults.lost_create_rate
            return bool(rate) and self._random.random() < rate

    def decide_error_after_create(self) -> int | None:
        """The error status to answer a committed create with, or None to answer it."""
        with self._lock:
            if self._error_after_next > 0:
                self._error_after_next -= 1
                return self._faults.error_status
            rate = self._faults.error_after_create_rate
            if rate and self._random.random() < rate:
                return self._faults.error_status
            return None

    @property
    def retry_after(self) -> int:
        with self._lock:
            return self._faults.retry_after

    # statistics

    def count_request(self, route: str) -> None:
        with self._lock:
            self._counters.requests[route] += 1

    def count_status(self, status: int) -> None:
        with self._lock:
            self._counters.statuses[str(status)] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._counters.faults[kind] += 1

    def stats(self) -> dict[str, Any]:
        """Requests per route (``"GET /api/v1/api_tokens"``), per status and faults injected
        (``error``, ``rate_limit``, ``lost_create``, ``error_after_create``, ``latency``)."""
        with self._lock:
            return {
                "total": sum(self._counters.requests.values()),
                "requests": dict(self._counters.requests),
                "statuses": dict(self._counters.statuses),
                "faults": dict(self._counters.faults),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = _Counters()
