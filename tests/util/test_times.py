"""Times and durations (reconciler.util.times): the duration grammar, its spellings, and
instants in UTC."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.cli import run_cli_subprocess
from support.local_api import LocalApi

from reconciler.util.times import (
    as_utc,
    format_duration,
    format_time,
    humanize,
    is_duration,
    parse_duration,
    parse_seconds,
    utcnow,
)


def test_durations_keep_the_users_spelling(local_api: LocalApi, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "t.yaml"
    env = {"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": local_api.admin_key}
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 14d\n    rotate_before: 7d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    planned = run_cli_subprocess("plan", "--format", "json", cwd=tmp_path, env=env)
    assert planned.exit_code == 0, planned
    after = json.loads(planned.stdout)["actions"][0]["after"]
    assert (after["expires"], after["rotate_before"]) == ("14d", "7d")
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 7d\n    rotate_before: 14d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    invalid = run_cli_subprocess("validate", cwd=tmp_path)
    assert invalid.exit_code == 1, invalid
    assert "rotate_before (14d)" in invalid.stderr and "(7d)" in invalid.stderr, invalid
    assert "2w" not in invalid.stderr


# ---------------------------------------------------------------- the duration grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 7d ", timedelta(days=7)),
        ("36500d", timedelta(days=36500)),
    ],
)
def test_durations_parse_to_their_length(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert is_duration(text)


@pytest.mark.parametrize(
    "text", ["", "d", "12", "1.5h", "-3d", "3 d", "1d1w", "ten days", "0s", "0d0h"]
)
def test_what_is_not_a_duration_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as caught:
        parse_duration(text)
    assert "12h, 90d or 2w" in str(caught.value)


def test_zero_is_a_duration_only_where_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    assert format_duration(parse_duration("0s", allow_zero=True)) == "0s"


@pytest.mark.parametrize("text", ["36501d", "5215w", "9" * 10 + "s", "9" * 5000 + "d"])
def test_a_duration_is_at_most_a_hundred_years_and_long_digits_are_refused_quickly(
    text: str,
) -> None:
    started = time.perf_counter()
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration(text)
    assert time.perf_counter() - started < 0.5


def test_a_parsed_duration_keeps_its_spelling_and_others_get_the_shortest() -> None:
    assert format_duration(parse_duration("14d")) == "14d"  # not "2w"
    assert format_duration(parse_duration("60m")) == "60m"  # not "1h"
    assert format_duration(timedelta(days=14)) == "2w"
    assert format_duration(timedelta(hours=36)) == "36h"
    assert format_duration(timedelta(minutes=90)) == "90m"
    assert format_duration(timedelta(seconds=61)) == "61s"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0.0), ("90", 90.0), ("2.5", 2.5), ("0s", 0.0), ("30s", 30.0), ("5m", 300.0),
     ("1h", 3600.0), ("1h30m", 5400.0), (" 2m ", 120.0)],
)  # fmt: skip
def test_seconds_are_plain_numbers_or_durations(text: str, expected: float) -> None:
    assert parse_seconds(text) == expected


@pytest.mark.parametrize("text", ["-1s", "soon", "1" * 10 + "s", "5 minutes", "1.5m", ""])
def test_what_is_not_a_duration_says_what_is(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration: use seconds"):
        parse_seconds(text)


# ---------------------------------------------------------------- instants


def test_naive_times_are_read_as_utc_and_aware_ones_converted() -> None:
    naive = datetime(2027, 1, 31, 12, 0)
    assert as_utc(naive) == datetime(2027, 1, 31, 12, 0, tzinfo=timezone.utc)
    paris = datetime(2027, 1, 31, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(paris) == datetime(2027, 1, 31, 12, 0, tzinfo=timezone.utc)
    assert as_utc(paris).tzinfo == timezone.utc
    assert utcnow().tzinfo == timezone.utc


def test_instants_are_spelt_in_rfc3339_utc_with_z() -> None:
    paris = datetime(2027, 1, 31, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(paris) == "2027-01-31T12:00:00Z"
    assert format_time(datetime(2027, 1, 31)) == "2027-01-31T00:00:00Z"


@pytest.mark.parametrize(
    ("delta", "expected"),
    [(timedelta(days=3, hours=5), "3d"), (timedelta(hours=5, minutes=59), "5h"),
     (timedelta(minutes=12, seconds=59), "12m"), (timedelta(seconds=20), "0m"),
     (-timedelta(days=2), "-2d")],
)  # fmt: skip
def test_humanized_durations_round_down_to_their_largest_unit(
    delta: timedelta, expected: str
) -> None:
    assert humanize(delta) == expected
