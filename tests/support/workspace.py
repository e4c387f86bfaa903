"""A checkout laid out like a user's repository (``manifests/``, ``state/``, a secrets file),
bound to a running local API, and the CLI runs made in it.

How a run reaches the API is the workspace's ``connection``: ``"flags"`` passes
``--endpoint``, ``--api-key`` and ``--state`` on every command line; ``"env"`` sets BentoML's
variables and leaves the state at its default place, so commands run exactly as a user or
a CI job types them. Runs are real processes unless ``fast`` (then ``main()`` runs in this
process: same code, about ten times faster). What really exists is read from the server's
own store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from reconciler.server.store import TokenRecord
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.model import State
from support.cli import CliResult, Env, run_cli, run_cli_subprocess
from support.leaks import REGISTRY
from support.local_api import LocalApi

CREATE_ROUTE = "POST /api/v1/api_tokens"
DELETE_ROUTE = "DELETE /api/v1/api_tokens/{uid}"

Connection = Literal["flags", "env"]


def token(name: str, scopes: Sequence[str] = ("api",), **extra: Any) -> dict[str, Any]:
    """One manifest entry."""
    return {"name": name, "scopes": list(scopes), **extra}


class Workspace:
    """A repository checkout with manifests, a local state file and a secrets file, bound to
    ``api``. ``secrets`` is the secrets file's path under ``root``; ``fast`` and
    ``parallelism`` are the defaults of this workspace's runs and applies."""

    def __init__(
        self,
        root: Path,
        api: LocalApi,
        *,
        connection: Connection = "flags",
        secrets: str = "secrets.json",
        fast: bool = False,
        parallelism: int | None = None,
    ) -> None:
        self.root = root
        self.api = api
        self.connection = connection
        self.fast = fast
        self.parallelism = parallelism
        self.manifests = root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.state_path = root / "state" / "tokens.state.json"
        self.secrets_path = root / secrets
        # What declare() wrote last: name -> manifest entry.
        self.specs: dict[str, dict[str, Any]] = {}
        # Variables every run gets (more may be added by a subclass).
        self.env: dict[str, str] = {}
        if connection == "env":
            self.env["BENTO_CLOUD_API_ENDPOINT"] = api.url
            self.env["BENTO_CLOUD_API_KEY"] = api.admin_key

    # -- paths -----------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        """The file declare() writes."""
        return self.manifests / "tokens.yaml"

    @property
    def lock(self) -> Path:
        return self.state_path.with_name(self.state_path.name + ".lock")

    # -- manifests -------------------------------------------------------------------------

    def declare(self, *tokens: Mapping[str, Any], file: str = "tokens.yaml") -> None:
        """Make ``manifests/`` hold exactly ``tokens``, in one file."""
        for old in self.manifests.glob("*.yaml"):
            old.unlink()
        # Through JSON: shared lists would otherwise be dumped as YAML aliases, which
        # manifests refuse.
        entries = json.loads(json.dumps([dict(t) for t in tokens]))
        self.specs = {entry["name"]: entry for entry in entries}
        text = yaml.safe_dump({"tokens": entries}, sort_keys=False)
        (self.manifests / file).write_text(text, encoding="utf-8")

    # -- running the CLI -------------------------------------------------------------------

    def connection_args(self) -> list[str]:
        """What every command line starts with: the flags, or nothing (the environment)."""
        if self.connection == "env":
            return []
        return [
            "--endpoint",
            self.api.url,
            "--api-key",
            self.api.admin_key,
            "--state",
            str(self.state_path),
        ]

    def run(
        self,
        *args: str,
        fast: bool | None = None,
        env: Env | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> CliResult:
        """``reconciler ARGS`` in the workspace: a real process (stdin not a tty), or in
        this process when ``fast``."""
        full: dict[str, str | None] = {**self.env, **(env or {})}
        command = [*self.connection_args(), *args]
        if self.fast if fast is None else fast:
            return run_cli(*command, cwd=self.root, env=full, input=input)
        return run_cli_subprocess(*command, cwd=self.root, env=full, input=input, timeout=timeout)

    def call(self, *args: str, env: Env | None = None, input: str | None = None) -> CliResult:
        """The same command run in this process: for setup steps and checks beside the
        behaviour under test."""
        return self.run(*args, fast=True, env=env, input=input)

    def setup(self, *args: str) -> CliResult:
        """Run a setup command in this process; it must succeed."""
        result = self.call(*args)
        assert result.exit_code == 0, str(result)
        return result

    def plan(self, *args: str, fast: bool | None = None) -> CliResult:
        return self.run("plan", *args, fast=fast)

    def apply_command(
        self, *args: str, to: Sequence[str | Path] | None = None, parallelism: int | None = None
    ) -> list[str]:
        """``apply --auto-approve``, new values to ``to`` (default: the secrets file)."""
        command = ["apply", "--auto-approve"]
        for destination in [self.secrets_path] if to is None else to:
            command += ["--secrets-out", str(destination)]
        parallelism = self.parallelism if parallelism is None else parallelism
        if parallelism is not None:
            command += ["--parallelism", str(parallelism)]
        return [*command, *args]

    def apply(
        self,
        *args: str,
        to: Sequence[str | Path] | None = None,
        parallelism: int | None = None,
        fast: bool | None = None,
        env: Env | None = None,
        timeout: float = 120,
    ) -> CliResult:
        """``apply --auto-approve`` with new values to ``to`` (default: the secrets file);
        the values and state files it left are then recorded for the leak scan."""
        command = self.apply_command(*args, to=to, parallelism=parallelism)
        result = self.run(*command, fast=fast, env=env, timeout=timeout)
        self.record()
        return result

    def apply_args(self, *args: str, parallelism: int | None = None) -> list[str]:
        """The whole command line of an apply, for a run started in the background."""
        return [*self.connection_args(), *self.apply_command(*args, parallelism=parallelism)]

    def plan_args(self, *args: str) -> list[str]:
        return [*self.connection_args(), "plan", *args]

    def converge(self, *tokens: Mapping[str, Any]) -> dict[str, str]:
        """Declare ``tokens``, apply (in-process) and return the owned name -> uid."""
        self.declare(*tokens)
        result = self.apply(fast=True)
        assert result.exit_code == 0, result
        return self.owned()

    def record(self) -> None:
        """Register the secrets file's values as secrets and the state files as artifacts."""
        if self.secrets_path.is_file():
            REGISTRY.add_sink_file(self.secrets_path)
        REGISTRY.record_state_files(self.state_path)

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        return data

    def read_state(self) -> State | None:
        """The state as reconciler reads it (journal included); None before the first write."""
        return LocalStateBackend(self.state_path).read()

    def backup(self) -> dict[str, Any]:
        path = self.state_path.with_name(self.state_path.name + ".backup")
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def owned(self) -> dict[str, str]:
        """name -> uid of the tokens state owns (none before the first state write)."""
        if not self.state_path.exists():
            return {}
        return {item["name"]: item["uid"] for item in self.state()["tokens"]}

    def pending(self) -> list[str]:
        """Names of the creates state records as started but not finished."""
        if not self.state_path.exists():
            return []
        return [item["name"] for item in self.state()["pending_creates"]]

    # -- secrets ---------------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.secrets_path.read_text(encoding="utf-8"))
        return data

    def sink_values(self) -> dict[str, str]:
        """The secrets file's name -> value, each registered as a secret for the leak scan."""
        return REGISTRY.add_sink_file(self.secrets_path)

    def uid_of_secret(self, value: str) -> str | None:
        """The uid of the live token whose value is ``value`` (None if none is)."""
        principal = self.api.store.authenticate(value)
        return principal.token_uid if principal is not None else None

    # -- what is live ----------------------------------------------------------------------

    def live(self) -> list[TokenRecord]:
        """The live (not deleted) tokens."""
        store = self.api.store
        records, _total = store.list_tokens(store.default_user, count=1_000_000)
        return records

    def live_by_name(self) -> dict[str, list[str]]:
        """name -> uids of the live tokens."""
        names: dict[str, list[str]] = {}
        for record in self.live():
            names.setdefault(record.name, []).append(record.uid)
        return names

    def seed(
        self, name: str, scopes: Sequence[str] = ("api",), description: str = "", **fields: Any
    ) -> str:
        """A token made outside reconciler (by hand, or by another tool); returns its uid."""
        store = self.api.store
        record, _value = store.create_token(
            store.default_user, name, description=description, scopes=scopes, **fields
        )
        return record.uid

    def delete_by_hand(self, uid: str) -> None:
        store = self.api.store
        assert store.delete_token(store.default_user, uid) is not None

    def writes(self) -> dict[str, int]:
        """Creates and deletes the API received since the last reset_stats()."""
        requests = self.api.stats()["requests"]
        return {
            "create": int(requests.get(CREATE_ROUTE, 0)),
            "delete": int(requests.get(DELETE_ROUTE, 0)),
        }


# make_ws(**server_options): a workspace on a local API of its own (tests/conftest.py).
WorkspaceFactory = Callable[..., Workspace]
