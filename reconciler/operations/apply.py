"""The apply use case: what `reconciler apply` does, callable without click (the CLI
parses options, confirms and prints).

    with Session(SessionSettings(endpoint="local")) as session:
        outcome = apply(session, ApplyRequest(paths=("manifests",), secrets_out="state/new.json"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from reconciler import defaults
from reconciler.apply.applier import Applier, ApplyEvent, ApplyResult
from reconciler.apply.delivery import Deliveries
from reconciler.destinations.file import FileDestination, SecretsFormat
from reconciler.destinations.gitcheck import unignored_warning
from reconciler.destinations.parse import parse_destination
from reconciler.errors import ConfigError
from reconciler.operations.plan import load_manifests, plan_from
from reconciler.plan.model import Plan
from reconciler.plan.routing import entries_for, plan_destinations
from reconciler.plan.saved import (
    SavedPlan,
    check_endpoint,
    check_fresh,
    is_plan_file,
    read_plan_file,
)
from reconciler.session import Session
from reconciler.state.journal import Journal
from reconciler.state.model import State


@dataclass(frozen=True)
class ApplyRequest:
    """What to apply: manifests, or one saved plan file (``paths == (FILE,)``)."""

    paths: Sequence[str] = ()
    #: Where new values go: one destination or several (file paths, vault://, aws-sm://,
    #: exec:); None or empty for the ``secrets:`` list of reconciler.yaml.
    secrets_out: str | Sequence[str] | None = None
    secrets_format: SecretsFormat | None = None
    discard_secrets: bool = False
    #: Receives the (masked) output of exec: destinations; None logs it.
    on_exec_output: Callable[[str], None] | None = None
    exec_timeout: float = defaults.EXEC_TIMEOUT_SECONDS
    parallelism: int = defaults.PARALLELISM
    force: bool = False
    threshold: float = defaults.THRESHOLD
    prune: bool = False
    lock_timeout: float = 0.0
    #: None: $RECONCILER_UPDATES, then reconciler.yaml, then in-place.
    updates: str | None = None
    replace: Sequence[str] = ()


@dataclass
class ApplyOutcome:
    """The plan that was applied (or found to need nothing), and the result; ``result`` is
    None when the plan had no changes. ``destinations`` names the run's destinations."""

    plan: Plan
    saved: bool
    result: ApplyResult | None = None
    destinations: str | None = None


#: Shows the plan before anything is done: the plan, and per create where its value goes.
ShowPlan = Callable[[Plan, Mapping[str, Sequence[str]]], None]


def read_saved_plan(request: ApplyRequest) -> SavedPlan | None:
    """The saved plan ``request`` names, or None when it names manifests."""
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


def _saved_plan_checked(session: Session, saved: SavedPlan) -> tuple[Plan, State]:
    """The saved plan and the current state, refused (PlanError) when either the endpoint,
    the state or the live tokens it touches moved since it was made."""
    check_endpoint(saved, session.endpoint_id)
    state = session.read_state()
    live = session.api.list()
    check_fresh(saved, endpoint=session.endpoint_id, state=state, live=live)
    return saved.plan, state


def run_destinations(session: Session, request: ApplyRequest) -> tuple[str, ...]:
    """The run's destination list, checked offline: the request's, else reconciler.yaml's
    ``secrets:`` (already checked when the file was read)."""
    given = request.secrets_out
    entries = (given,) if isinstance(given, str) else tuple(given or ())
    entries = tuple(e for e in entries if e)
    for text in entries:
        parse_destination(text)  # DestinationSyntaxError: one line, before anything
    return entries or session.configured_destinations()


def _unignored_files(plan: Plan, run: Sequence[str]) -> list[str]:
    """A warning per secrets file of this apply that lies in a Git work tree unignored."""
    entries = set(run)
    for action in plan.actions:
        if action.creates:
            entries.update(entries_for(action.spec, run))
    files = sorted(
        {d.path for d in map(parse_destination, entries) if isinstance(d, FileDestination)}
    )
    return [w for w in map(unignored_warning, files) if w is not None]


@contextmanager
def _no_signals(_stop: Callable[[str], None]) -> Iterator[None]:
    yield


def apply(
    session: Session,
    request: ApplyRequest,
    *,
    show: ShowPlan | None = None,
    confirm: Callable[[Plan], None] | None = None,
    on_event: Callable[[ApplyEvent], None] | None = None,
    stopping: Callable[[Callable[[str], None]], AbstractContextManager[None]] = _no_signals,
    warn: Callable[[str], None] | None = None,
) -> ApplyOutcome:
    """Plan (or load the saved plan), refuse it if unsafe, then carry it out under the state
    lock. ``show`` sees the plan first; ``confirm`` (not called for a saved plan: it was
    approved when saved) raises to stop; ``stopping(stop)`` wraps the run, e.g. to call
    ``stop`` on SIGTERM; ``warn`` gets warnings that do not stop the run (a secrets file Git
    would commit). Raises PlanError or SecretsError before any change when refused."""
    saved = read_saved_plan(request)
    manifests = load_manifests(request.paths) if saved is None else None
    deliveries = Deliveries(
        run_destinations(session, request),
        discard=request.discard_secrets,
        secrets_format=request.secrets_format,
        on_output=request.on_exec_output,
        exec_timeout=request.exec_timeout,
    )
    updates = session.updates(request.updates)  # reconciler.yaml is read before the lock
    with session.backend.lock("apply", request.lock_timeout):
        if saved is not None:
            plan, state = _saved_plan_checked(session, saved)
        else:
            assert manifests is not None
            planned = plan_from(
                session,
                manifests,
                prune=request.prune,
                updates=updates,
                replace=request.replace,
            )
            plan, state = planned.plan, planned.state
        if show is not None:
            show(plan, plan_destinations(plan, deliveries.run))
        plan.check(request.threshold, force=request.force)
        outcome = ApplyOutcome(plan, saved=saved is not None, destinations=deliveries.describe())
        if not plan.has_changes:
            return outcome
        applier = Applier(
            session.api,
            Journal(session.backend, state),
            deliveries,
            parallelism=request.parallelism,
            on_event=on_event,
        )
        applier.check(plan)  # values with nowhere to go: refused before asking
        if warn is not None:
            for warning in _unignored_files(plan, deliveries.run):
                warn(warning)
        if confirm is not None and saved is None:
            confirm(plan)
        with stopping(applier.request_stop):
            outcome.result = applier.run(plan)
    return outcome
