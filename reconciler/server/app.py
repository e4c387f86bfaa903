"""The FastAPI application of the local BentoCloud-compatible token API: the routes of
docs/wire-format.md (sections 2-8), answered as Yatai answers them, over a SQLite store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciler.server.faults import FaultInjector, Faults
from reconciler.server.outer import API_TOKENS, AUTH_CURRENT, TOKEN_ROUTE, LocalApiApp, route_key
from reconciler.server.store import NameTakenError, Principal, Store, format_db_time
from reconciler.server.wire import (
    DUPLICATE_NAME_ERROR,
    ECHO_LIMIT,
    ApiProblem,
    ApiToken,
    ApiTokenList,
    CreateApiTokenRequest,
    CreatedApiToken,
    ErrorBody,
    UpdateApiTokenRequest,
    User,
    check_description,
    check_name,
    check_scopes,
    error_response,
    not_found,
    parse_expired_at,
    token_to_wire,
    user_to_wire,
)
from reconciler.util.text import clip

__all__ = ["AUTH_HEADER", "MAX_BODY_BYTES", "LocalApiApp", "create_app", "route_key"]

AUTH_HEADER = "X-YATAI-API-TOKEN"
MAX_BODY_BYTES = 64 * 1024
MAX_SEARCH = 256
MAX_OFFSET = 2**62
# Longer than any uid the store makes: a longer one is not found without a query.
MAX_UID = 128
# Managing tokens takes this scope, as in Yatai, where it grants everything.
MANAGE_SCOPE = "api"


@dataclass(frozen=True)
class ApiSettings:
    """How the routes behave; fixed when the app is made."""

    max_page_size: int = 1000
    update_route: bool = True


# authentication (module level: FastAPI resolves these annotations from module globals)

_api_key_header = APIKeyHeader(name=AUTH_HEADER, auto_error=False)


async def _principal(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    store: Store = request.app.state.store
    found = store.authenticate(key) if key else None
    if found is None:
        what = "unknown, expired or deleted" if key else f"missing ({AUTH_HEADER} header)"
        raise ApiProblem(401, f"API key {what}")
    return found


async def _manager(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    # /auth/current stays open to every live token: it is how a new value is proven.
    if not who.holds(MANAGE_SCOPE):
        raise ApiProblem(403, f"the api_token needs the scope {MANAGE_SCOPE} to manage tokens")
    return who


async def _admin_caller(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    store: Store = request.app.state.store
    found = store.authenticate(key) if key else None
    if found is None:
        raise ApiProblem(401, "admin key missing or unknown")
    if not found.is_admin:
        raise ApiProblem(403, "this endpoint needs the admin key")
    return found


Caller = Annotated[Principal, Depends(_principal)]
Manager = Annotated[Principal, Depends(_manager)]
AdminCaller = Annotated[Principal, Depends(_admin_caller)]


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown, expired or deleted API key"},
    429: {"model": ErrorBody, "description": "Rate limited; see Retry-After"},
    503: {"model": ErrorBody, "description": "Service unavailable; see x-trace-id"},
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid request (or the name is taken by a live token)",
        403: "The key's token lacks the api scope, or a scope it would grant",
        404: "No such token (or it belongs to another user)",
        413: "Request body too large",
    }
    extra: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses
    }
    return {**_ERRORS, **extra}


# the application, step by step


def create_app(
    store: Store,
    faults: Faults | FaultInjector | None = None,
    *,
    max_page_size: int = 1000,
    max_body_bytes: int = MAX_BODY_BYTES,
    allow_duplicate_names: bool = False,
    update_route: bool = True,
) -> LocalApiApp:
    """The local API over ``store``. ``faults`` may be shared (a FaultInjector) so that the
    caller can change faults and read statistics without HTTP. Names are unique among a
    user's live tokens unless ``allow_duplicate_names``; ``update_route=False`` answers
    PATCH as a server without that route does."""
    if max_page_size < 1:
        raise ValueError("max_page_size must be at least 1")
    settings = ApiSettings(max_page_size=max_page_size, update_route=update_route)
    store.set_unique_names(not allow_duplicate_names)
    app = _new_app(store, faults, max_body_bytes, update_route)
    _install_error_handlers(app)
    _install_token_reads(app, store, settings)
    _install_token_writes(app, store, settings)
    _install_auth_current(app)
    _install_admin_routes(app, app.injector)
    _install_openapi(app)
    return app


def _new_app(
    store: Store, faults: Faults | FaultInjector | None, max_body_bytes: int, update_route: bool
) -> LocalApiApp:
    injector = faults if isinstance(faults, FaultInjector) else FaultInjector(faults)
    app = LocalApiApp(
        title="reconciler local BentoCloud API",
        version="1",
        description="The API-token endpoints of BentoCloud, served from SQLite.",
        docs_url=None,
        redoc_url=None,
        # Starlette's trailing-slash redirect builds Location from the client's Host header.
        redirect_slashes=False,
    )
    app.injector = injector
    app.max_body_bytes = max_body_bytes
    app.update_route = update_route
    app.state.store = store
    app.state.injector = injector
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as Yatai's ``{"error": ...}``."""

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{clip(loc, ECHO_LIMIT) if loc else 'body'}: {err.get('msg')}")
        return error_response(400, "invalid request: " + "; ".join(problems))


def _own_token_uid(uid: str) -> str:
    """A uid worth looking up; any other is simply not found (and echoed only in part)."""
    if len(uid) > MAX_UID or not uid.isascii():
        raise not_found(uid)
    return uid


