"""Apply against a faulty API: ambiguous creates, 5xx, 429 with Retry-After, latency, a dead
endpoint. Converging may take several runs; a token is never duplicated, lost, or left live
with a secret nobody received."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.cli import CliResult, run_cli_subprocess
from support.convergence import check_converged, check_no_changes, user_workspace
from support.ports import free_port
from support.workspace import Workspace, token

from reconciler.server.faults import Faults
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.model import PendingCreate

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory

SEED = 7321


def _converge_under(
    ws: Workspace, faults: dict[str, Any], *extra: str, runs: int = 10
) -> tuple[int, dict[str, int]]:
    """Apply with ``faults`` on until a run succeeds; then check convergence with the faults
    off. Returns the number of runs and the faults injected."""
    ws.api.reset_stats()
    ws.api.set_faults(**faults)
    try:
        results = _apply_until_it_succeeds(ws, *extra, runs=runs)
    finally:
        injected: dict[str, int] = dict(ws.api.stats()["faults"])
        ws.api.reset_faults()
    check_no_changes(ws)
    check_converged(ws)
    return len(results), injected


def _apply_until_it_succeeds(ws: Workspace, *extra: str, runs: int) -> list[CliResult]:
    """Apply until one run succeeds (at most ``runs``); returns every run."""
    results: list[CliResult] = []
    for _ in range(runs):
        result = ws.apply(*extra)
        results.append(result)
        assert "Traceback" not in result.err, result
        if result.code == 0:
            return results
        assert result.code == 1, result
    raise AssertionError(
        f"apply did not converge in {runs} runs; last:\n{results[-1]}\napi stats: {ws.api.stats()}"
    )


# ---------------------------------------------------------------- ambiguous creates

AMBIGUOUS = {
    "lose-next-5": {"lose_next_creates": 5},
    "lost-rate-30%": {"lost_create_rate": 0.3, "seed": SEED},
    "5xx-after-commit-next-5": {"error_after_next_creates": 5},
    "5xx-after-commit-rate-30%": {"error_after_create_rate": 0.3, "seed": SEED},
    "both-15%": {"lost_create_rate": 0.15, "error_after_create_rate": 0.15, "seed": SEED},
}


@pytest.mark.parametrize("faults", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_ambiguous_creates_deliver_every_secret_exactly_once(
    faults: dict[str, Any], local_api: LocalApi, tmp_path: Path
) -> None:
    """The create committed but its answer was lost (dropped connection, or a 5xx after the
    commit): the orphan is found and deleted, the create retried, and in the end every live
    token's value is in the secrets file and authenticates as that token."""
    ws = user_workspace(tmp_path, local_api)
    ws.declare(*(token(f"amb-{n}") for n in range(30)))
    _runs, injected = _converge_under(ws, faults)
    assert injected.get("lost_create", 0) + injected.get("error_after_create", 0) >= 3, injected

    # Replacements go through the same create path (under a NAME-2 live name, proven,
    # the previous generation kept through an overlap): change every scope, under faults.
    ws.declare(
        *[token(f"amb-{n}", scopes=("api", "read_cluster"), overlap="1h") for n in range(30)]
    )
    _converge_under(ws, faults, "--force", "--updates", "replace")


def test_a_lost_create_is_cleaned_up_within_the_same_run(
    local_api: LocalApi, tmp_path: Path
) -> None:
    ws = user_workspace(tmp_path, local_api)
    ws.declare(token("only"))
    local_api.set_faults(lose_next_creates=1)
    result = ws.apply()
    assert result.code == 0, result
    assert local_api.stats()["faults"] == {"lost_create": 1}
    # Two creates reached the server; the first one's token was deleted as an orphan.
    assert local_api.store.count_tokens(include_deleted=True) == 2
    check_converged(ws)


def test_an_ambiguous_create_that_keeps_failing_is_finished_by_the_next_run(
    local_api: LocalApi, tmp_path: Path
) -> None:
    """Every attempt of this run is answered 503 after the commit: the run fails naming
    the problem, state remembers the pending create, and the next run deletes the orphan
    before creating the token whose secret it delivers."""
    ws = user_workspace(tmp_path, local_api)
    ws.declare(token("stubborn"))
    local_api.set_faults(error_after_next_creates=100)
    first = ws.apply()
    local_api.reset_faults()
    assert first.code == 1, first
    assert "may have been created" in first.err, first
    state = ws.read_state()
    assert state is not None and "stubborn" in state.pending
    assert len(ws.live()) == 1  # the last attempt's orphan (earlier ones were cleaned up)

    plan = ws.plan()
    assert plan.code == 0, plan
    assert "interrupted create" in plan.out, plan
    second = ws.apply()
    assert second.code == 0, second
    check_no_changes(ws)
    check_converged(ws)


# ---------------------------------------------------------------- a generally faulty API

RATES = [0.1, 0.3]


