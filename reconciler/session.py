"""The wiring of one run: its settings, reconciler.yaml (read once), the API connection
(remote or embedded) and the state backend, each opened when first needed and closed at
the end."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.api.settings import LOCAL, check_endpoint_url, resolve_connection
from reconciler.defaults import LOCAL_DB_NAME, STATE_PATH
from reconciler.errors import ConfigError, StateError
from reconciler.state.model import State

if TYPE_CHECKING:
    import ssl

    from reconciler.api.client import ApiTokenAPI
    from reconciler.config import Config
    from reconciler.server.embedded import LocalServer
    from reconciler.state.backends import StateBackend

log = logging.getLogger("reconciler")


@dataclass
class SessionSettings:
    """What a run connects to and where its state is: the global options of the CLI, or a
    library caller's choice. Unset fields fall back to the environment, reconciler.yaml
    and BentoML's own configuration."""

    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    state: str | None = None
    allow_insecure_http: bool = False
    ca_bundle: str | None = None
    timeout: float = 30.0
    #: reconciler.yaml to read (None: ./reconciler.yaml).
    config_path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.endpoint == LOCAL


class Session:
    """Opens what a command needs, lazily, and closes it all at the end."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self._stack = ExitStack()
        self._config: Config | None = None
        self._state_location: str | None = None
        self._api: ApiTokenAPI | None = None
        self._backend: StateBackend | None = None
        self._endpoint_id: str | None = None
        self.local_server: LocalServer | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def config(self) -> Config:
        """reconciler.yaml, parsed once per run."""
        if self._config is None:
            from reconciler.config import load_config  # YAML: --help does not read the file

            self._config = load_config(self.settings.config_path)
        return self._config

    @property
    def state_location(self) -> str:
        """--state, else $RECONCILER_STATE, else reconciler.yaml's state:, else the default."""
        if self._state_location is None:
            from reconciler.config import resolve_state_location  # as config, above

            setting = resolve_state_location(self.settings.state, self.config)
            if setting is None:
                self._state_location = STATE_PATH
            else:
                log.debug("state %s (from %s)", setting.location, setting.source)
                self._state_location = setting.location
        return self._state_location

    def updates(self, flag: str | None) -> str:
        """The update mode: --updates (``flag``), $RECONCILER_UPDATES, reconciler.yaml."""
        from reconciler.config import resolve_updates  # as config, above

        return resolve_updates(flag, self.config)

    def configured_destinations(self) -> tuple[str, ...]:
        """reconciler.yaml's ``secrets:`` list (empty when there is none)."""
        setting = self.config.secrets
        return setting.destinations if setting is not None else ()

    def backend_for(self, location: str) -> StateBackend:
        """A state backend for another location (``state migrate --to``)."""
        from reconciler.state.backends import backend_for  # not for validate or --help

        return backend_for(location)

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            self._backend = self.backend_for(self.state_location)
        return self._backend

    def local_db_path(self) -> Path:
        """The embedded API's database lives beside a local state, else under state/."""
        location = self.state_location
        base = Path(location).parent if "://" not in location else Path(STATE_PATH).parent
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

        settings = self.settings
        if settings.is_local:
            from reconciler.server.embedded import LocalServer

            server = LocalServer(db_path=self.local_db_path())
            self._stack.enter_context(server)
            self.local_server = server
            url, key, endpoint_id = server.url, server.admin_key, LOCAL
        else:
            connection = resolve_connection(endpoint=settings.endpoint, api_key=settings.api_key)
            check_endpoint_url(
                connection.endpoint, allow_insecure_http=settings.allow_insecure_http
            )
            url, key, endpoint_id = connection.endpoint, connection.api_key, connection.endpoint
            log.debug("connecting to %s (%s)", connection.endpoint, connection.source)
        client = RestClient(
            endpoint=url,
            api_key=key,
            timeout=settings.timeout,
            verify=_tls_verify(settings.ca_bundle),
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
