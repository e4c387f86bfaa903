"""reconciler's benchmarks, against the real local API over HTTP, in one command.

    python bench/run.py            # the sizes of the targets (a few minutes)
    python bench/run.py --quick    # tiny sizes, a few seconds (tests/e2e/test_bench_smoke.py)

Every measured command runs as its own process (`python -m reconciler ...`), against
`reconciler serve` running as another process with injected latency, so the figures are
what a user sees: interpreter start-up, imports, HTTP, state on disk. Peak memory and CPU
time are the measured process's own (wait4's rusage). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from reconciler.manifest.spec import TokenSpec
from reconciler.server.store import Store
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.model import OwnedToken, State

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
ADMIN_HEADER = "X-YATAI-API-TOKEN"
TOKENS_PER_FILE = 1000
DRIFT_EVERY = 100  # 1% drift: every 100th declared token asks for another scope
HEAVY_MODULES = ("fastapi", "uvicorn", "httpx", "deepdiff", "starlette", "sqlite3")
# The virtualenv .ci/run builds for the BentoML compatibility tests.
DEFAULT_BENTOML_VENV = BENCH.parent / ".venv-bentoml" / "bin" / "python"


# ------------------------------------------------------------------ measuring a process


@dataclass
class Run:
    """One finished process: wall time, its own CPU time and peak RSS, its output."""

    wall: float
    cpu: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Run:
        if self.returncode != 0:
            raise SystemExit(
                f"bench: {what} exited {self.returncode}\n--- stdout\n{self.stdout[-3000:]}"
                f"\n--- stderr\n{self.stderr[-3000:]}"
            )
        return self


def measure(cmd: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 900) -> Run:
    """Run ``cmd`` and read its own rusage with wait4 (RUSAGE_CHILDREN would mix in the
    server's and every earlier child's peak)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            peak_mb=usage.ru_maxrss / 1024,  # KiB on Linux
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def best(runs: Sequence[Run]) -> Run:
    """The fastest of repeated runs (the least disturbed by the other process on the CPU)."""
    return min(runs, key=lambda r: r.wall)


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_CLOUD_", "BENTOML_"))}
    env.update(NO_COLOR="1", BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


# ------------------------------------------------------------------ the API server process


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`reconciler serve` as a separate process (it must not share our GIL or the CLI's),
    on a port the OS picks, with a known admin key."""

    def __init__(self, workdir: Path, *, latency_ms: float, page_size: int) -> None:
        self.workdir = workdir
        self.db = workdir / "api.sqlite3"
        self.key = "rca_" + secrets.token_urlsafe(24)
        self.latency_ms = latency_ms
        self.page_size = page_size
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "server.log"

    def seed(self, count: int, **kwargs: Any) -> list[str]:
        """Insert tokens straight into the database (before start): uids, oldest first."""
        with Store(self.db) as store:
            return store.seed_tokens(count, **kwargs)

    def start(self, env: dict[str, str]) -> None:
        cmd = [PYTHON, "-m", "reconciler", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--db", str(self.db), "--api-key", self.key]
        cmd += ["--page-size", str(self.page_size), "--latency-ms", str(self.latency_ms)]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + 30
        while not self.url:
            match = re.search(r"local API on (http://\S+)", self._log.read_text("utf-8", "replace"))
            if match:
                self.url = match.group(1)
            elif self._proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the API server did not start:\n{self._log.read_text()}")
            else:
                time.sleep(0.02)
        while True:
            try:
                self.stats()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _admin(self, method: str, path: str) -> dict[str, Any]:
        response = httpx.request(
            method, self.url + path, headers={ADMIN_HEADER: self.key}, timeout=30
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "/_admin/stats")

    def warm_up(self) -> None:
        """One listing, so that no measured run pays for the server's first request."""
        response = httpx.get(
            self.url + "/api/v1/api_tokens",
            params={"start": 0, "count": self.page_size},
            headers={ADMIN_HEADER: self.key},
            timeout=60,
        )
        response.raise_for_status()

    def reset_stats(self) -> None:
        self._admin("POST", "/_admin/stats/reset")

    @property
    def cpu(self) -> float:
        return _cpu_seconds(self._proc.pid) if self._proc is not None else 0.0


@contextmanager
def server(
    workdir: Path, env: dict[str, str], args: argparse.Namespace, seed: int = 0
) -> Iterator[tuple[Server, list[str]]]:
    workdir.mkdir(parents=True, exist_ok=True)
    srv = Server(workdir, latency_ms=args.latency_ms, page_size=args.page_size)
    uids = (
        srv.seed(seed, prefix="bench", description="bench token", scopes=("api",)) if seed else []
    )
    srv.start(env)
    try:
        srv.warm_up()
        yield srv, uids
    finally:
        srv.stop()


# ------------------------------------------------------------------ fixtures on disk


def write_manifests(directory: Path, count: int, *, drift: bool) -> list[TokenSpec]:
    """``count`` declared tokens bench-0..; with ``drift``, every 100th asks for one more
    scope than the live token has (so it plans a replacement)."""
    directory.mkdir(parents=True, exist_ok=True)
    specs: list[TokenSpec] = []
    for first in range(0, count, TOKENS_PER_FILE):
        lines = ["tokens:"]
        for n in range(first, min(first + TOKENS_PER_FILE, count)):
            scopes = ["api", "read_cluster"] if drift and n % DRIFT_EVERY == 0 else ["api"]
            lines += [
                f"  - name: bench-{n}",
                "    description: bench token",
                f"    scopes: [{', '.join(scopes)}]",
            ]
            specs.append(TokenSpec(f"bench-{n}", "bench token", frozenset(scopes)))
        (directory / f"tokens-{first // TOKENS_PER_FILE:03d}.yaml").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )
    return specs


def write_state(path: Path, endpoint: str, specs: Sequence[TokenSpec], uids: Sequence[str]) -> None:
    """State that owns every seeded token (seed_tokens names them bench-<n>, oldest first)."""
    created = datetime.now(timezone.utc)
    tokens = {
        spec.name: OwnedToken(name=spec.name, uid=uid, spec=spec, created_at=created)
        for spec, uid in zip(specs, uids, strict=True)
    }
    LocalStateBackend(path).write(State(endpoint=endpoint, tokens=tokens))


# ------------------------------------------------------------------ scenarios


@dataclass
class PlanRow:
    tokens: int
    plan: Run
    floor: Run
    requests: int
    floor_requests: int
    server_cpu: float
    replaced: int

    @property
    def ratio(self) -> float:
        return self.plan.wall / self.floor.wall

    @property
    def cpu_per_1k(self) -> float:
        return self.plan.cpu * 1000 / (self.tokens / 1000)


def bench_plan(tokens: int, args: argparse.Namespace, root: Path, env: dict[str, str]) -> PlanRow:
    work = root / f"plan-{tokens}"
    with server(work, env, args, seed=tokens) as (srv, uids):
        specs = write_manifests(work / "manifests", tokens, drift=True)
        state = work / "tokens.state.json"
        write_state(state, srv.url, specs, uids)
        floor_cmd = [PYTHON, str(BENCH / "floor.py"), srv.url, srv.key]
        floor_cmd += ["--page-size", str(args.page_size)]
        plan_cmd = [PYTHON, "-m", "reconciler", "plan", "manifests", "--endpoint", srv.url]
        plan_cmd += ["--api-key", srv.key, "--state", str(state), "--no-color"]
        floors: list[Run] = []
        plans: list[Run] = []
        floor_requests = requests = 0
        server_cpu = float("inf")
        for _ in range(args.repeat):
            srv.reset_stats()
            floors.append(measure(floor_cmd, env=env, cwd=work).check("floor"))
            floor_requests = srv.stats()["total"]
            srv.reset_stats()
            before = srv.cpu
            plans.append(measure(plan_cmd, env=env, cwd=work).check("reconciler plan"))
            server_cpu = min(server_cpu, srv.cpu - before)
            requests = srv.stats()["total"]
        plan = best(plans)
        replaced = re.search(r"(\d+) to replace", plan.stdout)
        return PlanRow(
            tokens,
            plan,
            best(floors),
            requests,
            floor_requests,
            server_cpu,
            int(replaced.group(1)) if replaced else -1,
        )


@dataclass
class ApplyRow:
    label: str
    parallelism: int | None
    run: Run | None
    creates: int
    requests: int = 0
    server_cpu: float = 0.0
    loop_seconds: float | None = None
    note: str = ""
    floor_of: int | None = None  # the bare httpx loop at this parallelism


def bench_apply(
    count: int, parallelism: int, args: argparse.Namespace, root: Path, env: dict[str, str]
) -> ApplyRow:
    """The fastest of ``--repeat`` runs (one for the long serial run), each into a fresh
    organisation."""
    attempts = args.repeat if parallelism > 1 else 1
    rows = [
        _apply_once(count, parallelism, args, root / f"apply-{count}-p{parallelism}-{n}", env)
        for n in range(attempts)
    ]
    return min(rows, key=lambda row: row.run.wall if row.run else float("inf"))


def bench_create_floor(
    count: int, parallelism: int, args: argparse.Namespace, root: Path, env: dict[str, str]
) -> ApplyRow:
    """bench/floor.py --create: a bare httpx loop posting the same creates from
    ``parallelism`` threads, in a fresh process, into a fresh organisation."""
    attempts = args.repeat if parallelism > 1 else 1
    rows = []
    for n in range(attempts):
        work = root / f"floor-{count}-p{parallelism}-{n}"
        with server(work, env, args) as (srv, _):
            cmd = [PYTHON, str(BENCH / "floor.py"), srv.url, srv.key, "--create", str(count)]
            cmd += ["--parallelism", str(parallelism)]
            srv.reset_stats()
            before = srv.cpu
            run = measure(cmd, env=env, cwd=work).check(f"httpx create loop p={parallelism}")
            server_cpu = srv.cpu - before
            loop = json.loads(run.stdout.strip().splitlines()[-1])["loop_seconds"]
            rows.append(
                ApplyRow(
                    f"httpx loop p={parallelism}",
                    None,
                    run,
                    count,
                    srv.stats()["total"],
                    server_cpu,
                    loop_seconds=loop,
                    floor_of=parallelism,
                )
            )
    return min(rows, key=lambda row: row.run.wall if row.run else float("inf"))


@dataclass
class AdoptRow:
    tokens: int
    adopt: Run
    plan: Run
    adopt_requests: int
    plan_requests: int
    server_cpu: float

    @property
    def ratio(self) -> float:
        return self.adopt.wall / self.plan.wall


def bench_adopt(tokens: int, args: argparse.Namespace, root: Path, env: dict[str, str]) -> AdoptRow:
    """N live tokens that match the manifests, none in state: `plan` (N adopts) and then
    `apply` (adopting them: the first run of a team with an existing organisation)."""
    work = root / f"adopt-{tokens}"
    with server(work, env, args, seed=tokens) as (srv, _):
        write_manifests(work / "manifests", tokens, drift=False)
        common = ["manifests", "--endpoint", srv.url, "--api-key", srv.key, "--no-color"]
        plans = []
        plan_requests = 0
        for n in range(args.repeat):
            srv.reset_stats()
            state = ["--state", str(work / f"plan-{n}.state.json")]
            plans.append(
                measure(
                    [PYTHON, "-m", "reconciler", "plan", *common, *state], env=env, cwd=work
                ).check("reconciler plan (adopt)")
            )
            plan_requests = srv.stats()["total"]
        srv.reset_stats()
        before = srv.cpu
        cmd = [PYTHON, "-m", "reconciler", "apply", *common, "--auto-approve"]
        cmd += ["--state", str(work / "adopt.state.json")]
        adopt = measure(cmd, env=env, cwd=work).check("reconciler apply (adopt)")
        server_cpu = srv.cpu - before
        stats = srv.stats()
        owned = json.loads((work / "adopt.state.json").read_text())["tokens"]
        if len(owned) != tokens:
            raise SystemExit(f"bench: apply adopted {len(owned)} tokens, expected {tokens}")
        return AdoptRow(tokens, adopt, best(plans), stats["total"], plan_requests, server_cpu)


def _apply_once(
    count: int, parallelism: int, args: argparse.Namespace, work: Path, env: dict[str, str]
) -> ApplyRow:
    with server(work, env, args) as (srv, _):
        write_manifests(work / "manifests", count, drift=False)
        cmd = [PYTHON, "-m", "reconciler", "apply", "manifests", "--endpoint", srv.url]
        cmd += ["--api-key", srv.key, "--state", "tokens.state.json", "--auto-approve"]
        cmd += ["--secrets-out", "secrets.json", "--parallelism", str(parallelism)]
        cmd += ["--no-color"]
        srv.reset_stats()
        before = srv.cpu
        run = measure(cmd, env=env, cwd=work).check(f"reconciler apply --parallelism {parallelism}")
        server_cpu = srv.cpu - before
        stats = srv.stats()
        created = stats["requests"].get("POST /api/v1/api_tokens", 0)
        if created != count:
            raise SystemExit(f"bench: apply made {created} creates, expected {count}")
        values = json.loads((work / "secrets.json").read_text())
        if len(values) != count:
            raise SystemExit(f"bench: {len(values)} secrets delivered, expected {count}")
        return ApplyRow(
            f"reconciler p={parallelism}", parallelism, run, count, stats["total"], server_cpu
        )


def bentoml_python(args: argparse.Namespace) -> str | None:
    if args.no_bentoml:
        return None
    named = os.environ.get("RECONCILER_BENTOML_PYTHON")
    if named:
        return named if Path(named).exists() else None
    return str(DEFAULT_BENTOML_VENV) if DEFAULT_BENTOML_VENV.exists() else None


def bench_bentoml(
    count: int, args: argparse.Namespace, root: Path, env: dict[str, str]
) -> ApplyRow:
    python = bentoml_python(args)
    if python is None:
        return ApplyRow("BentoML SDK serial loop", None, None, count, note="skipped")
    work = root / f"bentoml-{count}"
    with server(work, env, args) as (srv, _):
        srv.reset_stats()
        before = srv.cpu
        cmd = [python, str(BENCH / "bentoml_loop.py"), srv.url, srv.key, str(count)]
        run = measure(cmd, env=env, cwd=work).check("BentoML SDK loop")
        server_cpu = srv.cpu - before
        loop = json.loads(run.stdout.strip().splitlines()[-1])["loop_seconds"]
        return ApplyRow(
            "BentoML SDK serial loop",
            None,
            run,
            count,
            srv.stats()["total"],
            server_cpu,
            loop_seconds=loop,
        )


@dataclass
class StartupRow:
    label: str
    run: Run
    heavy: list[str]


def bench_startup(args: argparse.Namespace, root: Path, env: dict[str, str]) -> list[StartupRow]:
    work = root / "startup"
    write_manifests(work / "manifests", 3, drift=False)
    rows = []
    for label, sub in (("reconciler --help", ["--help"]), ("validate (3 tokens)", ["validate"])):
        runs = [
            measure([PYTHON, "-m", "reconciler", *sub], env=env, cwd=work).check(label)
            for _ in range(args.repeat)
        ]
        traced = measure([PYTHON, "-X", "importtime", "-m", "reconciler", *sub], env=env, cwd=work)
        imported = {
            line.split("|")[-1].strip()
            for line in traced.stderr.splitlines()
            if line.startswith("import time:")
        }
        heavy = sorted(m for m in HEAVY_MODULES if m in imported)
        rows.append(StartupRow(label, best(runs), heavy))
    return rows


def bench_validate(tokens: int, args: argparse.Namespace, root: Path, env: dict[str, str]) -> Run:
    work = root / f"validate-{tokens}"
    write_manifests(work / "manifests", tokens, drift=False)
    cmd = [PYTHON, "-m", "reconciler", "validate", "manifests"]
    return best([measure(cmd, env=env, cwd=work).check("validate") for _ in range(args.repeat)])


# ------------------------------------------------------------------ report


@dataclass
class Results:
    plan: list[PlanRow] = field(default_factory=list)
    apply: list[ApplyRow] = field(default_factory=list)
    validate: tuple[int, Run] | None = None
    startup: list[StartupRow] = field(default_factory=list)
    adopt: list[AdoptRow] = field(default_factory=list)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def report(results: Results, args: argparse.Namespace) -> str:
    out = [
        f"Machine: {machine()}",
        f"API: `reconciler serve` in its own process (sharing the CPUs), "
        f"{args.latency_ms:g} ms latency per request, page size {args.page_size}; "
        f"best of {args.repeat} where repeated.",
        "",
    ]
    if results.plan:
        out.append("plan: N live tokens, all declared and owned, 1% drift (replacements)")
        headers = ["tokens", "wall s", "floor s", "plan/floor", "requests", "floor req"]
        headers += ["replace", "CPU ms", "CPU ms/1k", "server CPU ms", "peak MB", "floor MB"]
        rows = [
            [
                f"{r.tokens:,}",
                f"{r.plan.wall:.3f}",
                f"{r.floor.wall:.3f}",
                f"{r.ratio:.2f}x",
                str(r.requests),
                str(r.floor_requests),
                str(r.replaced),
                _ms(r.plan.cpu),
                f"{r.cpu_per_1k:.0f}",
                _ms(r.server_cpu),
                f"{r.plan.peak_mb:.0f}",
                f"{r.floor.peak_mb:.0f}",
            ]
            for r in results.plan
        ]
        marginal = marginal_cpu_per_1k(results.plan)
        if marginal is not None:
            rows.append(["marginal", "", "", "", "", "", "", "", f"{marginal:.0f}", "", "", ""])
        out += [table(headers, rows), ""]
    if results.apply:
        out.append(f"apply: {results.apply[0].creates:,} creates into an empty organisation")
        sdk = _sdk_run(results)
        floors = _floors(results)
        rows = []
        for r in results.apply:
            if r.run is None:
                rows.append([r.label, r.note, "", "", "", "", "", "", ""])
                continue
            floor = floors.get(r.parallelism) if r.parallelism else None
            rows.append(
                [
                    r.label,
                    f"{r.run.wall:.3f}",
                    f"{r.loop_seconds:.3f}" if r.loop_seconds is not None else "",
                    f"{r.run.wall / floor.wall:.2f}x" if floor else "",
                    f"{r.run.wall / sdk.wall:.2f}x" if sdk and r.parallelism else "",
                    str(r.requests),
                    _ms(r.run.cpu),
                    _ms(r.server_cpu),
                    f"{r.run.peak_mb:.0f}",
                ]
            )
        headers = ["run", "wall s", "loop s", "/ httpx loop", "/ BentoML", "requests", "CPU ms"]
        headers += ["server CPU ms", "peak MB"]
        out += [table(headers, rows), ""]
    if results.adopt:
        out.append("adopt: N live tokens matching the manifests, none in state")
        headers = ["tokens", "apply s", "plan s", "apply/plan", "apply req", "plan req"]
        headers += ["apply CPU ms", "server CPU ms", "apply MB"]
        rows = [
            [
                f"{a.tokens:,}",
                f"{a.adopt.wall:.3f}",
                f"{a.plan.wall:.3f}",
                f"{a.ratio:.2f}x",
                str(a.adopt_requests),
                str(a.plan_requests),
                _ms(a.adopt.cpu),
                _ms(a.server_cpu),
                f"{a.adopt.peak_mb:.0f}",
            ]
            for a in results.adopt
        ]
        out += [table(headers, rows), ""]
    if results.validate:
        tokens, run = results.validate
        out.append("validate")
        rows = [[f"{tokens:,} tokens", f"{run.wall:.3f}", _ms(run.cpu), f"{run.peak_mb:.0f}"]]
        out += [table(["manifests", "wall s", "CPU ms", "peak MB"], rows), ""]
    if results.startup:
        out.append("start-up")
        rows = [
            [s.label, f"{s.run.wall:.3f}", _ms(s.run.cpu), ", ".join(s.heavy) or "none"]
            for s in results.startup
        ]
        headers = ["command", "wall s", "CPU ms", f"imports any of {', '.join(HEAVY_MODULES)}"]
        out += [table(headers, rows), ""]
    out += targets(results, args)
    return "\n".join(out)


def marginal_cpu_per_1k(rows: Sequence[PlanRow]) -> float | None:
    """CPU ms per 1,000 tokens beyond the fixed cost of starting (smallest to largest)."""
    if len(rows) < 2 or rows[-1].tokens == rows[0].tokens:
        return None
    first, last = rows[0], rows[-1]
    return (last.plan.cpu - first.plan.cpu) * 1000 / ((last.tokens - first.tokens) / 1000)


def _sdk_run(results: Results) -> Run | None:
    return next(
        (r.run for r in results.apply if r.parallelism is None and r.floor_of is None and r.run),
        None,
    )


def _floors(results: Results) -> dict[int, Run]:
    return {r.floor_of: r.run for r in results.apply if r.floor_of and r.run is not None}


def targets(results: Results, args: argparse.Namespace) -> list[str]:
    """The targets of issue 13, each with its measured value (ratios of one run)."""
    lines = ["targets" + (" (quick sizes: indicative only)" if args.quick else "")]

    def verdict(name: str, ok: bool | None, measured: str) -> None:
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        lines.append(f"- {name}: {measured} -> {mark}")

    for a in results.adopt:
        verdict(f"adopt of {a.tokens:,} <= 2x plan of the same", a.ratio <= 2, f"{a.ratio:.2f}x")
    floors, sdk = _floors(results), _sdk_run(results)
    for r in results.apply:
        if r.parallelism is None or r.run is None:
            continue
        floor = floors.get(r.parallelism)
        if floor is not None and r.parallelism > 1:
            ratio = r.run.wall / floor.wall
            verdict(
                f"apply p={r.parallelism} <= 1.25x the bare httpx loop",
                ratio <= 1.25,
                f"{ratio:.2f}x",
            )
        if r.parallelism == 1:
            name = "apply p=1 <= 1.25x BentoML's serial SDK loop"
            if sdk is None:
                verdict(name, None, "skipped")
            else:
                ratio = r.run.wall / sdk.wall
                verdict(name, ratio <= 1.25, f"{ratio:.2f}x")
    for row in results.plan:
        goal = 1.25 if row.tokens >= 10000 else 1.6 if row.tokens >= 1000 else None
        if goal is not None:
            verdict(
                f"plan of {row.tokens:,} <= {goal:g}x the listing floor",
                row.ratio <= goal,
                f"{row.ratio:.2f}x",
            )
    if results.plan:
        big = results.plan[-1]
        verdict(
            f"plan peak memory < 150 MB at {big.tokens:,}",
            big.plan.peak_mb < 150,
            f"{big.plan.peak_mb:.0f} MB",
        )
    if results.validate:
        tokens, run = results.validate
        verdict(f"validate of {tokens:,} tokens < 1 s", run.wall < 1.0, f"{run.wall:.3f} s")
    for s in results.startup:
        verdict(f"{s.label} imports no heavy module", not s.heavy, ", ".join(s.heavy) or "none")
    return lines


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark reconciler against the local API.")
    parser.add_argument(
        "--quick", action="store_true", help="Tiny sizes (seconds), for smoke tests."
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="Injected API latency.")
    parser.add_argument("--page-size", type=int, default=1000, help="The server's largest page.")
    parser.add_argument("--plan-sizes", help="Comma-separated token counts for plan.")
    parser.add_argument("--apply-count", type=int, help="Creates per apply run.")
    parser.add_argument("--parallelism", help="Comma-separated --parallelism values for apply.")
    parser.add_argument("--validate-count", type=int, help="Declared tokens for validate.")
    parser.add_argument("--adopt-count", type=int, help="Matching live tokens to adopt.")
    parser.add_argument("--repeat", type=int, help="Runs of each plan/validate (best is kept).")
    parser.add_argument(
        "--only", help="Comma-separated sections: plan,adopt,apply,validate,startup."
    )
    parser.add_argument("--no-bentoml", action="store_true", help="Skip BentoML's SDK loop.")
    parser.add_argument("--json", dest="json_out", help="Also write the figures as JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args(argv)
    quick = args.quick
    args.plan_sizes = [
        int(s) for s in (args.plan_sizes or ("10,40" if quick else "100,1000,10000")).split(",")
    ]
    args.apply_count = args.apply_count or (8 if quick else 1000)
    args.parallelism = [
        int(p) for p in (args.parallelism or ("1,4" if quick else "1,10,32")).split(",")
    ]
    args.validate_count = args.validate_count or (40 if quick else 10000)
    args.adopt_count = args.adopt_count or (40 if quick else 10000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.only = set((args.only or "plan,adopt,apply,validate,startup").split(","))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    env = cli_env(root / "home")
    results = Results()
    try:
        measure([PYTHON, "-m", "reconciler", "--help"], env=env, cwd=root)  # warm .pyc caches
        if "startup" in args.only:
            results.startup = bench_startup(args, root, env)
        if "validate" in args.only:
            results.validate = (
                args.validate_count,
                bench_validate(args.validate_count, args, root, env),
            )
        if "plan" in args.only:
            for tokens in args.plan_sizes:
                print(f"bench: plan with {tokens:,} tokens...", file=sys.stderr, flush=True)
                results.plan.append(bench_plan(tokens, args, root, env))
        if "adopt" in args.only:
            print(f"bench: adopt of {args.adopt_count:,}...", file=sys.stderr, flush=True)
            results.adopt.append(bench_adopt(args.adopt_count, args, root, env))
        if "apply" in args.only:
            for p in args.parallelism:
                print(
                    f"bench: apply of {args.apply_count:,} at parallelism {p}...",
                    file=sys.stderr,
                    flush=True,
                )
                results.apply.append(bench_apply(args.apply_count, p, args, root, env))
                results.apply.append(bench_create_floor(args.apply_count, p, args, root, env))
            print("bench: BentoML SDK loop...", file=sys.stderr, flush=True)
            results.apply.append(bench_bentoml(args.apply_count, args, root, env))
    finally:
        if args.keep:
            print(f"bench: work directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(_as_json(results), indent=2) + "\n")
    return 0


def _as_json(results: Results) -> dict[str, Any]:
    def run(r: Run | None) -> dict[str, float] | None:
        return None if r is None else {"wall": r.wall, "cpu": r.cpu, "peak_mb": r.peak_mb}

    return {
        "machine": machine(),
        "plan": [
            {
                "tokens": r.tokens,
                "plan": run(r.plan),
                "floor": run(r.floor),
                "requests": r.requests,
                "floor_requests": r.floor_requests,
                "server_cpu": r.server_cpu,
            }
            for r in results.plan
        ],
        "adopt": [
            {
                "tokens": a.tokens,
                "apply": run(a.adopt),
                "plan": run(a.plan),
                "apply_requests": a.adopt_requests,
                "plan_requests": a.plan_requests,
            }
            for a in results.adopt
        ],
        "apply": [
            {
                "label": r.label,
                "parallelism": r.parallelism,
                "run": run(r.run),
                "requests": r.requests,
                "loop_seconds": r.loop_seconds,
                "note": r.note,
            }
            for r in results.apply
        ],
        "validate": None
        if results.validate is None
        else {"tokens": results.validate[0], "run": run(results.validate[1])},
        "startup": [
            {"label": s.label, "run": run(s.run), "heavy": s.heavy} for s in results.startup
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
