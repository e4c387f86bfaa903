"""Crash safety: `apply` killed with SIGKILL at random instants, and stopped with SIGINT/SIGTERM.

docs/design.md (section 7) promises that a crash or kill at any instant of apply leaves
state from which the next apply converges: no owned token forgotten, no duplicate, no live
token whose secret was never delivered. The chaos test runs apply on 40+ tokens as a real
process against the local API with added latency (so kills land mid-apply), kills it after
a seeded random delay, checks what must hold at that instant, then applies again without
faults and checks convergence against the API's own database (each secrets-file value must
authenticate as the one live token of its name).

Seed and trial count: RECONCILER_CHAOS_SEED and RECONCILER_CHAOS_TRIALS (defaults below);
the seed and a line per trial are printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.cli import CliProcess, run_cli
from support.convergence import check_converged, check_no_changes, check_recoverable, user_workspace
from support.leaks import REGISTRY
from support.openbao import OpenBao
from support.states import owned_token
from support.workspace import Workspace, token

from reconciler.server.faults import Faults

if TYPE_CHECKING:
    from support.local_api import LocalApiFactory

DEFAULT_SEED = 20261127
DEFAULT_TRIALS = 24
TOKENS = 40

CHAOS_SEED = int(os.environ.get("RECONCILER_CHAOS_SEED") or DEFAULT_SEED)
CHAOS_TRIALS = int(os.environ.get("RECONCILER_CHAOS_TRIALS") or DEFAULT_TRIALS)

# Roughly how long the apply phase of 40 creates takes at ~12 ms latency, by parallelism
# (measured after the state journal made each step cheap: about half of what it was);
# kills after "Applying..." are spread over this window (some land after the end: the
# run then simply finished, which is counted).
APPLY_WINDOW = {1: 0.65, 2: 0.4, 4: 0.25}


@dataclass(frozen=True)
class Trial:
    index: int
    kind: str  # "create" (40 new tokens) or "update" (updates, rotations, deletes, creates)
    latency_ms: float
    parallelism: int
    faulty: bool  # lost creates and 5xx-after-commit during the killed run
    early: bool  # kill at a random instant from process start (startup, lock, plan)
    delay: float
    fault_seed: int

    @classmethod
    def draw(cls, index: int, rng: random.Random) -> Trial:
        kind = "update" if index % 3 == 2 else "create"
        parallelism = rng.choice([1, 2, 4])
        latency = rng.uniform(5, 20)
        early = rng.random() < 0.2
        if early:
            delay = rng.uniform(0.05, 0.9)
        else:
            scale = 0.5 + latency / 24
            window = APPLY_WINDOW[parallelism] * scale * (1.6 if kind == "update" else 1.0)
            delay = rng.uniform(0.0, window)
        return cls(
            index=index,
            kind=kind,
            latency_ms=round(latency, 1),
            parallelism=parallelism,
            faulty=index % 4 == 3,
            early=early,
            delay=round(delay, 3),
            fault_seed=rng.randrange(2**31),
        )


@dataclass(frozen=True)
class Outcome:
    trial: Trial
    exit_code: int
    killed_mid_run: bool
    owned_live: int
    orphans: int
    retired_live: int
    lock_left: str  # "none", "readable" or "unreadable"
    recovery_runs: int

    def line(self) -> str:
        t = self.trial
        when = f"{'t0' if t.early else 'Applying'}+{t.delay:.3f}s"
        return (
            f"  trial {t.index:2d} {t.kind:6s} p={t.parallelism} lat={t.latency_ms:4.1f}ms "
            f"{'faults ' if t.faulty else '       '}kill@{when:16s} -> "
            f"{'killed' if self.killed_mid_run else f'exited {self.exit_code}'}; "
            f"live owned={self.owned_live} orphans={self.orphans} retired={self.retired_live} "
            f"lock={self.lock_left}; recovered in {self.recovery_runs} apply"
        )


def _unlock_after_kill(ws: Workspace) -> str:
    """A killed run leaves its lock: the next apply must refuse, naming the dead holder
    and the way out; then force-unlock (or, for a lock file the kill left empty, deleting
    it as the error message says) lets it go on."""
    if not ws.lock.exists():
        return "none"
    refused = ws.apply("--force")
    assert refused.code == 1, refused
    assert "Traceback" not in refused.err, refused
    try:
        lock_id = json.loads(ws.lock.read_text())["id"]
    except (ValueError, KeyError):
        assert "lock file is unreadable" in refused.err, refused
        ws.lock.unlink()
        return "unreadable"
    assert f"force-unlock {lock_id}" in refused.err, refused
    assert "no longer runs" in refused.err, refused
    unlocked = run_cli("force-unlock", lock_id, "--state", str(ws.state_path), cwd=ws.root)
    assert unlocked.code == 0, unlocked
    return "readable"


def _run_trial(trial: Trial, factory: LocalApiFactory, root: Path) -> Outcome:
    api = factory(faults=Faults(latency_ms=trial.latency_ms))
    ws = user_workspace(root / f"trial-{trial.index}", api)
    names = [f"t{trial.index}-{n}" for n in range(TOKENS)]
    if trial.kind == "update":
        ws.declare(*(token(name) for name in names))
        first = ws.apply(parallelism=8)
        assert first.code == 0, first
        # In-place updates, rotations into a new generation that keeps the previous one
        # through an overlap, unchanged tokens, deletes and creates.
        ws.declare(
            *[token(n, scopes=("api", "read_cluster")) for n in names[:8]]
            + [{**token(n, overlap="1h"), "expires": "30d"} for n in names[8:15]]
            + [token(n) for n in names[15:35]]
            + [token(f"t{trial.index}-new-{k}") for k in range(10)]
        )
    else:
        ws.declare(*(token(name) for name in names))
    if trial.faulty:
        api.set_faults(lost_create_rate=0.15, error_after_create_rate=0.1, seed=trial.fault_seed)

    process = CliProcess(*ws.apply_args("--force", parallelism=trial.parallelism), cwd=ws.root)
    if not trial.early:
        assert process.wait_for_output(lambda line: line.startswith("Applying"), 30), (
            process.finish()
        )
    time.sleep(trial.delay)
    killed = process.proc.poll() is None
    process.send(signal.SIGKILL)
    result = process.finish()
    api.reset_faults()
    ws.record()
    if not killed:
        assert "Traceback" not in result.err, result

    # At the instant of the kill: state readable, nothing live that nobody will clean up.
    at_kill = check_recoverable(ws)
    lock_left = _unlock_after_kill(ws)

    runs = 0
    while True:
        runs += 1
        recovery = ws.apply("--force")
        if recovery.code == 0:
            break
        assert runs < 2, f"recovery apply failed twice without faults:\n{recovery}"
    check_no_changes(ws)
    check_converged(ws)
    api.stop()
    return Outcome(
        trial=trial,
        exit_code=result.code,
        killed_mid_run=killed,
        owned_live=at_kill.owned_live,
        orphans=at_kill.orphans,
        retired_live=at_kill.retired_live,
        lock_left=lock_left,
        recovery_runs=runs,
    )


@pytest.mark.slow
def test_sigkill_at_random_instants_then_apply_converges(
    local_api_factory: LocalApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(CHAOS_SEED)
    trials = [Trial.draw(i, rng) for i in range(CHAOS_TRIALS)]
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        for trial in trials:
            outcomes.append(_run_trial(trial, local_api_factory, tmp_path))
    finally:
        killed = sum(o.killed_mid_run for o in outcomes)
        summary = [
            f"chaos: seed {CHAOS_SEED}, {len(outcomes)}/{len(trials)} trials survived "
            f"({killed} killed mid-run, {len(outcomes) - killed} finished first, "
            f"{sum(o.orphans for o in outcomes)} orphans and "
            f"{sum(o.retired_live for o in outcomes)} retired tokens cleaned up, "
            f"{sum(o.lock_left != 'none' for o in outcomes)} stale locks) in "
            f"{time.monotonic() - started:.1f}s; "
            f"reproduce with RECONCILER_CHAOS_SEED={CHAOS_SEED}",
            *(o.line() for o in outcomes),
        ]
        if len(outcomes) < len(trials):
            summary.append(f"  FAILED at trial {trials[len(outcomes)]}")
        with capsys.disabled():
            print("\n" + "\n".join(summary))
    assert len(outcomes) == CHAOS_TRIALS and DEFAULT_TRIALS >= 20
    # The delays are meant to land mid-apply: most kills must interrupt a running apply.
    assert killed >= CHAOS_TRIALS // 2, "the kills mostly missed the apply; adjust the window"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_stop_apply_cleanly(
    sig: signal.Signals, local_api_factory: LocalApiFactory, tmp_path: Path
) -> None:
    """The calls in flight finish and are recorded, nothing new starts, state is saved and
    the lock released; exit 1 with a summary; the next apply converges."""
    api = local_api_factory(faults=Faults(latency_ms=25))
    ws = user_workspace(tmp_path, api)
    ws.declare(*(token(f"sig-{n}") for n in range(60)))
    process = CliProcess(*ws.apply_args(parallelism=2), cwd=ws.root)
    assert process.wait_for_output(lambda line: ": ok " in line, 30), process.finish()
    process.send(sig)
    result = process.finish(30)
    ws.record()

    assert result.code == 1, result
    assert "Traceback" not in result.err, result
    assert f"{sig.name} received: finishing calls in flight" in result.err, result
    assert "Apply stopped:" in result.err and f"Interrupted by {sig.name}." in result.err, result
    assert "not started (" in result.err, result
    assert "run apply again to converge" in result.err, result
    assert not ws.lock.exists(), "the lock must be released on a clean stop"

    state = ws.read_state()
    assert state is not None
    assert not state.pending, "in-flight creates must finish and be recorded"
    assert 0 < len(state.tokens) < 60
    at_stop = check_recoverable(ws)
    assert at_stop.orphans == 0 and at_stop.owned_live == len(state.tokens)
    sink = ws.sink_values()
    for name, owned in state.tokens.items():
        principal = api.store.authenticate(sink[name])
        assert principal is not None and principal.token_uid == owned.uid, name

    second = ws.apply()
    assert second.code == 0, second
    check_no_changes(ws)
    check_converged(ws)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_planning_releases_the_lock(
    sig: signal.Signals, local_api_factory: LocalApiFactory, tmp_path: Path
) -> None:
    """Stopped while it reads the live tokens (before any change): exit non-zero with a
    message, nothing created, and no stale lock left for the next run to trip on."""
    api = local_api_factory(faults=Faults(latency_ms=1500))
    ws = user_workspace(tmp_path, api)
    ws.declare(*(token(f"early-{n}") for n in range(5)))
    process = CliProcess(*ws.apply_args(), cwd=ws.root)
    deadline = time.monotonic() + 30
    while api.requests("GET /api/v1/api_tokens") == 0:
        assert time.monotonic() < deadline and process.proc.poll() is None, process.finish()
        time.sleep(0.02)
    time.sleep(0.2)
    assert process.proc.poll() is None
    process.send(sig)
    result = process.finish(30)
    assert result.code not in (0, -sig), result
    assert "Traceback" not in result.err, result
    assert "Aborted." in result.err or "Interrupted." in result.err, result
    assert not ws.lock.exists(), "a stopped run must release its lock"
    assert api.store.count_tokens(include_deleted=True) == 0
    api.set_faults(latency_ms=0)
    assert ws.apply().code == 0
    check_converged(ws)


ADOPT_TOKENS = 500
ADOPT_TRIALS = 3


@pytest.mark.slow
def test_sigkill_during_a_large_adoption_then_apply_converges(
    local_api_factory: LocalApiFactory, tmp_path: Path
) -> None:
    """500 live tokens that match the manifests, adopted by an apply killed at a random
    instant: state stays readable and owns only the right uids, and the next apply adopts
    the rest without creating or deleting anything."""
    rng = random.Random(CHAOS_SEED + 1)
    for trial in range(ADOPT_TRIALS):
        api = local_api_factory(faults=Faults(latency_ms=5))
        ws = user_workspace(tmp_path / f"adopt-{trial}", api)
        prefix = f"adopt{trial}"
        uids = api.store.seed_tokens(ADOPT_TOKENS, prefix=prefix, scopes=("api",))
        names = [f"{prefix}-{n}" for n in range(ADOPT_TOKENS)]
        name_of = dict(zip(uids, names, strict=True))
        ws.declare(*(token(name) for name in names))
        process = CliProcess(*ws.apply_args("--force", parallelism=4), cwd=ws.root)
        assert process.wait_for_output(lambda line: line.startswith("Applying"), 60), (
            process.finish()
        )
        time.sleep(rng.uniform(0.0, 1.5))
        process.send(signal.SIGKILL)
        process.finish()

        at_kill = ws.read_state()
        if at_kill is not None:
            assert not at_kill.pending and not at_kill.previous
            assert all(name_of.get(t.uid) == name for name, t in at_kill.tokens.items())
        _unlock_after_kill(ws)
        recovery = ws.apply("--force")
        assert recovery.code == 0, recovery
        final = ws.read_state()
        assert final is not None
        assert {t.uid: name for name, t in final.tokens.items()} == name_of
        assert not ws.state_path.with_name(ws.state_path.name + ".journal").exists()
        assert sorted(t.uid for t in ws.live()) == sorted(uids)
        check_no_changes(ws)
        api.stop()


FOLD_TRIALS = 8
_FOLD = (
    "import sys\n"
    "from reconciler.state.backends.local import LocalStateBackend\n"
    "backend = LocalStateBackend(sys.argv[1])\n"
    "backend.acquire('apply', 0)\n"
    "backend.read()\n"
    "print('folding', flush=True)\n"
    "backend.fold()\n"
    "print('folded', flush=True)\n"
)


def _journaled_state(path: Path) -> dict[str, str]:
    """A state of 2,000 tokens with 600 more changes in its journal; name -> uid."""
    from reconciler.state.backends.local import LocalStateBackend
    from reconciler.state.journal import Journal
    from reconciler.state.model import State

    LocalStateBackend(path).write(
        State(endpoint="http://api", tokens={f"f-{n}": owned_token(f"f-{n}") for n in range(2000)})
    )
    backend = LocalStateBackend(path)
    state = backend.read()
    assert state is not None
    journal = Journal(backend, state)
    for n in range(300):
        journal.update(lambda s, n=n: s.with_token(owned_token(f"j-{n}")))
        journal.update(lambda s, n=n: s.without_token(f"f-{n}"))
    backend.journal.close()
    return {name: t.uid for name, t in journal.state.tokens.items()}


@pytest.mark.slow
def test_sigkill_while_the_journal_is_folded_loses_nothing(tmp_path: Path) -> None:
    """The fold (document rewritten with the journal applied, then the journal removed)
    killed at random instants: every reader sees the same state, and the next fold ends
    with that state in the document and no journal."""
    import shutil
    import subprocess
    import sys

    from reconciler.state.backends.local import LocalStateBackend

    origin = tmp_path / "origin"
    origin.mkdir()
    expected = _journaled_state(origin / "s.json")
    files = ["s.json", "s.json.journal"]

    def fold_process(path: Path) -> tuple[subprocess.Popen[str], float]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FOLD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "folding\n"
        return proc, time.monotonic()

    def copy(to: Path) -> Path:
        to.mkdir()
        for name in files:
            shutil.copy2(origin / name, to / name)
        return to / "s.json"

    timed, started = fold_process(copy(tmp_path / "timed"))
    assert timed.wait(60) == 0
    assert timed.stdout is not None
    timed.stdout.close()
    window = (time.monotonic() - started) * 1.3
    rng = random.Random(CHAOS_SEED + 2)
    seen: list[str] = []
    for trial in range(FOLD_TRIALS):
        path = copy(tmp_path / f"fold-{trial}")
        proc, _ = fold_process(path)
        time.sleep(rng.uniform(0.0, window))
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        journal = path.with_name("s.json.journal")
        seen.append("journal kept" if journal.exists() else "folded")
        path.with_name("s.json.lock").unlink()  # the dead run's; force-unlock's job
        state = LocalStateBackend(path).read()
        assert state is not None
        assert {name: t.uid for name, t in state.tokens.items()} == expected, trial
        backend = LocalStateBackend(path)
        with backend.lock("apply", 0):
            backend.read()
        assert not journal.exists()
        folded = json.loads(path.read_text())
        assert {t["name"]: t["uid"] for t in folded["tokens"]} == expected
        assert folded["serial"] == state.serial
    print(f"fold kills (window {window:.3f}s): {seen}")


# ------------------------------------------------------------ kills with a Vault destination

VAULT_TRIALS = int(os.environ.get("RECONCILER_CHAOS_VAULT_TRIALS") or 4)


@pytest.mark.slow
def test_sigkill_with_a_vault_destination_then_apply_converges(
    local_api_factory: LocalApiFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """apply delivering to OpenBao killed at random instants (seeded as above); at the kill
    nothing is live that the next apply will not clean up, and once it converges every
    owned token's current value in Vault authenticates as that very token."""
    from support.openbao import start_openbao

    bao = start_openbao(tmp_path)
    REGISTRY.add_secret(bao.root_token, "vault token (VAULT_TOKEN)")
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    for name in ("VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    rng = random.Random(CHAOS_SEED + 12)
    lines: list[str] = []
    try:
        for index in range(VAULT_TRIALS):
            lines.append(_vault_trial(index, rng, bao, local_api_factory, tmp_path))
    finally:
        bao.stop()
        with capsys.disabled():
            print(f"\nchaos with vault: seed {CHAOS_SEED + 12}\n" + "\n".join(lines))
    assert len(lines) == VAULT_TRIALS


def _vault_trial(
    index: int, rng: random.Random, bao: OpenBao, factory: LocalApiFactory, root: Path
) -> str:
    parallelism = rng.choice([1, 2, 4])
    faulty = index % 2 == 1
    api = factory(faults=Faults(latency_ms=rng.uniform(5, 20)))
    ws = user_workspace(root / f"vault-trial-{index}", api)
    destination = f"vault://secret/chaos{index}"
    ws.declare(*(token(f"v{index}-{n}") for n in range(30)))
    if faulty:
        api.set_faults(lost_create_rate=0.15, error_after_create_rate=0.1, seed=index)
    args = ws.apply_args("--secrets-out", destination, parallelism=parallelism)
    process = CliProcess(*args, cwd=ws.root)
    assert process.wait_for_output(lambda line: line.startswith("Applying"), 30), process.finish()
    delay = rng.uniform(0.0, APPLY_WINDOW[parallelism] * 0.5)  # 30 tokens, not 40
    time.sleep(delay)
    killed = process.proc.poll() is None
    process.send(signal.SIGKILL)
    result = process.finish()
    api.reset_faults()
    ws.record()
    if not killed:
        assert "Traceback" not in result.err, result
    at_kill = check_recoverable(ws)
    _check_vault_holds_owned(ws, bao, index)  # at the kill: no owned token without its value
    _unlock_after_kill(ws)
    recovery = ws.apply("--secrets-out", destination)
    assert recovery.code == 0, recovery
    check_no_changes(ws)
    check_converged(ws)
    owned = _check_vault_holds_owned(ws, bao, index)
    api.stop()
    return (
        f"  trial {index} p={parallelism} {'faults ' if faulty else '       '}"
        f"kill@Applying+{delay:.3f}s -> {'killed' if killed else f'exited {result.code}'}; "
        f"live owned={at_kill.owned_live} orphans={at_kill.orphans}; recovered, "
        f"{owned} values current in Vault"
    )


def _check_vault_holds_owned(ws: Workspace, bao: OpenBao, index: int) -> int:
    """Every token state owns has its current value in Vault; returns how many."""
    state = ws.read_state()
    if state is None:
        return 0
    kv = bao.client().secrets.kv.v2
    for name, owned in state.tokens.items():
        stored = kv.read_secret_version(path=f"chaos{index}/{name}", mount_point="secret",
                                        raise_on_deleted_version=True)["data"]["data"]  # fmt: skip
        REGISTRY.add_secret(stored["token"], f"token value in vault ({name})")
        principal = ws.api.store.authenticate(stored["token"])
        assert principal is not None and principal.token_uid == owned.uid, name
        assert stored["uid"] == owned.uid, name
    return len(state.tokens)
