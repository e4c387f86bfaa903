"""Times and durations: UTC instants, the duration grammar (90d, 1h30m) and their spellings."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from reconciler.util.text import clip

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


_SECONDS_PATTERN = re.compile(r"^\s*(\d{1,9})(\.\d{1,6})?\s*$")


def parse_seconds(text: str) -> float:
    """A wait or a timeout as the command line takes it: plain seconds ('0', '90', '2.5')
    or a duration ('30s', '5m', '1h30m', '0s'). Raises ValueError naming the forms."""
    plain = _SECONDS_PATTERN.match(text)
    if plain is not None:
        return float(plain.group(1) + (plain.group(2) or ""))
    try:
        return parse_duration(text.strip(), allow_zero=True).total_seconds()
    except ValueError:
        raise ValueError(
            f"{clip(text)} is not a duration: use seconds (90) or a duration such as 30s, 5m "
            "or 1h30m"
        ) from None


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
