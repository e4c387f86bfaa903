"""Who holds a state lock (reconciler.state.backends.lockinfo): its file form and how
error messages describe it."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import LockError
from reconciler.state.backends import LockInfo


def test_lock_info_round_trip_and_description() -> None:
    info = LockInfo.new("import", "/tmp/x")
    assert LockInfo.from_dict(json.loads(json.dumps(info.to_dict())), source="x") == info
    text = info.describe("a note")
    assert text.startswith(f"locked by {info.holder} (pid {info.pid}) for import since ")
    assert "Z, lock id" in text and "(a note)" in text
    assert text.endswith(f"run `reconciler force-unlock {info.id}`")
    with pytest.raises(LockError, match="unreadable"):
        LockInfo.from_dict({"id": "x"}, source="lockfile")
