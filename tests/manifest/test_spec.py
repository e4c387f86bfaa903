"""The desired shape of one token (reconciler.manifest.spec): every spelling of an expiry,
as manifests and YAML give it, what a new token is created with, how a live expiry is
compared, and the spec's canonical form."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.manifest.loader import load_manifests
from reconciler.manifest.spec import Expiry, TokenSpec

UTC = timezone.utc


def write(base: Path, name: str, text: str | bytes) -> Path:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("never", Expiry.never()),
        ("null", Expiry.never()),
        ("12h", Expiry("duration", duration=timedelta(hours=12))),
        ("2w", Expiry("duration", duration=timedelta(weeks=2))),
        ("2027-01-31", Expiry("at", at=datetime(2027, 1, 31, tzinfo=timezone.utc))),
        ('"2027-01-31"', Expiry("at", at=datetime(2027, 1, 31, tzinfo=timezone.utc))),
        (
            "2027-01-31T12:00:00Z",
            Expiry("at", at=datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ),
        (
            "2027-01-31T12:00:00",  # no zone: UTC
            Expiry("at", at=datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ),
        (
            "2027-01-31T14:00:00+02:00",
            Expiry("at", at=datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ),
        (
            '"2027-01-31T12:00:00Z"',
            Expiry("at", at=datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ),
    ],
)
def test_expires_forms(tmp_path: Path, written: str, expected: Expiry) -> None:
    text = f"tokens:\n  - name: a\n    scopes: [api]\n    expires: {written}\n"
    path = write(tmp_path, "m.yaml", text)
    assert load_manifests([path]).tokens["a"].expires == expected


# ---------------------------------------------------------------- Expiry directly

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_values_yaml_gives_that_are_not_strings() -> None:
    assert Expiry.parse(None) == Expiry.never()
    assert Expiry.parse(date(2027, 1, 31)) == Expiry("at", at=datetime(2027, 1, 31, tzinfo=UTC))
    # A datetime YAML read without a zone is UTC; one with a zone is converted.
    assert Expiry.parse(datetime(2027, 1, 31, 12)).at == datetime(2027, 1, 31, 12, tzinfo=UTC)
    plus_two = datetime(2027, 1, 31, 14, tzinfo=timezone(timedelta(hours=2)))
    assert Expiry.parse(plus_two).at == datetime(2027, 1, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (90, "expires must be never, a duration (12h, 90d, 2w), a date"),
        (["90d"], "not list"),
        ("soon", "'soon' is not a valid expiry: use never, a duration"),
        ("9999-12-31T23:00:00-05:00", "is out of range: use a date between"),
    ],
)
def test_an_expiry_that_cannot_be_read_says_what_can(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        Expiry.parse(value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("text", ["never", "90d", "14d", "1h30m", "2027-01-31T12:00:00Z"])
def test_the_canonical_spelling_reads_back_as_the_same_expiry(text: str) -> None:
    expiry = Expiry.parse(text)
    assert expiry.text() == text
    assert Expiry.parse(expiry.text()) == expiry


def test_the_expiry_a_new_token_is_created_with() -> None:
    assert Expiry.parse("90d").expired_at_for_new_token(NOW) == NOW + timedelta(days=90)
    fixed = Expiry.parse("2027-01-31")
    assert fixed.expired_at_for_new_token(NOW) == datetime(2027, 1, 31, tzinfo=UTC)
    assert Expiry.never().expired_at_for_new_token(NOW) is None


def test_a_live_expiry_matches_or_says_how_it_differs() -> None:
    never = Expiry.never()
    assert never.mismatch(NOW, None) is None
    assert never.mismatch(NOW, NOW) == "expiry changed: 2026-06-01T12:00:00Z -> never"

    fixed = Expiry.parse("2027-01-31T00:00:00Z")
    at = datetime(2027, 1, 31, tzinfo=UTC)
    assert fixed.mismatch(NOW, at + timedelta(milliseconds=500)) is None  # wire rounding
    assert fixed.mismatch(NOW, at + timedelta(days=1)) == (
        "expiry changed: 2027-02-01T00:00:00Z -> 2027-01-31T00:00:00Z"
    )
    assert fixed.mismatch(NOW, None) == "expiry changed: never -> 2027-01-31T00:00:00Z"

    rolling = Expiry.parse("30d")
    assert rolling.mismatch(NOW, None) == "expiry changed: never -> 30d after creation"
    # Earlier is fine (the token was made under a shorter policy); a few minutes of
    # clock skew are tolerated; later is not.
    assert rolling.mismatch(NOW, NOW + timedelta(days=7)) is None
    assert rolling.mismatch(NOW, NOW + timedelta(days=30, minutes=4)) is None
    later = rolling.mismatch(NOW, NOW + timedelta(days=31))
    assert later == "expiry changed: 2026-07-02T12:00:00Z is later than creation + 30d"
    assert rolling.mismatch(None, NOW) is None  # no creation time: nothing to compare


# ---------------------------------------------------------------- TokenSpec


def test_a_spec_round_trips_through_its_canonical_dict() -> None:
    spec = TokenSpec(
        name="ci-deployer",
        description="Deploys",
        scopes=frozenset({"write_cluster", "api"}),
        expires=Expiry.parse("90d"),
        rotate_before=timedelta(days=14),
        overlap=timedelta(hours=1),
        deliver_to=("vault://secret/ci",),
    )
    data = spec.to_dict()
    assert data == {
        "name": "ci-deployer",
        "description": "Deploys",
        "scopes": ["api", "write_cluster"],
        "expires": "90d",
        "rotate_before": "2w",
        "overlap": "1h",
        "deliver_to": ["vault://secret/ci"],
    }
    again = TokenSpec.from_dict(data)
    assert again == spec and again.deliver_to == spec.deliver_to


def test_where_values_go_is_not_part_of_the_token() -> None:
    """deliver_to neither makes two specs differ nor is kept in state's form."""
    plain = TokenSpec(name="a")
    delivered = TokenSpec(name="a", deliver_to=("aws-sm://x",))
    assert plain == delivered
    assert "deliver_to" not in delivered.to_dict(delivery=False)
    assert "deliver_to" not in plain.to_dict()
    assert plain.to_dict()["overlap"] == "0s"


def test_a_malformed_spec_dict_is_refused() -> None:
    with pytest.raises(KeyError):
        TokenSpec.from_dict({"name": "a"})
    with pytest.raises(ValueError, match="is not a duration"):
        TokenSpec.from_dict({"name": "a", "scopes": ["api"], "rotate_before": "soon"})
