"""Wiring for one command run: options, the API connection (remote or embedded), state."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.backends import StateBackend, backend_for
from reconciler.client import ApiTokenAPI, RestClient
from reconciler.errors import StateError
from reconciler.settings import LOCAL, check_endpoint_url, resolve_connection
from reconciler.state import State

if TYPE_CHECKING:
    from reconciler.server.embedded import LocalServer

log = logging.getLogger("reconciler")

DEFAULT_STATE = Path("state") / "tokens.state.json"
LOCAL_DB_NAME = "local-api.sqlite3"


@dataclass
class Options:
    """Global options, settable before or after the subcommand name."""

    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    state: str | None = None
    verbose: int = 0
    color: bool | None = None
    allow_insecure_http: bool = False
    ca_bundle: str | None = None
    timeout: float = 30.0

    @property
    def state_location(self) -> str:
        return self.state or str(DEFAULT_STATE)

    @property
    def is_local(self) -> bool:
        return self.endpoint == LOCAL


class Runtime:
    """Opens what a command needs, lazily, and closes it all at the end."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._stack = ExitStack()
        self._api: ApiTokenAPI | None = None
        self._backend: StateBackend | None = None
        self._endpoint_id: str | None = None
        self.local_server: LocalServer | None = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            self._backend = backend_for(self.options.state_location)
        return self._backend

    def local_db_path(self) -> Path:
        """The embedded API's database lives beside the default state, under state/."""
        location = self.options.state_location
        base = Path(location).parent if "://" not in location else DEFAULT_STATE.parent
        return base / LOCAL_DB_NAME

    @property
    def endpoint_id(self) -> str:
        """The endpoint state is bound to ('local' for the embedded API)."""
        if self._endpoint_id is None:
            self._connect()
        assert self._endpoint_id is not None
        return self._endpoint_id

    @property
    def api(self) -> ApiTokenAPI:
        if self._api is None:
            self._connect()
        assert self._api is not None
        return self._api

    def _connect(self) -> None:
        options = self.options
        if options.is_local:
            from reconciler.server.embedded import LocalServer

            server = LocalServer(db_path=self.local_db_path())
            self._stack.enter_context(server)
            self.local_server = server
            url, key, endpoint_id = server.url, server.admin_key, LOCAL
        else:
            connection = resolve_connection(endpoint=options.endpoint, api_key=options.api_key)
            check_endpoint_url(connection.endpoint, allow_insecure_http=options.allow_insecure_http)
            url, key, endpoint_id = connection.endpoint, connection.api_key, connection.endpoint
            log.debug("connecting to %s (%s)", connection.endpoint, connection.source)
        client = RestClient(
            endpoint=url,
            api_key=key,
            timeout=options.timeout,
            verify=options.ca_bundle or True,
        )
        self._stack.callback(client.close)
        self._api = ApiTokenAPI(client)
        self._endpoint_id = endpoint_id

    def read_state(self) -> State:
        """The stored state (or a new one) after checking it belongs to this endpoint."""
        state = self.backend.read()
        if state is None:
            return State.new(self.endpoint_id)
        if state.endpoint != self.endpoint_id:
            raise StateError(
                f"state {self.backend.describe()} belongs to endpoint {state.endpoint}, not "
                f"{self.endpoint_id}; pass the matching --endpoint, or use another --state file"
            )
        return state
