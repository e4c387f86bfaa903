"""Shared fixtures: the local API running for real on 127.0.0.1, reached over HTTP; the
workspace bound to it; and the secret stores (OpenBao, moto) for the delivery tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import leaks
from support.leaks import REGISTRY, leak_registry, leakcheck_session, pytest_terminal_summary
from support.local_api import LocalApi, LocalApiFactory
from support.moto import AWS_ENV, CLEARED_ENV, AuthMoto, start_moto
from support.openbao import start_openbao
from support.stores import Stores, StoreWorkspace
from support.workspace import Connection, Workspace, WorkspaceFactory

from reconciler.server.embedded import LocalServer
from reconciler.server.faults import Faults

# The secrets-leak scan (support/leaks.py): its session fixture scans every recorded
# artifact for every secret at the end, and the summary says how much was scanned.
leaks.install()
__all__ = ["leak_registry", "leakcheck_session", "pytest_terminal_summary"]


@pytest.fixture
def local_api_factory(tmp_path: Path) -> Iterator[LocalApiFactory]:
    """Start local APIs with custom options (``max_page_size``, ``faults``, ``api_key``,
    ``db_path``, ``allow_duplicate_names``, ``update_route``); every one is stopped at
    teardown. Names are unique among live tokens by default, as on Yatai."""
    started: list[LocalServer] = []

    def start(
        *,
        db_path: Path | None = None,
        api_key: str | None = None,
        faults: Faults | None = None,
        max_page_size: int = 1000,
        allow_duplicate_names: bool = False,
        update_route: bool = True,
    ) -> LocalApi:
        path = db_path or tmp_path / f"local-api-{len(started)}.db"
        server = LocalServer(
            path,
            api_key=api_key,
            faults=faults,
            max_page_size=max_page_size,
            allow_duplicate_names=allow_duplicate_names,
            update_route=update_route,
        )
        started.append(server)
        server.start()
        return LocalApi(server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def local_api(local_api_factory: LocalApiFactory) -> LocalApi:
    """A fresh local API with an empty database of its own."""
    return local_api_factory()


@pytest.fixture(scope="session")
def shared_local_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    """One local API for the whole session, for tests that only add uniquely named tokens.
    Faults are off when a test starts; stats are shared, so reset them before counting."""
    path = tmp_path_factory.mktemp("shared-local-api") / "local.db"
    server = LocalServer(path)
    server.start()
    try:
        yield LocalApi(server)
    finally:
        server.stop()


@pytest.fixture
def shared_api(shared_local_api: LocalApi) -> Iterator[LocalApi]:
    """``shared_local_api`` with faults reset before and after the test."""
    shared_local_api.server.injector.reset()
    yield shared_local_api
    shared_local_api.server.injector.reset()


# ---------------------------------------------------------------- the workspace


def _connection(request: pytest.FixtureRequest) -> Connection:
    """``env`` for a test marked ``env_connection``, else ``flags``."""
    return "env" if request.node.get_closest_marker("env_connection") else "flags"


@pytest.fixture
def ws(request: pytest.FixtureRequest, tmp_path: Path, local_api: LocalApi) -> Workspace:
    """A repository checkout (``repo/``) bound to ``local_api``. Runs pass the connection as
    flags, or, for a test or module marked ``env_connection``, through BentoML's variables
    with the state at its default place (support/workspace.py)."""
    return Workspace(tmp_path / "repo", local_api, connection=_connection(request))


@pytest.fixture
def make_ws(
    request: pytest.FixtureRequest, tmp_path: Path, local_api_factory: LocalApiFactory
) -> WorkspaceFactory:
    """``make_ws(**server_options)``: another workspace like ``ws``, on a local API of its
    own started with those options (see ``local_api_factory``)."""

    def make(**server: object) -> Workspace:
        root = tmp_path / f"repo-{len(list(tmp_path.glob('repo-*')))}"
        return Workspace(root, local_api_factory(**server), connection=_connection(request))

    return make


# ---------------------------------------------------------------- secret stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """OpenBao's dev server and moto's Secrets Manager, once per module; their credentials
    are looked for in every artifact of the session."""
    bao = start_openbao(tmp_path_factory.mktemp("openbao-cli"))
    REGISTRY.add_secret(bao.root_token, "vault token (VAULT_TOKEN)")
    REGISTRY.add_secret(AWS_ENV["AWS_SECRET_ACCESS_KEY"], "AWS secret access key")
    try:
        moto = start_moto(tmp_path_factory.mktemp("moto-cli"), AWS_ENV, service="secretsmanager")
        try:
            yield Stores(bao, moto)
        finally:
            moto.stop()
    finally:
        bao.stop()


@pytest.fixture
def store_ws(
    stores: Stores, local_api: LocalApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StoreWorkspace:
    """A workspace delivering to ``stores`` on a fresh local API; the developer's AWS and
    Vault settings removed."""
    for name in (*CLEARED_ENV, "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    return StoreWorkspace(tmp_path / "ws", local_api, stores)


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """moto enforcing IAM after its set-up requests: a writer and a user with no policy."""
    setup_actions = 5
    server = start_moto(
        tmp_path_factory.mktemp("moto-sm-auth"),
        AWS_ENV,
        service="secretsmanager",
        INITIAL_NO_AUTH_ACTION_COUNT=str(setup_actions),
    )
    try:
        iam = server.client("iam")
        users = {}
        for user in ("writer", "nobody"):  # 2 requests each
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            users[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
            REGISTRY.add_secret(key["SecretAccessKey"], "aws-secret-key")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}],
        }
        iam.put_user_policy(  # 5
            UserName="writer", PolicyName="sm", PolicyDocument=json.dumps(policy)
        )
        yield AuthMoto(server=server, writer=users["writer"], nobody=users["nobody"])
    finally:
        server.stop()
