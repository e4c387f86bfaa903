"""`reconciler state list`: live names and previous generations are shown."""

from __future__ import annotations

from datetime import datetime, timezone

from reconciler.manifest.spec import TokenSpec
from reconciler.state.model import OwnedToken, PreviousGeneration, State
from reconciler.state.render import render_state_table


def test_state_list_shows_live_names_and_previous_generations() -> None:
    spec = TokenSpec(name="ci-deployer", scopes=frozenset({"api"}))
    current = OwnedToken(name="ci-deployer", uid="tok_new", spec=spec, live_name="ci-deployer-2")
    old = OwnedToken(name="ci-deployer", uid="tok_old", spec=spec)
    kept_until = datetime(2026, 12, 2, 21, 0, tzinfo=timezone.utc)
    state = (
        State.new("http://127.0.0.1:1")
        .with_token(current)
        .with_previous(PreviousGeneration.of(old, kept_until))
    )

    lines = render_state_table(state).splitlines()

    assert lines[0].split() == ["NAME", "LIVE", "NAME", "UID", "SCOPES", "EXPIRES"]
    assert lines[1].split() == ["ci-deployer", "ci-deployer-2", "tok_new", "api", "never"]
    assert "Previous generations:" in lines
    kept = next(line for line in lines if "tok_old" in line)
    assert kept.split()[:3] == ["ci-deployer", "ci-deployer", "tok_old"]
    assert "2026-12-02 21:00 UTC" in kept
    assert lines[-1] == "1 token (serial 0)"


def test_state_list_without_generations_shows_neither_live_names_nor_previous() -> None:
    spec = TokenSpec(name="reader", scopes=frozenset({"read_cluster"}))
    state = State.new("http://127.0.0.1:1").with_token(OwnedToken("reader", "tok_1", spec))

    text = render_state_table(state)

    assert "Previous generations" not in text
    assert text.splitlines()[0].split() == ["NAME", "UID", "SCOPES", "EXPIRES"]
    assert text.splitlines()[1].split() == ["reader", "tok_1", "read_cluster", "never"]