@pytest.mark.parametrize("rate", RATES, ids=[f"{int(r * 100)}%" for r in RATES])
def test_apply_converges_on_a_faulty_api(
    rate: float, local_api: LocalApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """503s, 429s with Retry-After, latency and dropped create answers at ``rate`` (seeded):
    create, then change (replace, delete, create), then remove everything but one token;
    every phase converges within a few runs and never duplicates or loses a token."""
    faults = {
        "latency_ms": 5,
        "error_rate": rate,
        "rate_limit_rate": rate,
        "retry_after": 1 if rate <= 0.1 else 0,
        "lost_create_rate": rate,
        "error_after_create_rate": rate / 2,
        "seed": SEED,
    }
    ws = user_workspace(tmp_path, local_api)
    names = [f"flaky-{n}" for n in range(16)]
    report: list[str] = []

    ws.declare(*(token(n) for n in names))
    runs, injected = _converge_under(ws, faults)
    report.append(f"create: {runs} runs, {injected}")

    # Rotations into new generations (previous ones kept through an overlap), in-place
    # updates, deletes and creates.
    ws.declare(
        *[{**token(n, overlap="1h"), "expires": "30d"} for n in names[:6]]
        + [token(n, description="updated in place") for n in names[6:9]]
        + [token(n) for n in names[9:13]]
        + [token(f"flaky-new-{k}") for k in range(4)]
    )
    runs, injected = _converge_under(ws, {**faults, "seed": SEED + 1}, "--force")
    report.append(f"change: {runs} runs, {injected}")

    ws.declare(token(names[10]))
    runs, injected = _converge_under(ws, {**faults, "seed": SEED + 2}, "--force")
    report.append(f"shrink: {runs} runs, {injected}")
    with capsys.disabled():
        print(f"\nfaulty API at {int(rate * 100)}%: " + "; ".join(report))


def test_retry_after_is_honoured(local_api: LocalApi, tmp_path: Path) -> None:
    ws = user_workspace(tmp_path, local_api)
    ws.declare(token("patient"))
    local_api.set_faults(fail_next=2, fail_status=429, retry_after=1)
    started = time.monotonic()
    result = ws.apply()
    elapsed = time.monotonic() - started
    assert result.code == 0, result
    assert local_api.stats()["statuses"].get("429") == 2
    assert elapsed >= 1.9, f"two 429s with Retry-After: 1 took only {elapsed:.2f}s"
    check_converged(ws)


def test_persistent_5xx_fails_with_the_trace_id(local_api: LocalApi, tmp_path: Path) -> None:
    ws = user_workspace(tmp_path, local_api)
    ws.declare(token("doomed"))
    # 500 is not retried (503 is, with backoff: test_client covers that), so this is quick.
    local_api.set_faults(error_rate=1.0, error_status=500)
    result = ws.apply()
    assert result.code == 1, result
    assert "Traceback" not in result.err
    assert "HTTP 500" in result.err and "trace id" in result.err, result
    assert local_api.store.count_tokens(include_deleted=True) == 0


# ---------------------------------------------------------------- the API is down


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_api_down_fails_fast_and_clearly(
    command: str, local_api_factory: LocalApiFactory, tmp_path: Path
) -> None:
    ws = user_workspace(tmp_path, local_api_factory())
    ws.declare(token("unreachable"))
    args = ws.apply_args() if command == "apply" else ws.plan_args()
    url = f"http://127.0.0.1:{free_port()}"
    args[args.index(ws.api.url)] = url
    result = run_cli_subprocess(*args, cwd=tmp_path, timeout=60)
    assert result.code == 1, result
    assert result.seconds < 5, f"took {result.seconds:.1f}s to notice the API is down"
    assert "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("Error: ") and f"cannot connect to {url}" in lines[0], result
    assert not ws.lock.exists()


def test_faults_can_be_given_at_start(local_api_factory: LocalApiFactory, tmp_path: Path) -> None:
    api = local_api_factory(faults=Faults(error_after_next_creates=1))
    ws = user_workspace(tmp_path, api)
    ws.declare(token("early"))
    result = ws.apply()
    assert result.code == 0, result
    assert api.stats()["faults"] == {"error_after_create": 1}
    check_converged(ws)


def test_a_stale_pending_create_never_deletes_a_token_made_later_by_hand(
    local_api: LocalApi, tmp_path: Path
) -> None:
    """A create recorded as pending whose request never reached the API (the run died, or
    the API was down) leaves the pending entry behind. A token of that name made by
    someone else much later is theirs: it must not be taken for the lost create's orphan."""
    ws = user_workspace(tmp_path, local_api)
    ws.declare(token("kept"))
    assert ws.apply().code == 0
    backend = LocalStateBackend(ws.state_path)
    state = backend.read()
    assert state is not None
    long_ago = datetime.now(timezone.utc) - timedelta(hours=3)
    backend.write(state.with_pending(PendingCreate("theirs", long_ago)))
    store = local_api.store
    _record, _value = store.create_token(store.default_user, "theirs", scopes=["api"])

    plan = ws.plan("--detailed-exitcode")
    assert plan.code == 0, plan
    assert "theirs" not in plan.out or "unmanaged" in plan.out, plan
    result = ws.apply()
    assert result.code == 0, result
    assert {t.name for t in ws.live()} == {"kept", "theirs"}
