"""``vault://MOUNT/PATH``: one KV version 2 secret per token in HashiCorp Vault or OpenBao.

Settings come from the variables the ``vault`` CLI reads: ``VAULT_ADDR`` (default
https://127.0.0.1:8200), ``VAULT_TOKEN`` (else ``~/.vault-token``), ``VAULT_NAMESPACE``
and ``VAULT_CACERT`` / ``VAULT_CAPATH``. hvac is imported only when a vault destination
is checked or used (extra ``vault``), so nothing here is on the start-up path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from reconciler.destinations.base import Delivery, Undo
from reconciler.errors import (
    DeliveryFailedError,
    DestinationCheckError,
    DestinationError,
    UndoFailedError,
    redact,
)
from reconciler.util.text import one_line

INSTALL_HINT = "pip install 'bentocloud-reconciler[vault]'"
DEFAULT_ADDR = "https://127.0.0.1:8200"
TIMEOUT_SECONDS = 15.0
_WRITE = frozenset({"create", "update"})
_T = TypeVar("_T")


@dataclass(frozen=True)
class VaultSettings:
    """Where Vault is and how to authenticate; ``token`` is never shown."""

    addr: str
    token: str | None
    namespace: str | None
    verify: str | bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VaultSettings:
        env = os.environ if env is None else env
        token = env.get("VAULT_TOKEN") or _token_file(env)
        verify: str | bool = env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or True
        return cls(
            addr=env.get("VAULT_ADDR") or DEFAULT_ADDR,
            token=token,
            namespace=env.get("VAULT_NAMESPACE") or None,
            verify=verify,
        )

    def __repr__(self) -> str:
        return f"VaultSettings(addr={self.addr!r}, namespace={self.namespace!r})"


def _token_file(env: Mapping[str, str]) -> str | None:
    """The vault CLI's default token helper keeps the token of `vault login` here."""
    home = env.get("HOME")
    path = Path(home) / ".vault-token" if home else Path.home() / ".vault-token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _public_addr(addr: str) -> str:
    """The address without any user:password an operator may have put in it."""
    parts = urlsplit(addr)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else addr