def _install_token_reads(app: FastAPI, store: Store, settings: ApiSettings) -> None:
    @app.get(
        API_TOKENS,
        response_model=ApiTokenList,
        responses=_errors(400, 403),
        summary="List the caller's API tokens, newest first",
    )
    async def list_api_tokens(
        who: Manager,
        start: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        count: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 20,
        search: Annotated[str | None, Query(max_length=MAX_SEARCH)] = None,
    ) -> JSONResponse:
        applied = min(count, settings.max_page_size)
        records, total = store.list_tokens(who.user, start=start, count=applied, search=search)
        now = format_db_time(datetime.now(timezone.utc))
        items = [token_to_wire(r, now) for r in records]
        return JSONResponse({"start": start, "count": applied, "total": total, "items": items})

    @app.get(
        TOKEN_ROUTE,
        response_model=ApiToken,
        responses=_errors(403, 404),
        summary="Get one of the caller's API tokens (never its value)",
    )
    async def get_api_token(uid: str, who: Manager) -> JSONResponse:
        record = store.get_token(who.user, _own_token_uid(uid))
        if record is None:
            raise not_found(uid)
        return JSONResponse(token_to_wire(record))


def _install_token_writes(app: FastAPI, store: Store, settings: ApiSettings) -> None:
    @app.post(
        API_TOKENS,
        response_model=CreatedApiToken,
        responses=_errors(400, 403, 413),
        summary="Create an API token; the answer holds its value, shown only this once",
    )
    async def create_api_token(body: CreateApiTokenRequest, who: Manager) -> JSONResponse:
        name = check_name(body.name)
        description = check_description(body.description or "")
        scopes = check_scopes(body.scopes or [], who)
        expired_at = parse_expired_at(body.expired_at) if body.expired_at else None
        try:
            record, secret = store.create_token(
                who.user, name, description=description, scopes=scopes, expired_at=expired_at
            )
        except NameTakenError:
            raise ApiProblem(400, DUPLICATE_NAME_ERROR) from None
        return JSONResponse(token_to_wire(record, secret=secret))

    @app.delete(
        TOKEN_ROUTE,
        response_model=ApiToken,
        responses=_errors(403, 404),
        summary="Delete an API token; its value stops working at once",
    )
    async def delete_api_token(uid: str, who: Manager) -> JSONResponse:
        record = store.delete_token(who.user, _own_token_uid(uid))
        if record is None:
            raise not_found(uid)
        return JSONResponse(token_to_wire(record))

    if settings.update_route:
        _install_token_update(app, store)


def _install_token_update(app: FastAPI, store: Store) -> None:
    @app.patch(
        TOKEN_ROUTE,
        response_model=ApiToken,
        responses=_errors(400, 403, 404, 413),
        summary="Change description, scopes or expiry in place; the value stays the same",
    )
    async def update_api_token(uid: str, body: UpdateApiTokenRequest, who: Manager) -> JSONResponse:
        # As Yatai: the token is looked up first, so a foreign uid is 404 whatever the body.
        if store.get_token(who.user, _own_token_uid(uid)) is None:
            raise not_found(uid)
        description = check_description(body.description) if body.description is not None else None
        scopes = check_scopes(body.scopes, who) if body.scopes is not None else None
        expired_at = parse_expired_at(body.expired_at) if body.expired_at is not None else None
        record = store.update_token(
            who.user, uid, description=description, scopes=scopes, expired_at=expired_at
        )
        if record is None:  # deleted meanwhile
            raise not_found(uid)
        return JSONResponse(token_to_wire(record))


def _install_auth_current(app: FastAPI) -> None:
    @app.get(
        AUTH_CURRENT,
        response_model=User,
        responses=_errors(),
        summary="The user the API key belongs to (any live token value works as a key)",
    )
    async def current_user(request: Request, who: Caller) -> JSONResponse:
        if request.app.injector.faults.refuse_auth_current and not who.is_admin:
            raise ApiProblem(401, "API key unknown, expired or deleted")  # injected fault
        return JSONResponse(user_to_wire(who.user))


def _install_admin_routes(app: FastAPI, injector: FaultInjector) -> None:
    """Hidden from the schema, admin key only, never faulted or counted."""

    @app.get("/_admin/faults", include_in_schema=False)
    async def get_faults(_: AdminCaller) -> JSONResponse:
        return JSONResponse(injector.faults.to_dict())

    @app.post("/_admin/faults", include_in_schema=False)
    async def set_faults(request: Request, _: AdminCaller) -> JSONResponse:
        try:
            data = await request.json()
        except ValueError:
            raise ApiProblem(400, "body must be a JSON object of fault settings") from None
        if not isinstance(data, dict):
            raise ApiProblem(400, "body must be a JSON object of fault settings")
        base = Faults() if data.pop("reset", False) else injector.faults
        try:
            new = Faults.from_dict(data, base=base)
        except (TypeError, ValueError) as exc:
            raise ApiProblem(400, str(exc)) from None
        injector.configure(new)
        return JSONResponse(injector.faults.to_dict())

    @app.get("/_admin/stats", include_in_schema=False)
    async def get_stats(_: AdminCaller) -> JSONResponse:
        return JSONResponse(injector.stats())

    @app.post("/_admin/stats/reset", include_in_schema=False)
    async def reset_stats(_: AdminCaller) -> JSONResponse:
        injector.reset_stats()
        return JSONResponse(injector.stats())


def _install_openapi(app: FastAPI) -> None:
    """Make the schema say what the server does: validation errors are 400, not 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault(
                        "400",
                        {
                            "description": "Invalid request",
                            "content": {"application/json": {"schema": error_ref}},
                        },
                    )
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
