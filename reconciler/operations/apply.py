"""The plan and apply use cases, without any command line: what `reconciler plan` and
`reconciler apply` do, callable from a library (the CLI parses options, confirms and prints).

    with Runtime(Options(endpoint="local")) as runtime:
        planned = make_plan(runtime, PlanRequest(paths=("manifests",)))
        outcome = apply(runtime, ApplyRequest(paths=("manifests",), secrets_out="new.json"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ConfigError
from reconciler.operations.plan import _plan_from, load_manifests
from reconciler.plan.model import DEFAULT_THRESHOLD, Plan
from reconciler.session import Runtime

if TYPE_CHECKING:
    from reconciler.apply.applier import ApplyEvent, ApplyResult
    from reconciler.destinations.file import SecretsSink
    from reconciler.plan.saved import SavedPlan
    from reconciler.state.model import State


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
    from reconciler.plan.saved import is_plan_file, read_plan_file

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
    from reconciler.plan.saved import check_endpoint, check_fresh

    check_endpoint(saved, runtime.endpoint_id)
    state = runtime.read_state()
    live = runtime.api.list()
    check_fresh(saved, endpoint=runtime.endpoint_id, state=state, live=live)
    return saved.plan, state


def run_destinations(request: ApplyRequest) -> tuple[str, ...]:
    """The run's destination list: the request's, else reconciler.yaml's ``secrets:``."""
    from reconciler.config import load_secrets_setting
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
    from reconciler.destinations.file import SecretsSink

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
    from reconciler.apply.applier import Applier, require_sink
    from reconciler.apply.delivery import Deliveries, creates_have_destinations
    from reconciler.state.journal import Journal

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
