"""The desired shape of one token (TokenSpec) and its expiry policy, shared by manifests,
state, the planner and saved plans."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from reconciler.util.text import clip
from reconciler.util.times import as_utc, format_duration, format_time, is_duration, parse_duration

SCOPES: tuple[str, ...] = (
    "api",
    "read_organization",
    "write_organization",
    "read_cluster",
    "write_cluster",
)

NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_RULE = (
    "a DNS-1035 label: lowercase letters, digits and '-', starting with a letter, "
    "ending with a letter or digit, at most 63 characters"
)

MAX_DESCRIPTION = 1024  # characters; the local API refuses longer ones, so validate does too


def _utc_in_range(moment: datetime) -> datetime:
    try:
        return as_utc(moment)
    except OverflowError:
        raise ValueError(
            f"{moment.isoformat()} is out of range: use a date between 0001-01-02 and 9999-12-30"
        ) from None


@dataclass(frozen=True)
class Expiry:
    """When a token should expire: never, a rolling duration policy, or a fixed moment."""

    kind: Literal["never", "duration", "at"]
    duration: timedelta | None = None
    at: datetime | None = None

    @classmethod
    def never(cls) -> Expiry:
        return cls("never")

    @classmethod
    def parse(cls, value: object) -> Expiry:
        """Read a manifest's ``expires`` value. Raises ValueError naming the accepted forms."""
        if value is None:
            return cls.never()
        if isinstance(value, datetime):
            return cls("at", at=_utc_in_range(value))
        if isinstance(value, date):
            return cls("at", at=datetime.combine(value, time(), timezone.utc))
        if not isinstance(value, str):
            raise ValueError(
                f"expires must be never, a duration (12h, 90d, 2w), a date (2027-01-31) or an "
                f"ISO datetime, not {type(value).__name__}"
            )
        text = value.strip()
        if text == "never":
            return cls.never()
        if is_duration(text):
            return cls("duration", duration=parse_duration(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{clip(value)} is not a valid expiry: use never, a duration (12h, 90d, 2w), a "
                "date (2027-01-31) or an ISO datetime (2027-01-31T12:00:00Z; UTC when no zone)"
            ) from None
        return cls("at", at=_utc_in_range(moment))

    def text(self) -> str:
        """The canonical spelling, stable across runs (used in state, plans and diffs)."""
        if self.kind == "duration" and self.duration is not None:
            return format_duration(self.duration)
        if self.kind == "at" and self.at is not None:
            return format_time(self.at)
        return "never"

    def expired_at_for_new_token(self, now: datetime) -> datetime | None:
        """The expired_at to send when creating a token under this policy."""
        if self.kind == "duration" and self.duration is not None:
            return as_utc(now) + self.duration
        if self.kind == "at":
            return self.at
        return None

    def mismatch(self, created_at: datetime | None, expired_at: datetime | None) -> str | None:
        """Why a live token's expiry does not satisfy this policy, or None when it does."""
        actual = "never" if expired_at is None else format_time(expired_at)
        if self.kind == "never":
            return None if expired_at is None else f"expiry changed: {actual} -> never"
        if self.kind == "at":
            assert self.at is not None
            if expired_at is not None and abs(as_utc(expired_at) - self.at) < timedelta(seconds=1):
                return None
            return f"expiry changed: {actual} -> {self.text()}"
        assert self.duration is not None
        if expired_at is None:
            return f"expiry changed: never -> {self.text()} after creation"
        if created_at is None:
            return None
        # A small tolerance absorbs clock skew between our "now" and the server's created_at.
        limit = as_utc(created_at) + self.duration + timedelta(minutes=5)
        if as_utc(expired_at) > limit:
            return f"expiry changed: {actual} is later than creation + {self.text()}"
        return None


@dataclass(frozen=True)
class TokenSpec:
    """What a manifest declares for one token; the comparable part of a token."""

    name: str
    description: str = ""
    scopes: frozenset[str] = frozenset({"api"})
    expires: Expiry = Expiry("never")
    rotate_before: timedelta | None = None
    # How long the previous generation stays valid after its successor was delivered.
    overlap: timedelta = timedelta(0)
    #: The token's own secrets destinations (manifest ``deliver_to:``), replacing the run's
    #: list; empty means the run's. Where the value goes is not a property of the token, so
    #: changing it never replaces one.
    deliver_to: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self, *, delivery: bool = True) -> dict[str, Any]:
        """A JSON-ready, canonical form (state, saved plans, deepdiff input); without
        ``deliver_to`` when ``delivery`` is False (state records tokens, not where their
        values went)."""
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "scopes": sorted(self.scopes),
            "expires": self.expires.text(),
            "rotate_before": (
                format_duration(self.rotate_before) if self.rotate_before is not None else None
            ),
            "overlap": format_duration(self.overlap) if self.overlap else "0s",
        }
        if delivery and self.deliver_to:
            # Only when set, so states and plans written before deliver_to read the same.
            data["deliver_to"] = list(self.deliver_to)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSpec:
        """Inverse of to_dict. Raises ValueError or KeyError on a malformed dict."""
        rotate = data.get("rotate_before")
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            scopes=frozenset(str(s) for s in data["scopes"]),
            expires=Expiry.parse(data.get("expires") or "never"),
            rotate_before=parse_duration(rotate) if rotate else None,
            overlap=parse_duration(str(data.get("overlap") or "0s"), allow_zero=True),
            deliver_to=tuple(str(d) for d in data.get("deliver_to") or ()),
        )
