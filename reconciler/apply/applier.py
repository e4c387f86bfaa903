"""Carries out a Plan: API calls in a bounded pool, each success recorded in state at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from reconciler.api.client import ApiTokenAPI
from reconciler.api.proof import authenticates
from reconciler.api.token import ApiToken
from reconciler.apply.delivery import Deliveries
from reconciler.defaults import PARALLELISM as DEFAULT_PARALLELISM
from reconciler.errors import (
    AmbiguousCreateError,
    DeliveryAbortedError,
    NameTakenError,
    ProofFailed,
    ReconcilerError,
    RequestRejectedError,
    UpdateRouteMissing,
)
from reconciler.manifest.spec import TokenSpec
from reconciler.plan.model import KIND_TABLE, Action, Plan
from reconciler.state.journal import Journal
from reconciler.state.model import (
    ORPHAN_CLOCK_SKEW,
    OwnedToken,
    PendingCreate,
    PreviousGeneration,
    State,
)
from reconciler.util.times import as_utc, format_time, utcnow

# A create whose answer is lost is retried (after removing what it may have left) this
# many times in all before the run gives up on it.
CREATE_ATTEMPTS = 3

Status = Literal["done", "failed"]
# Actions that change only the state: recorded together, in one write, before the rest.
STATE_ONLY = ("adopt", "forget")


@dataclass(frozen=True)
class ApplyEvent:
    """One action finished (or failed); for progress output."""

    action: Action
    status: Status
    detail: str


@dataclass
class ApplyResult:
    done: list[ApplyEvent] = field(default_factory=list)
    failed: list[ApplyEvent] = field(default_factory=list)
    not_started: list[Action] = field(default_factory=list)
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started and self.interrupted is None


class Applier:
    """Runs the actions of a plan. Actions on different names run concurrently (up to
    ``parallelism``); the actions of one name run in order. After the first failure, or
    when ``request_stop`` is called (SIGINT/SIGTERM), no new action starts; the ones in
    flight finish and are recorded."""

    def __init__(
        self,
        api: ApiTokenAPI,
        journal: Journal,
        deliveries: Deliveries,
        *,
        parallelism: int = DEFAULT_PARALLELISM,
        now: Callable[[], datetime] = utcnow,
        on_event: Callable[[ApplyEvent], None] | None = None,
    ) -> None:
        """``deliveries`` takes each new value (every destination, or none) and drops the
        values of deleted tokens; it is the only way values leave the applier."""
        self.api = api
        self.deliveries = deliveries
        self.journal = journal
        self.parallelism = max(1, parallelism)
        self.now = now
        self.on_event = on_event
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._result = ApplyResult()
        self._result_lock = threading.Lock()
        self._checked: Plan | None = None

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def check(self, plan: Plan) -> None:
        """Refuse ``plan`` before any call (SecretsError) when it creates tokens whose
        values would have nowhere to go; the caller may check before asking to confirm."""
        self.deliveries.check(plan)
        self._checked = plan

    def run(self, plan: Plan) -> ApplyResult:
        """Carry out ``plan``: checked (unless ``check`` already was), destinations opened
        and checked, then the actions."""
        if self._checked is not plan:
            self.check(plan)
        self.deliveries.prepare(plan)
        self._record_state_only([a for a in plan.actions if a.kind in STATE_ONLY])
        groups: dict[str, list[Action]] = {}
        for action in plan.actions:
            if action.kind not in STATE_ONLY:
                groups.setdefault(action.name, []).append(action)
        ordered = [sorted(actions, key=_order_within_name) for actions in groups.values()]
        if self.parallelism == 1:
            for actions in ordered:
                self._run_group(actions)
        else:
            with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
                for _ in pool.map(self._run_group, ordered):
                    pass
        self._result.interrupted = self._stop_reason
        return self._result

    def _record_state_only(self, actions: list[Action]) -> None:
        """Adopt and forget, all in one state write: adopting thousands of tokens costs
        one write, not one each (and no request at all)."""
        if not actions:
            return

        def change(state: State) -> State:
            for action in actions:
                state = _record(state, action, self._forget_value)
            return state

        self.journal.update(change)
        for action in actions:
            self._report(ApplyEvent(action, "done", _state_only_detail(action)))

    def _run_group(self, actions: list[Action]) -> None:
        for index, action in enumerate(actions):
            if self._stop.is_set():
                with self._result_lock:
                    self._result.not_started.extend(actions[index:])
                return
            try:
                detail = self._execute(action)
            except ReconcilerError as exc:
                self._stop.set()
                self._report(ApplyEvent(action, "failed", str(exc)))
                with self._result_lock:
                    self._result.not_started.extend(actions[index + 1 :])
                return
            self._report(ApplyEvent(action, "done", detail))
        if not any(a.creates for a in actions):
            name = actions[0].name
            if name in self.journal.state.pending:
                self.journal.update(lambda s: s.without_pending(name))

    def _report(self, event: ApplyEvent) -> None:
        with self._result_lock:
            (self._result.done if event.status == "done" else self._result.failed).append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _execute(self, action: Action) -> str:
        if action.kind in ("create", "replace"):
            return self._new_generation(action)
        if action.kind == "update":
            return self._update(action)
        if action.kind in ("delete", "retire"):
            assert action.uid is not None
            uid = action.uid
            self.api.delete(uid, missing_ok=True)
            self._forget_value(action.name, uid)
            self.journal.update(lambda s: s.without_uid(action.name, uid))
            return f"{KIND_TABLE[action.kind].past} {uid}"
        raise AssertionError(f"unknown action kind {action.kind}")

    def _new_generation(self, action: Action) -> str:
        """Create (under the plan's live name), deliver under the manifest name, record
        the new generation with the one it supersedes, then prove and retire."""
        spec = action.spec
        assert spec is not None
        old = self.journal.state.tokens.get(action.name) if action.kind == "replace" else None
        token = self._create(spec, action.live_name)
        delivered = self.now()
        keep = bool(spec.overlap) and not action.retire_now and (old is None or old.proven)
        # Whole seconds, rounded up: the instant is shown in plans and never early.
        end = delivered + spec.overlap + timedelta(microseconds=999_999)
        retire_after = end.replace(microsecond=0) if keep else None
        new = _owned(spec, token, proven=old is None)

        def swap(s: State) -> State:
            s = s.with_token(new).without_pending(action.name)
            if old is not None and old.uid == action.uid:
                s = s.with_previous(PreviousGeneration.of(old, retire_after))
            return s

        self.journal.update(swap)
        if old is None:
            # Nothing waits on a first generation's proof (no previous one to retire), so
            # a create costs one request, as BentoML's own loop does.
            return f"created {token.uid}"
        assert token.token is not None
        self._prove(action, token.uid, token.token)
        retired = self._retire_due(action.name, everything=action.retire_now)
        kept = "" if old.uid in retired else f" (previous generation {old.uid} kept"
        if kept:
            kept += f" until {format_time(retire_after)})" if retire_after else ")"
        return f"replaced {old.uid} with {token.uid}{kept}"

    def _prove(self, action: Action, uid: str, value: str) -> None:
        reason = authenticates(self.api, value)
        if reason is None:
            self.journal.update(lambda s: s.with_proven(action.name, uid))
            return
        held = f"its successor {uid} was not accepted by the API ({reason})"
        self.journal.update(lambda s: s.with_previous_held(action.name, held))
        raise ProofFailed(
            f"{action.name}: the new token {uid} ({action.live_name}) was delivered but not "
            f"accepted by the API ({reason}); the previous generation is kept and still "
            "works, and the next apply replaces the new token again"
        )

    def _retire_due(self, name: str, *, everything: bool) -> set[str]:
        """Delete the previous generations of ``name`` whose time has come (no overlap,
        or its end passed; all with --replace) now that their successor is proven."""
        now = self.now()
        due = [
            g.uid
            for g in self.journal.state.previous.values()
            if g.name == name and (everything or g.retire_after is None or g.retire_after <= now)
        ]
        for uid in due:
            self.api.delete(uid, missing_ok=True)
        if due:
            self.journal.update(lambda s: s.without_previous(*due))
        return set(due)

    def _update(self, action: Action) -> str:
        spec, uid = action.spec, action.uid
        assert spec is not None and uid is not None and action.before is not None
        before = action.before
        scopes = sorted(spec.scopes)
        try:
            token = self.api.update(
                uid,
                description=spec.description if spec.description != before.description else None,
                scopes=scopes if tuple(scopes) != tuple(sorted(before.scopes)) else None,
                expired_at=spec.expires.at if action.expiry_changed else None,
            )
        except UpdateRouteMissing:
            raise UpdateRouteMissing(
                f"update {action.name}: {self.api.client.endpoint} has no route to update a "
                "token in place; apply with --updates replace (or `updates: replace` in "
                "reconciler.yaml) to replace it instead"
            ) from None
        if token is None:
            raise RequestRejectedError(
                f"update {action.name}: token {uid} no longer exists; run plan again"
            )
        self.journal.update(
            lambda s: s.with_update(
                action.name, uid, spec, expired_at=token.expired_at, live_name=token.name
            )
        )
        return f"updated {uid} in place"

    def _forget_value(self, name: str, uid: str) -> None:
        """A deleted token's value no longer works: destinations that hold only current
        values drop it. Only for the owned token of that name (the one whose value they
        hold), never for an orphan or duplicate deleted beside it."""
        owned = self.journal.state.tokens.get(name)
        if owned is not None and owned.uid == uid:
            self.deliveries.forget(name)

    def _create(self, spec: TokenSpec, live_name: str) -> ApiToken:
        """Create the token and deliver its value, recording the intent first so a
        lost answer or a crash leaves a trace the next run can clean up."""
        started = self.now()
        pending = PendingCreate(spec.name, started, live_name)
        self.journal.update(lambda s: s.with_pending(pending))
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                token = self.api.create(
                    live_name,
                    description=spec.description,
                    scopes=sorted(spec.scopes),
                    expired_at=spec.expires.expired_at_for_new_token(started),
                )
                break
            except AmbiguousCreateError:
                if attempt == CREATE_ATTEMPTS:
                    raise
                self._remove_orphans(live_name, started)
            except NameTakenError:
                self.journal.update(lambda s: s.without_pending(spec.name))
                raise NameTakenError(
                    f"create {spec.name}: live name {live_name} was taken since the plan was "
                    "made; run plan again",
                    name=live_name,
                ) from None
            except RequestRejectedError:
                # The API said no: nothing was created, so there is nothing to clean up.
                self.journal.update(lambda s: s.without_pending(spec.name))
                raise
        assert token.token is not None
        # Under the manifest name: consumers find the value where they always did.
        self._deliver(spec, token)
        return token

    def _deliver(self, spec: TokenSpec, token: ApiToken) -> None:
        """A value no destination kept must not stay live: delete the new token again
        (nobody has its value) and leave state as if it was never made."""
        try:
            self.deliveries.deliver(spec, token)
        except DeliveryAbortedError as failure:
            try:
                self.api.delete(token.uid, missing_ok=True)
            except ReconcilerError:
                # The pending entry stays, so the next apply removes the token as an orphan;
                # the delivery's failure is the one to report.
                raise failure from None
            self.journal.update(lambda s: s.without_pending(spec.name))
            raise

    def _remove_orphans(self, live_name: str, started: datetime) -> None:
        """Delete tokens a lost create may have left: exactly that live name, made since it
        started, not owned. Their values were never seen, so nobody can be using them. The
        API's search is not relied on (Yatai ignores it): every token is listed."""
        owned = self.journal.state.owned_uids()
        for token in self.api.list():
            if token.name != live_name or token.uid in owned or token.created_at is None:
                continue
            if as_utc(token.created_at) >= started - ORPHAN_CLOCK_SKEW:
                self.api.delete(token.uid, missing_ok=True)


def _owned(spec: TokenSpec, token: ApiToken, *, proven: bool = True) -> OwnedToken:
    return OwnedToken(
        name=spec.name,
        uid=token.uid,
        spec=spec,
        created_at=token.created_at,
        expired_at=token.expired_at,
        live_name=token.name,
        proven=proven,
    )


def _moment(text: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00"))) if text else None


def _record(state: State, action: Action, forget_value: Callable[[str, str], None]) -> State:
    """A state-only action's change: adopt records the token as the plan saw it in the
    listing (no request: the listing proved it exists, and a saved plan's freshness check
    covers the time since); forget drops a token or previous generation already gone."""
    assert action.uid is not None
    if action.kind == "adopt":
        assert action.spec is not None and action.before is not None
        owned = OwnedToken(
            name=action.name,
            uid=action.uid,
            spec=action.spec,
            created_at=_moment(action.before.created_at),
            expired_at=_moment(action.before.expired_at),
            live_name=action.before.live_name or action.name,
        )
        return state.with_token(owned)
    forget_value(action.name, action.uid)
    return state.without_uid(action.name, action.uid)


def _state_only_detail(action: Action) -> str:
    if action.kind == "adopt":
        return f"adopted {action.uid}"
    return f"forgot {action.uid} (already gone)"


def _order_within_name(action: Action) -> int:
    # The plan's own order: orphans and unowned duplicates go first, so the name is clean
    # before anything new is made.
    return KIND_TABLE[action.kind].order
