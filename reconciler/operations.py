"""The plan and apply use cases, without any command line: what `reconciler plan` and
`reconciler apply` do, callable from a library (the CLI parses options, confirms and prints).

    with Runtime(Options(endpoint="local")) as runtime:
        planned = make_plan(runtime, PlanRequest(paths=("manifests",)))
        outcome = apply(runtime, ApplyRequest(paths=("manifests",), secrets_out="new.json"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ConfigError, PlanError
from reconciler.plan import DEFAULT_THRESHOLD, Plan
from reconciler.runtime import Runtime

if TYPE_CHECKING:
    from reconciler.applier import ApplyEvent, ApplyResult
    from reconciler.manifest import Manifests
    from reconciler.planfile import SavedPlan
    from reconciler.secrets_sink import SecretsSink
    from reconciler.state import State
    from reconciler.token import ApiToken

DEFAULT_MANIFESTS = ("manifests",)


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: manifest files or directories (default: manifests/)."""

    paths: Sequence[str] = ()
    prune: bool = False
    lock: bool = True
    lock_timeout: float = 0.0
    # "replace": every in-place update becomes a replacement (an API without the route).
    updates: str = "in-place"
    # Managed token names to replace now, previous generations retired at once.
    replace: Sequence[str] = ()


@dataclass(frozen=True)
class Planned:
    """A fresh plan and what it was made from."""

    plan: Plan
    manifest_digest: str
    state: State
    live: Sequence[ApiToken]


def load_manifests(paths: Sequence[str]) -> Manifests:
    """Offline and first, so a bad manifest fails before anything is contacted or created."""
    from reconciler.manifest import load_manifests as load

    return load(tuple(paths) or DEFAULT_MANIFESTS)


def _plan_from(
    runtime: Runtime,
    manifests: Manifests,
    request: PlanRequest | ApplyRequest,
) -> Planned:
    from reconciler.planner import build_plan
    from reconciler.spec import utcnow

    state = runtime.read_state()
    live = runtime.api.list()
    now = utcnow()
    plan = build_plan(
        manifests.tokens,
        live,
        state,
        now=now,
        prune=request.prune,
        updates="replace" if request.updates == "replace" else "in-place",
        replace=frozenset(request.replace),
    )
    refuse_born_expired(plan, manifests, now)
    return Planned(plan, manifests.digest, state, live)


def refuse_born_expired(plan: Plan, manifests: Manifests, now: datetime) -> None:
    """A create or replace whose new token would expire before it is made is refused: it
    would not authenticate, and the next plan would say nothing is wrong."""
    for action in plan.actions:
        spec = action.spec
        if not action.creates or spec is None or spec.expires.at is None:
            continue
        if spec.expires.at > now:
            continue
        file, line = manifests.locations.get(action.name, ("manifests", 0))
        raise PlanError(
            f"{file}:{line}: token {action.name}: expires {spec.expires.text()} is in "
            f"the past, so the token the plan would {action.kind} would be born expired; set "
            "a later date, or a duration such as expires: 90d"
        )


def _locked(
    runtime: Runtime, operation: str, lock: bool, timeout: float
) -> AbstractContextManager[object]:
    return runtime.backend.lock(operation, timeout) if lock else nullcontext()


def make_plan(runtime: Runtime, request: PlanRequest) -> Planned:
    """What apply would change. Read-only (it holds the state lock while reading, unless
    ``request.lock`` is False)."""
    manifests = load_manifests(request.paths)
    with _locked(runtime, "plan", request.lock, request.lock_timeout):
        return _plan_from(runtime, manifests, request)


def save_plan(runtime: Runtime, planned: Planned, out: Path, *, prune: bool) -> None:
    """Write ``planned`` for a later ``apply``; refused (nothing written) when it has
    conflicts, so there is never a plan file that cannot be applied."""
    from reconciler.planfile import SavedPlan, affected_tokens, write_plan_file

    planned.plan.check(force=True)
    saved = SavedPlan(
        plan=planned.plan,
        endpoint=runtime.endpoint_id,
        manifest_digest=planned.manifest_digest,
        prune=prune,
        affected=affected_tokens(planned.plan, planned.live),
    )
    write_plan_file(out, saved)


@dataclass(frozen=True)
class ApplyRequest:
    """What to apply: manifests, or one saved plan file (``paths == (FILE,)``)."""

    paths: Sequence[str] = ()
    #: Where new values go: one destination or several (file paths, vault://, aws-sm://,
    #: exec:); None or empty for the ``secrets:`` list of reconciler.yaml.
    secrets_out: str | Sequence[str] | None = None
    secrets_format: str | None = None
    discard_secrets: bool = False
    #: Receives the (masked) output of exec: destinations; None logs it.
    on_exec_output: Callable[[str], None] | None = None
    exec_timeout: float = 60.0
    parallelism: int = 10
    force: bool = False
    threshold: float = DEFAULT_THRESHOLD
    prune: bool = False
    lock_timeout: float = 0.0
    updates: str = "in-place"
    replace: Sequence[str] = ()


@dataclass
class ApplyOutcome:
    """The plan that was applied (or found to need nothing), and the result; ``result`` is
    None when the plan had no changes."""

    plan: Plan
    saved: bool
    result: ApplyResult | None = None


def read_saved_plan(request: ApplyRequest) -> SavedPlan | None:
    """The saved plan ``request`` names, or None when it names manifests."""
    from reconciler.planfile import is_plan_file, read_plan_file

    if len(request.paths) != 1 or not is_plan_file(Path(request.paths[0])):
        return None
    saved = read_plan_file(Path(request.paths[0]))
    if request.prune:
        raise ConfigError(
            "--prune does not apply to a saved plan: it was decided when the plan was made "
            "(`reconciler plan --prune --out FILE`)"
        )
    if request.replace:
        raise ConfigError(
            "--replace does not apply to a saved plan: it was decided when the plan was made "
            "(`reconciler plan --replace NAME --out FILE`)"
        )
    return saved