class VaultDestination:
    """KV v2 secrets at ``MOUNT/PATH/NAME`` (or PATH with ``{name}`` replaced)."""

    irreversible = False

    def __init__(self, mount: str, path: str, *, settings: VaultSettings | None = None) -> None:
        self.mount = mount
        self.path = path
        self._settings = settings
        self._client_cache: Any = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> VaultSettings:
        if self._settings is None:
            self._settings = VaultSettings.from_env()
        return self._settings

    def secret_path(self, name: str) -> str:
        """The path of ``name``'s secret inside the mount."""
        return self.path.replace("{name}", name) if "{name}" in self.path else f"{self.path}/{name}"

    def describe(self) -> str:
        where = _public_addr(self.settings.addr)
        space = f", namespace {self.settings.namespace}" if self.settings.namespace else ""
        return f"vault://{self.mount}/{self.path} (KV v2 at {where}{space})"

    def __repr__(self) -> str:
        return f"VaultDestination({self.mount!r}, {self.path!r})"

    # ------------------------------------------------------------------ check

    def check(self, names: Collection[str] = ()) -> None:
        self._client()  # first, so a missing hvac or token is reported as such
        paths = [f"{self.mount}/data/{self.secret_path(n)}" for n in sorted(names)]
        probe = paths or [f"{self.mount}/data/{self.secret_path('reconciler-check')}"]
        caps = self._call(
            DestinationCheckError,
            "checking the token",
            self._capabilities,
            probe,
            refused_hint="check VAULT_TOKEN (or `vault login`) and VAULT_NAMESPACE; the "
            "token's policies must allow sys/capabilities-self (the default policy does)",
        )
        self._check_mount()
        for path in paths:
            have = set(caps.get(path, ()))
            if "root" not in have and not have >= _WRITE:
                raise DestinationCheckError(
                    self.describe(),
                    f"the token's policies do not allow create and update on {path} "
                    f"(allowed: {', '.join(sorted(have)) or 'nothing'})",
                    hint=f'grant path "{path}" {{ capabilities = ["create", "update", "read"] }}',
                )

    def _capabilities(self, paths: list[str]) -> dict[str, list[str]]:
        answer = self._client().adapter.post("/v1/sys/capabilities-self", json={"paths": paths})
        data = answer.get("data", answer) if isinstance(answer, dict) else {}
        return {p: list(data.get(p, ())) for p in paths}

    def _check_mount(self) -> None:
        try:
            answer = self._call(
                DestinationCheckError,
                f"looking up mount {self.mount}/",
                self._client().adapter.get,
                f"/v1/sys/internal/ui/mounts/{self.mount}",
            )
        except DestinationCheckError as exc:
            raise DestinationCheckError(
                self.describe(),
                f"no mount {self.mount}/ that this token can use ({exc.reason})",
                hint="check the MOUNT in vault://MOUNT/PATH and the token's policies",
            ) from None
        data = answer.get("data", {}) if isinstance(answer, dict) else {}
        kind = data.get("type")
        version = str((data.get("options") or {}).get("version", "1"))
        if kind != "kv" or version != "2":
            raise DestinationCheckError(
                self.describe(),
                f"{self.mount}/ is a {kind} mount (version {version}), not KV version 2",
                hint=f"use a KV v2 mount, e.g. `vault secrets enable -path={self.mount} kv-v2`",
            )

    # ---------------------------------------------------------------- deliver

    def forget(self, name: str) -> None:
        """Vault keeps every version; the next delivery under the name replaces it."""

    def deliver(self, delivery: Delivery) -> Undo:
        path = self.secret_path(delivery.name)
        kv = self._client().secrets.kv.v2
        answer = self._call(
            DeliveryFailedError,
            f"writing {self.mount}/{path}",
            kv.create_or_update_secret,
            path=path,
            secret=delivery.document(),
            mount_point=self.mount,
            secrets=(delivery.value,),
        )
        version = int(answer["data"]["version"])
        return lambda: self._undo(path, version)

    def _undo(self, path: str, version: int) -> None:
        """Make the version before ``version`` current again, or remove a new secret."""
        kv = self._client().secrets.kv.v2
        where = f"putting back {self.mount}/{path}"
        if version == 1:
            self._remove_new(path, where)
            return
        before = self._call(
            UndoFailedError, where, kv.read_secret_version,
            path=path, version=version - 1, mount_point=self.mount,
            raise_on_deleted_version=False,
        )  # fmt: skip
        data = (before or {}).get("data") or {}
        if data.get("data") is None:
            # The version before was deleted or destroyed: leave the secret deleted again.
            self._call(
                UndoFailedError, where, kv.delete_secret_versions,
                path=path, versions=[version], mount_point=self.mount,
            )  # fmt: skip
            return
        # KV's own rollback: the old data written back as a new version, but only if
        # nobody wrote after us (cas), so a concurrent writer's value is never replaced.
        self._call(
            UndoFailedError, where, kv.create_or_update_secret,
            path=path, secret=data["data"], cas=version, mount_point=self.mount,
            secrets=tuple(str(v) for v in data["data"].values()),
        )  # fmt: skip

    def _remove_new(self, path: str, where: str) -> None:
        """Remove a secret this delivery created, unless someone wrote to it since."""
        kv = self._client().secrets.kv.v2
        metadata = self._call(
            UndoFailedError, where, kv.read_secret_metadata, path=path, mount_point=self.mount
        )
        current = int(((metadata or {}).get("data") or {}).get("current_version", 0))
        if current != 1:
            raise UndoFailedError(
                self.describe(),
                f"{where}: version {current} was written after ours; left as it is",
            )
        self._call(
            UndoFailedError, where, kv.delete_metadata_and_all_versions,
            path=path, mount_point=self.mount,
        )  # fmt: skip

    # ---------------------------------------------------------------- plumbing

    def _client(self) -> Any:
        with self._lock:  # apply delivers from several threads (--parallelism)
            return self._make_client()

    def _make_client(self) -> Any:
        if self._client_cache is None:
            try:
                import hvac
            except ImportError:
                raise DestinationCheckError(
                    self.describe(), "the hvac package is not installed", hint=INSTALL_HINT
                ) from None
            settings = self.settings
            if not settings.token:
                raise DestinationCheckError(
                    self.describe(),
                    "no Vault token",
                    hint="set VAULT_TOKEN (or log in with `vault login` / `bao login`)",
                )
            self._client_cache = hvac.Client(
                url=settings.addr,
                token=settings.token,
                namespace=settings.namespace,
                verify=settings.verify,
                timeout=TIMEOUT_SECONDS,
            )
        return self._client_cache

    def _call(
        self,
        error: type[DestinationError],
        what: str,
        fn: Callable[..., _T],
        *args: Any,
        secrets: tuple[str, ...] = (),
        refused_hint: str | None = None,
        **kwargs: Any,
    ) -> _T:
        """``fn(*args, **kwargs)`` with hvac's and requests' exceptions turned into
        ``error``, naming what was being done and Vault's reason, credentials removed."""
        import hvac.exceptions

        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            reason = self._reason(exc)
            if reason is None:
                raise
            refused = isinstance(exc, (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized))
            hidden = (self.settings.token, *secrets)
            raise error(
                self.describe(),
                redact(f"{what}: {reason}", hidden),
                hint=refused_hint if refused else None,
            ) from None

    def _reason(self, exc: Exception) -> str | None:
        import hvac.exceptions
        import requests

        if isinstance(exc, hvac.exceptions.VaultError):
            errors = exc.errors if isinstance(exc.errors, list) else [str(exc.args[0])]
            text = one_line("; ".join(str(e) for e in errors if e)) or "no reason given"
            return f"Vault answered {type(exc).__name__} ({text})"
        if isinstance(exc, requests.exceptions.SSLError):
            return "TLS verification failed; set VAULT_CACERT to the CA of Vault's certificate"
        if isinstance(exc, requests.exceptions.RequestException):
            return f"cannot reach {_public_addr(self.settings.addr)} ({type(exc).__name__})"
        return None
