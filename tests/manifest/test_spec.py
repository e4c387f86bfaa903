"""The desired shape of one token (reconciler.manifest.spec): every spelling of an
expiry, as manifests give it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.manifest.loader import load_manifests
from reconciler.manifest.spec import Expiry

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
