"""Running the local API: in a background thread (LocalServer) or in the foreground (serve)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import uvicorn

from reconciler.errors import ConfigError
from reconciler.server.app import AUTH_HEADER, create_app
from reconciler.server.faults import FaultInjector, Faults
from reconciler.server.store import Store, new_admin_key
from reconciler.util import atomicfile

MEMORY = ":memory:"


def admin_key_path(db_path: str | os.PathLike[str]) -> Path:
    """Where the admin key of a database is kept: ``<db>.admin-key``, mode 0600."""
    return Path(str(db_path) + ".admin-key")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    target = atomicfile.resolve(path)
    # Older releases wrote the key through a fixed "<name>.tmp", left behind by a crash.
    atomicfile.discard(target.with_name(target.name + ".tmp"))
    atomicfile.remove_stale_temps(target)
    atomicfile.atomic_write(target, text, 0o600)


def resolve_admin_key(
    store: Store, db_path: str | os.PathLike[str], api_key: str | None = None
) -> tuple[str, bool]:
    """The admin key to serve with, and whether it was newly generated (so must be shown).

    An explicit ``api_key`` becomes the one admin key. Otherwise the key in
    ``<db>.admin-key`` is reused while the database still accepts it; failing that (first
    start, or the file was lost: only the hash is stored) a new key replaces the old one.
    The key file is kept current in every case so that every process sharing the
    database agrees on the key.
    """
    in_memory = str(db_path) == MEMORY
    key_file = admin_key_path(db_path)
    if api_key:
        if not store.is_admin_key(api_key):
            store.set_admin_key(api_key)
        if not in_memory:
            _write_private(key_file, api_key + "\n")
        return api_key, False
    if not in_memory and key_file.is_file():
        stored = key_file.read_text(encoding="utf-8").strip()
        if stored and store.is_admin_key(stored):
            return stored, False
    value = new_admin_key()
    store.set_admin_key(value)
    if not in_memory:
        _write_private(key_file, value + "\n")
    return value, True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
    # protocol says TCP, and without it every keep-alive response waits ~40 ms (Nagle and
    # delayed ACK) because uvicorn writes the headers and the body separately.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening before uvicorn starts means early connections queue instead of failing.
        sock.listen(2048)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); another server may hold the "
            "port: pass --port with a free one (--port 0 picks one)"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class LocalServer:
    """The local API on a background thread, for tests and ``--endpoint local``.

    ::

        with LocalServer("state/local.db") as server:
            client = httpx.Client(base_url=server.url, headers=server.headers)
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        api_key: str | None = None,
        faults: Faults | None = None,
        max_page_size: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        *,
        allow_duplicate_names: bool = False,
        update_route: bool = True,
    ) -> None:
        self.db_path = str(db_path)
        self.host = host
        self.max_page_size = max_page_size
        self.allow_duplicate_names = allow_duplicate_names
        self.update_route = update_route
        self.log_level = log_level
        self.injector = FaultInjector(faults)
        self._requested_key = api_key
        self._requested_port = port
        self._port: int | None = None
        self._admin_key: str | None = None
        self._store: Store | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (what BENTO_CLOUD_API_ENDPOINT takes)."""
        if self._port is None:
            raise RuntimeError("LocalServer is not started")
        return _url(self.host, self._port)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalServer is not started")
        return self._port

    @property
    def admin_key(self) -> str:
        if self._admin_key is None:
            raise RuntimeError("LocalServer is not started")
        return self._admin_key

    @property
    def headers(self) -> dict[str, str]:
        return {AUTH_HEADER: self.admin_key}

    @property
    def store(self) -> Store:
        """The server's own store: tests may seed or inspect it directly (it is thread-safe)."""
        if self._store is None:
            raise RuntimeError("LocalServer is not started")
        return self._store

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault settings at runtime (without HTTP)."""
        return self.injector.update(**changes)

    def stats(self) -> dict[str, Any]:
        return self.injector.stats()

    def start(self, timeout: float = 10.0) -> LocalServer:
        if self.running:
            return self
        store = Store(self.db_path)
        try:
            self._admin_key, _ = resolve_admin_key(store, self.db_path, self._requested_key)
            # Later starts reuse this key, so a restart keeps every client working.
            self._requested_key = self._admin_key
            port = self._port if self._port is not None else self._requested_port
            sock = _bind(self.host, port)
        except BaseException:
            store.close()
            raise
        self._store = store
        self._port = sock.getsockname()[1]
        app = create_app(
            store,
            self.injector,
            max_page_size=self.max_page_size,
            allow_duplicate_names=self.allow_duplicate_names,
            update_route=self.update_route,
        )
        config = uvicorn.Config(
            app,
            log_level=self.log_level,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=self._run, args=(server, sock), name="reconciler-local-api", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local API did not start on {self.host}:{self._port}")
            time.sleep(0.005)
        return self

    @staticmethod
    def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the database; the port is kept for a later start()."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
        self._server = self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def restart(self) -> None:
        """Stop and start again on the same port and database (faults and stats persist)."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_server(
    host: str,
    port: int,
    db_path: str | os.PathLike[str],
    api_key: str | None = None,
    faults: Faults | None = None,
    max_page_size: int = 1000,
    *,
    log_level: str = "info",
    stream: TextIO | None = None,
    allow_duplicate_names: bool = False,
    update_route: bool = True,
) -> None:
    """Serve in the foreground until interrupted (``reconciler serve``); names are unique
    among a user's live tokens unless ``allow_duplicate_names``.

    A newly generated admin key is printed once, to ``stream`` (stderr), with the
    environment to use it; later starts only say where the key file is.
    """
    store = Store(db_path)
    try:
        key, created = resolve_admin_key(store, db_path, api_key)
        sock = _bind(host, port)
    except BaseException:
        store.close()
        raise
    _announce(
        stream or sys.stderr, _url(host, sock.getsockname()[1]), db_path, key, created, api_key
    )
    app = create_app(
        store,
        faults,
        max_page_size=max_page_size,
        allow_duplicate_names=allow_duplicate_names,
        update_route=update_route,
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        store.close()


def _announce(
    out: TextIO,
    url: str,
    db_path: str | os.PathLike[str],
    key: str,
    created: bool,
    api_key: str | None,
) -> None:
    """Say where the API is and how to use its admin key; a new key is shown only once."""
    key_file = admin_key_path(db_path)
    in_memory = str(db_path) == MEMORY
    print(f"reconciler local API on {url} (database {db_path})", file=out)
    if created:
        print(
            "A new admin API key was generated; it is shown only this once"
            + ("" if in_memory else f" and saved to {key_file} (mode 0600)")
            + ":\n\n"
            f"    export BENTO_CLOUD_API_ENDPOINT={url}\n"
            f"    export BENTO_CLOUD_API_KEY={key}\n",
            file=out,
        )
    elif api_key:
        print("Using the admin API key given with --api-key.", file=out)
    else:
        print(
            f"Admin API key: in {key_file}; use it with\n\n"
            f"    export BENTO_CLOUD_API_ENDPOINT={url}\n"
            f'    export BENTO_CLOUD_API_KEY="$(cat {key_file})"\n',
            file=out,
        )
    out.flush()