def _saved_plan_checked(runtime: Runtime, saved: SavedPlan) -> tuple[Plan, State]:
    """The saved plan and the current state, refused (PlanError) when either the endpoint,
    the state or the live tokens it touches moved since it was made."""
    from reconciler.planfile import check_endpoint, check_fresh

    check_endpoint(saved, runtime.endpoint_id)
    state = runtime.read_state()
    live = runtime.api.list()
    check_fresh(saved, endpoint=runtime.endpoint_id, state=state, live=live)
    return saved.plan, state


def run_destinations(request: ApplyRequest) -> tuple[str, ...]:
    """The run's destination list: the request's, else reconciler.yaml's ``secrets:``."""
    from reconciler.config_file import load_secrets_setting
    from reconciler.destinations import parse_destination

    if isinstance(request.secrets_out, str):
        return (request.secrets_out,) if request.secrets_out else ()
    if request.secrets_out:
        for text in request.secrets_out:
            parse_destination(text)  # DestinationSyntaxError: one line, before anything
        return tuple(request.secrets_out)
    setting = load_secrets_setting()
    return setting.destinations if setting is not None else ()


def open_sink(secrets_out: str | None, secrets_format: str | None) -> SecretsSink | None:
    """Opened after confirmation but before the first create, so an unwritable sink fails
    the run while nothing exists yet."""
    from reconciler.secrets_sink import SecretsSink

    if not secrets_out:
        return None
    fmt = secrets_format or ("dotenv" if secrets_out.endswith(".env") else "json")
    return SecretsSink.open(secrets_out, fmt)  # type: ignore[arg-type]


@contextmanager
def _no_signals(_stop: Callable[[str], None]) -> Iterator[None]:
    yield


def apply(
    runtime: Runtime,
    request: ApplyRequest,
    *,
    show: Callable[[Plan], None] | None = None,
    confirm: Callable[[Plan], None] | None = None,
    on_event: Callable[[ApplyEvent], None] | None = None,
    stopping: Callable[[Callable[[str], None]], AbstractContextManager[None]] = _no_signals,
) -> ApplyOutcome:
    """Plan (or load the saved plan), refuse it if unsafe, then carry it out under the state
    lock. ``show`` sees the plan first; ``confirm`` (not called for a saved plan: it was
    approved when saved) raises to stop; ``stopping(stop)`` wraps the run, e.g. to call
    ``stop`` on SIGTERM. Raises PlanError or SecretsError before any change when refused."""
    # Imported here, not at the top: `plan` shares this module and never applies.
    from reconciler.applier import Applier, require_sink
    from reconciler.delivery import Deliveries, creates_have_destinations
    from reconciler.journal import Journal

    saved = read_saved_plan(request)
    manifests = load_manifests(request.paths) if saved is None else None
    with runtime.backend.lock("apply", request.lock_timeout):
        if saved is not None:
            plan, state = _saved_plan_checked(runtime, saved)
        else:
            assert manifests is not None
            planned = _plan_from(runtime, manifests, request)
            plan, state = planned.plan, planned.state
        if show is not None:
            show(plan)
        plan.check(request.threshold, force=request.force)
        outcome = ApplyOutcome(plan, saved=saved is not None)
        if not plan.has_changes:
            return outcome
        run = run_destinations(request)
        require_sink(plan, creates_have_destinations(plan, run), request.discard_secrets)
        if confirm is not None and saved is None:
            confirm(plan)
        deliveries = Deliveries(
            run,
            secrets_format=request.secrets_format,
            on_output=request.on_exec_output,
            exec_timeout=request.exec_timeout,
        )
        deliveries.prepare(plan)  # files opened, stores checked: before the first create
        journal = Journal(runtime.backend, state)
        applier = Applier(
            runtime.api,
            journal,
            deliveries.first_sink,
            parallelism=request.parallelism,
            on_event=on_event,
            discard_secrets=request.discard_secrets,
            deliver=deliveries.deliver,
        )
        with stopping(applier.request_stop):
            outcome.result = applier.run(plan)
    return outcome


def unsafe_reason(plan: Plan) -> str | None:
    """What apply's safety check would refuse this plan for (None when it would not), so
    plan, run in pull requests, can say it before the deploy job does."""
    from reconciler.errors import UnsafePlanError

    try:
        plan.check()
    except UnsafePlanError as exc:
        return exc.reason
    return None


def planned_destinations(plan: Plan) -> dict[str, list[str]] | None:
    """Where the plan's creates will deliver: deliver_to, else reconciler.yaml's secrets:
    (apply's --secrets-out is not known yet); None when nothing is configured."""
    if not any(a.creates for a in plan.actions):
        return None
    from reconciler.config_file import load_secrets_setting
    from reconciler.delivery import plan_destinations

    setting = load_secrets_setting()
    return plan_destinations(plan, setting.destinations if setting else ()) or None


def needs_destination(plan: Plan) -> bool:
    """Whether apply of this plan needs --secrets-out: creates that neither their
    deliver_to: nor reconciler.yaml's secrets: give a destination."""
    if not any(a.creates for a in plan.actions):
        return False
    from reconciler.config_file import load_secrets_setting
    from reconciler.delivery import creates_have_destinations

    setting = load_secrets_setting()
    return not creates_have_destinations(plan, setting.destinations if setting else ())
