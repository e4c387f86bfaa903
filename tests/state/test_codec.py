"""reconciler.state.codec: one encoder for every backend, a strict decoder, migrations."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.states import ENDPOINT, sample_state

from reconciler.errors import StateError
from reconciler.manifest.spec import TokenSpec
from reconciler.state import codec as statecodec
from reconciler.state.backends import LocalStateBackend
from reconciler.state.codec import StateEncoder, decode_state, encode_state
from reconciler.state.model import OwnedToken, PendingCreate, PreviousGeneration, State
from reconciler.state.move import state_json


def _reference(state: State) -> bytes:
    return (json.dumps(state.to_dict(), indent=2) + "\n").encode("utf-8")


def _rich_state() -> State:
    state = sample_state()
    moment = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    state = state.with_pending(PendingCreate("new-one", moment))
    spec = TokenSpec("old-one", description='quote " and \\ and é\n', scopes=frozenset({"api"}))
    old = OwnedToken("old-one", "tok-old", spec, moment, None)
    return state.with_previous(PreviousGeneration.of(old, None))


def test_encoder_is_json_dumps_byte_for_byte_across_versions() -> None:
    encoder = StateEncoder()
    state = _rich_state()
    for step in range(4):
        assert encoder.encode(state) == _reference(state)
        state = replace(state, serial=state.serial + 1).without_pending("new-one")
        if step == 1:
            state = state.without_token("reader")
    empty = State.new(ENDPOINT)
    assert encode_state(empty) == _reference(empty)


def test_every_writer_stores_the_same_bytes(tmp_path: Path) -> None:
    state = _rich_state()
    path = tmp_path / "tokens.state.json"
    stored = LocalStateBackend(path).write(state)
    assert path.read_bytes() == encode_state(stored) == _reference(stored)
    assert state_json(stored).encode() == path.read_bytes()


def test_decode_round_trips() -> None:
    state = _rich_state()
    assert decode_state(encode_state(state), source="x") == state


def _document(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode_state(sample_state()))
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"serial": -1}, "serial"),
        ({"serial": 2**64}, "serial"),
        ({"serial": 1.5}, "serial"),
        ({"lineage": 7}, "lineage"),
        ({"tokens": {}}, "tokens"),
        ({"pending_creates": [{"name": "x", "started_at": "yesterday"}]}, "started_at"),
        ({"pending_creates": [{"name": "x", "started_at": 1700000000}]}, "started_at"),
    ],
)
def test_strict_shape(changes: dict[str, Any], problem: str) -> None:
    raw = json.dumps(_document(**changes)).encode()
    with pytest.raises(StateError) as caught:
        decode_state(raw, source="s.json", restore="Restore it from s.json.backup")
    message = str(caught.value)
    assert message.startswith("s.json: state file is corrupt (") and problem in message
    assert message.endswith("Restore it from s.json.backup") and "\n" not in message


def test_spec_name_must_match_the_token_name() -> None:
    data = _document()
    data["tokens"][0]["spec"]["name"] = "someone-else"
    with pytest.raises(StateError, match="records the spec of someone-else"):
        decode_state(json.dumps(data).encode(), source="s.json")


def test_older_versions_are_migrated_before_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # The seam a new format version uses: the current version number goes up, and the
    # previous one gets a function that turns its dict into the new shape.
    current = statecodec.FORMAT_VERSION
    data = _document(format_version=current)
    data["owners"] = "renamed below"
    monkeypatch.setattr(statecodec, "FORMAT_VERSION", current + 1)

    def drop_owners(document: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in document.items() if key != "owners"}

    monkeypatch.setitem(statecodec.MIGRATIONS, current, drop_owners)
    monkeypatch.setattr(statecodec, "_MODELS", {current + 1: statecodec._MODELS[current]})
    state = decode_state(json.dumps(data).encode(), source="s.json")
    assert state.tokens == sample_state().tokens
