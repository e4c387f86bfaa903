"""Wiring for one command run: options, the API connection (remote or embedded), state."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.api.settings import LOCAL, check_endpoint_url, resolve_connection
from reconciler.errors import ConfigError, StateError
from reconciler.state.model import State

if TYPE_CHECKING:
    import ssl

    from reconciler.api.client import ApiTokenAPI
    from reconciler.server.embedded import LocalServer
    from reconciler.state.backends import StateBackend

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
        """--state, else $RECONCILER_STATE, else reconciler.yaml's state:, else the default."""
        from reconciler.config import resolve_state_location

        setting = resolve_state_location(self.state)
        if setting is None:
            return str(DEFAULT_STATE)
        log.debug("state %s (from %s)", setting.location, setting.source)
        return setting.location

    def hint_args(self) -> list[str]:
        """The connection options this run was given, as arguments for a command a message
        suggests (so it works when pasted). Never the API key: it stays where it was."""
        import shlex

        args: list[str] = []
        for flag, value in (
            ("--endpoint", self.endpoint),
            ("--state", self.state),
            ("--ca-bundle", self.ca_bundle),
        ):
            if value:
                args += [flag, shlex.quote(value)]
        if self.allow_insecure_http:
            args.append("--allow-insecure-http")
        return args

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
            from reconciler.state.backends import backend_for  # not for validate or --help

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
        # httpx and pydantic cost a fifth of a second to import: only commands that talk
        # to the API pay for them (not --help, validate or state).
        from reconciler.api.client import ApiTokenAPI, RestClient

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
            verify=_tls_verify(options.ca_bundle),
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


def _tls_verify(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """TLS verification: the system's CAs, or those of --ca-bundle (as an SSLContext:
    httpx deprecates passing a path)."""
    if not ca_bundle:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--ca-bundle {ca_bundle}: not a readable PEM file of CA certificates ({exc})"
        ) from None
