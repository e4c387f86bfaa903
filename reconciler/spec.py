"""The desired shape of one token (TokenSpec) and its expiry policy, shared by manifests,
state, the planner and saved plans."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from reconciler.errors import clip

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
# One or more whole numbers with a unit each, largest first: 90d, 12h, 1h30m, 2w3d, 45s.
DURATION_PATTERN = re.compile(r"^\s*((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?\s*$")
_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_NOT_A_DURATION = "is not a duration: use a positive whole number and unit,"
_DURATION_FORMS = "such as 12h, 90d or 2w (units s, m, h, d, w, also combined: 1h30m)"
# Longer than any token policy needs, short enough that now + duration is a valid datetime.
MAX_DURATION = timedelta(days=36500)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are read as UTC (BentoCloud's convention)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class Duration(timedelta):
    """A timedelta that remembers how the user spelt it ('14d' stays '14d', not '2w')."""

    spelling: str


def is_duration(text: str) -> bool:
    """Whether ``text`` is spelt as a duration (with at least one unit)."""
    match = DURATION_PATTERN.match(text)
    return match is not None and any(match.group(i) for i in (2, 4, 6, 8, 10))


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """Parse '12h', '90d', '2w', '30m' or '1h30m'. Raises ValueError with the accepted
    forms. Zero ('0s') only with ``allow_zero`` (an overlap may be none)."""
    match = DURATION_PATTERN.match(text)
    if match is None or not is_duration(text):
        raise ValueError(f"{clip(text)} {_NOT_A_DURATION} {_DURATION_FORMS}")
    parts = [(match.group(i), unit) for i, unit in zip((2, 4, 6, 8, 10), "wdhms", strict=True)]
    # Length first: int() of thousands of digits is slow, and refused past 4300.
    if any(digits is not None and len(digits) > 9 for digits, _ in parts):
        raise ValueError(
            f"{clip(text)} is too long: a duration is at most 100 years (36500d, 5214w)"
        )
    delta = sum((int(digits) * _UNITS[unit] for digits, unit in parts if digits), timedelta())
    if delta > MAX_DURATION:
        raise ValueError(
            f"{clip(text)} is too long: a duration is at most 100 years (36500d, 5214w)"
        )
    if not delta and not allow_zero:
        raise ValueError(f"{clip(text)} {_NOT_A_DURATION} {_DURATION_FORMS}")
    spelt = Duration(seconds=delta.total_seconds())
    spelt.spelling = "".join(f"{int(d)}{u}" for d, u in parts if d) if delta else "0s"
    return spelt


_WAIT_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_WAIT_UNITS = _UNITS


def parse_wait(text: str) -> timedelta:
    """Parse a wait such as '0', '30s', '5m' or '1h': the duration grammar with seconds and
    minutes too, and zero allowed (the only value without a unit). Raises ValueError."""
    match = _WAIT_PATTERN.match(text)
    if match is None or len(match.group(1)) > 9 or (not match.group(2) and int(match.group(1))):
        raise ValueError(f"{clip(text)} is not a wait: use 0, 30s, 5m or 1h")
    return int(match.group(1)) * _WAIT_UNITS[match.group(2) or "s"]


def format_duration(delta: timedelta) -> str:
    """How the user wrote a duration made by parse_duration, else its shortest exact
    spelling ('2w', '90d', '36h')."""
    spelling = getattr(delta, "spelling", None)
    if spelling is not None:
        return str(spelling)
    seconds = int(delta.total_seconds())
    if seconds % 3600:
        return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    hours = seconds // 3600
    if hours % (24 * 7) == 0:
        return f"{hours // (24 * 7)}w"
    if hours % 24 == 0:
        return f"{hours // 24}d"
    return f"{hours}h"


def humanize(delta: timedelta) -> str:
    """A rough human duration for reasons: '3d', '5h', '12m'."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + humanize(-delta)
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{max(seconds // 60, 0)}m"


def format_time(moment: datetime) -> str:
    """An aware datetime as compact RFC 3339 UTC ('2026-12-01T00:00:00Z')."""
    text = as_utc(moment).isoformat().replace("+00:00", "Z")
    return text


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
