"""The layer of the local API that sits outside Starlette: statistics, the body limit,
injected faults and the router's own answers (a route switched off)."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from reconciler.server.faults import FaultInjector
from reconciler.server.wire import error_response

API_TOKENS = "/api/v1/api_tokens"
AUTH_CURRENT = "/api/v1/auth/current"
TOKEN_ROUTE = f"{API_TOKENS}/{{uid}}"
CREATE_KEY = f"POST {API_TOKENS}"
PATCH_KEY = f"PATCH {TOKEN_ROUTE}"

# The uvicorn send callable, kept in the scope so that a "lost create" can reach the socket
# from inside Starlette's middleware stack, which wraps send in closures.
_RAW_SEND = "reconciler.raw_send"


def route_key(method: str, path: str) -> str:
    """The route a request counts under in the statistics (uids folded into ``{uid}``)."""
    if path in (API_TOKENS, AUTH_CURRENT):
        return f"{method} {path}"
    prefix = API_TOKENS + "/"
    if path.startswith(prefix) and "/" not in path[len(prefix) :]:
        return f"{method} {TOKEN_ROUTE}"
    return f"{method} other"


async def _drop_connection(scope: Scope) -> bool:
    """Abort the TCP connection under this request without any HTTP response.

    Works with uvicorn (h11 and httptools), whose send is a bound method of a cycle object
    holding the transport. Marking the cycle disconnected stops uvicorn from writing or
    logging about the unfinished response. Returns False when the server is not uvicorn.
    """
    cycle = getattr(scope.get(_RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    cycle.disconnected = True
    return True


class LocalApiApp(FastAPI):
    """FastAPI with an outer layer that counts requests, limits bodies and injects faults
    before Starlette's own middleware sees the request."""

    injector: FaultInjector
    max_body_bytes: int
    # False: PATCH on a token answers as a router without the route does (Gin's plain-text
    # 404), so that clients can be tested against a server that cannot update in place.
    update_route: bool = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_admin"):
            await super().__call__(scope, receive, send)
            return
        scope[_RAW_SEND] = send
        key = route_key(scope["method"], path)
        self.injector.count_request(key)
        trace_id = secrets.token_hex(8)
        status_seen: list[int] = []

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self._handle(scope, receive, send_traced, key, trace_id)
        finally:
            if status_seen:
                self.injector.count_status(status_seen[0])

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, key: str, trace_id: str
    ) -> None:
        if scope["path"].startswith("/api/") and await self._inject_fault(
            scope, receive, send, trace_id
        ):
            return
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            response = error_response(413, f"request body larger than {self.max_body_bytes} bytes")
            await response(scope, receive, send)
            return
        replay = _replay(body, receive)
        if key == PATCH_KEY and not self.update_route:
            await PlainTextResponse("404 page not found", 404)(scope, replay, send)
        elif key == CREATE_KEY:
            await super().__call__(scope, replay, self._create_sender(scope, send, trace_id))
        else:
            await super().__call__(scope, replay, send)

    async def _inject_fault(
        self, scope: Scope, receive: Receive, send: Send, trace_id: str
    ) -> bool:
        """Answer with an injected fault (after any injected latency); True when it did."""
        injector = self.injector
        latency = injector.latency_seconds
        if latency > 0:
            injector.count_fault("latency")
            await asyncio.sleep(latency)
        decision, status = injector.decide()
        if decision == "rate_limit":
            injector.count_fault("rate_limit")
            retry = str(injector.retry_after)
            response = error_response(
                status, "rate limited: retry later (injected fault)", {"Retry-After": retry}
            )
        elif decision == "error":
            injector.count_fault("error")
            response = error_response(
                status, f"service unavailable (injected fault, trace id {trace_id})"
            )
        else:
            return False
        await response(scope, receive, send)
        return True

    def _create_sender(self, scope: Scope, send: Send, trace_id: str) -> Send:
        """``send`` for a create, losing or failing its committed answer as faults say."""
        dropping = False

        async def send_or_drop(message: Message) -> None:
            nonlocal dropping
            if dropping:
                return
            committed = message["type"] == "http.response.start" and message["status"] == 200
            # A 200 means the row is committed; losing the answer is the fault under test.
            if committed and self.injector.decide_lose_create():
                self.injector.count_fault("lost_create")
                dropping = True
                if not await _drop_connection(scope):
                    # Not under uvicorn (e.g. an in-process ASGI test client): the nearest
                    # thing to a lost answer is a 500 after the commit.
                    await error_response(500, "response lost after commit (injected fault)")(
                        scope, _no_receive, send
                    )
                return
            failure = self.injector.decide_error_after_create() if committed else None
            if failure is not None:
                # Committed, yet the caller is told it failed: a 5xx after the commit.
                self.injector.count_fault("error_after_create")
                dropping = True
                await error_response(
                    failure,
                    f"service unavailable (injected fault after commit, trace id {trace_id})",
                )(scope, _no_receive, send)
                return
            await send(message)

        return send_or_drop


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds ``limit`` (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
