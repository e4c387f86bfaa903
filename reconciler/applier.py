"""Carries out a Plan: API calls in a bounded pool, each success recorded in state at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from reconciler.client import ApiTokenAPI
from reconciler.destinations import DeliveryAbortedError
from reconciler.errors import (
    AmbiguousCreateError,
    ReconcilerError,
    RequestRejectedError,
    SecretsError,
)
from reconciler.journal import Journal
from reconciler.plan import KIND_TABLE, Action, Plan
from reconciler.planner import ORPHAN_CLOCK_SKEW
from reconciler.secrets_sink import SecretsSink
from reconciler.spec import TokenSpec, as_utc, utcnow
from reconciler.state import OwnedToken, PendingCreate, State
from reconciler.text import plural
from reconciler.token import ApiToken

# A create whose answer is lost is retried (after removing what it may have left) this
# many times in all before the run gives up on it.
CREATE_ATTEMPTS = 3

Status = Literal["done", "failed"]


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
        sink: SecretsSink | None,
        *,
        parallelism: int = 10,
        now: Callable[[], datetime] = utcnow,
        on_event: Callable[[ApplyEvent], None] | None = None,
        discard_secrets: bool = False,
        deliver: Callable[[TokenSpec, ApiToken], None] | None = None,
    ) -> None:
        """``deliver``, when given, takes each new value instead of ``sink.add``
        (reconciler.delivery.Deliveries.deliver: every destination, or none)."""
        self.api = api
        self.deliver = deliver
        self.discard_secrets = discard_secrets
        self.journal = journal
        self.sink = sink
        self.parallelism = max(1, parallelism)
        self.now = now
        self.on_event = on_event
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._result = ApplyResult()
        self._result_lock = threading.Lock()

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def run(self, plan: Plan) -> ApplyResult:
        """Carry out ``plan``; refused before any call (SecretsError) when it creates
        tokens with no sink to receive their values, unless ``discard_secrets``."""
        has_sink = self.sink is not None or self.deliver is not None
        require_sink(plan, has_sink, self.discard_secrets)
        groups: dict[str, list[Action]] = {}
        for action in plan.actions:
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
        if action.kind == "create":
            assert action.spec is not None
            token = self._create(action.spec)
            self.journal.update(
                lambda s: s.with_token(_owned(action.spec, token)).without_pending(action.name)
            )
            return f"created {token.uid}"
        if action.kind == "replace":
            assert action.spec is not None and action.uid is not None
            old = self.journal.state.tokens.get(action.name)
            token = self._create(action.spec)

            def swap(s: State) -> State:
                s = s.with_token(_owned(action.spec, token)).without_pending(action.name)
                return s.with_retired(old) if old is not None else s

            self.journal.update(swap)
            self.api.delete(action.uid, missing_ok=True)
            old_uid = action.uid
            self.journal.update(lambda s: s.without_retired(old_uid))
            return f"replaced {old_uid} with {token.uid}"
        if action.kind == "delete":
            assert action.uid is not None
            uid = action.uid
            self.api.delete(uid, missing_ok=True)
            self._forget_value(action.name, uid)
            self.journal.update(lambda s: _forget_uid(s, action.name, uid))
            return f"deleted {uid}"
        if action.kind == "adopt":
            assert action.spec is not None and action.uid is not None
            uid = action.uid
            live = self.api.get(uid)
            if live is None:
                raise RequestRejectedError(f"adopt {action.name}: token {uid} no longer exists")
            self.journal.update(lambda s: s.with_token(_owned(action.spec, live)))
            return f"adopted {uid}"
        if action.kind == "forget":
            assert action.uid is not None
            uid = action.uid
            self._forget_value(action.name, uid)
            self.journal.update(lambda s: _forget_uid(s, action.name, uid))
            return f"forgot {uid} (already gone)"
        raise AssertionError(f"unknown action kind {action.kind}")

    def _forget_value(self, name: str, uid: str) -> None:
        """A deleted token's value no longer works: take it out of the secrets file. Only
        for the owned token of that name (the one whose value the file holds), never for
        an orphan or duplicate deleted beside it."""
        owned = self.journal.state.tokens.get(name)
        if self.sink is not None and owned is not None and owned.uid == uid:
            self.sink.forget(name)

    def _create(self, spec: TokenSpec) -> ApiToken:
        """Create the token and hand its value to the sink, recording the intent first so a
        lost answer or a crash leaves a trace the next run can clean up."""
        started = self.now()
        self.journal.update(lambda s: s.with_pending(PendingCreate(spec.name, started)))
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                token = self.api.create(
                    spec.name,
                    description=spec.description,
                    scopes=sorted(spec.scopes),
                    expired_at=spec.expires.expired_at_for_new_token(started),
                )
                break
            except AmbiguousCreateError:
                if attempt == CREATE_ATTEMPTS:
                    raise
                self._remove_orphans(spec.name, started)
            except RequestRejectedError:
                # The API said no: nothing was created, so there is nothing to clean up.
                self.journal.update(lambda s: s.without_pending(spec.name))
                raise
        assert token.token is not None
        if self.deliver is not None:
            self._deliver(spec, token)
        elif self.sink is not None:
            self.sink.add(spec.name, token.token)
        return token

    # ------------------------------------------------ delivery to secret stores (issue 12)

    def _deliver(self, spec: TokenSpec, token: ApiToken) -> None:
        """A value no destination kept must not stay live: delete the new token again
        (nobody has its value) and leave state as if it was never made."""
        assert self.deliver is not None
        try:
            self.deliver(spec, token)
        except DeliveryAbortedError as failure:
            try:
                self.api.delete(token.uid, missing_ok=True)
            except ReconcilerError:
                # The pending entry stays, so the next apply removes the token as an orphan;
                # the delivery's failure is the one to report.
                raise failure from None
            self.journal.update(lambda s: s.without_pending(spec.name))
            raise

    def _remove_orphans(self, name: str, started: datetime) -> None:
        """Delete tokens a lost create may have left: same name, made since it started, not
        owned. Their values were never seen, so nobody can be using them."""
        state = self.journal.state
        owned = {t.uid for t in state.tokens.values()} | set(state.retired)
        for token in self.api.list(search=name):
            if token.name != name or token.uid in owned or token.created_at is None:
                continue
            if as_utc(token.created_at) >= started - ORPHAN_CLOCK_SKEW:
                self.api.delete(token.uid, missing_ok=True)


def _owned(spec: TokenSpec | None, token: ApiToken) -> OwnedToken:
    assert spec is not None
    return OwnedToken(
        name=spec.name,
        uid=token.uid,
        spec=spec,
        created_at=token.created_at,
        expired_at=token.expired_at,
    )


def _forget_uid(state: State, name: str, uid: str) -> State:
    owned = state.tokens.get(name)
    if owned is not None and owned.uid == uid:
        state = state.without_token(name)
    return state.without_retired(uid)


def _order_within_name(action: Action) -> int:
    # The plan's own order: orphans and unowned duplicates go first, so the name is clean
    # before anything new is made.
    return KIND_TABLE[action.kind].order


def require_sink(plan: Plan, has_sink: bool, discard: bool) -> None:
    """Refuse a plan that creates tokens when their values, shown only once, would be lost."""
    creates = sum(1 for a in plan.actions if a.creates)
    if creates and not has_sink and not discard:
        values = "values are" if creates != 1 else "value is"
        raise SecretsError(
            f"the plan creates {plural(creates, 'token')} whose {values} shown only once: "
            "pass --secrets-out FILE (or vault://MOUNT/PATH, aws-sm://PATH, exec:COMMAND; "
            "or secrets: in reconciler.yaml, deliver_to: in the manifest) to receive them, or "
            "--discard-secrets if nobody needs them"
        )
