"""What `--help`, `validate` and `plan` import: nothing the run does not use.

Each command runs as a real subprocess under ``python -X importtime`` and the modules it
imported are read from that trace. Only module names are asserted, never timings (they mean
nothing on a shared machine; bench/README.md records the budget). The positive controls
(a plan with drift imports deepdiff, ``--endpoint local`` imports the server) show the
trace is read correctly, so the negative checks cannot pass vacuously.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from support.cli import cli_environment, run_cli
from support.local_api import LocalApi

# Never needed without the embedded server, an S3 state, a store destination or a diff.
SERVER = ("fastapi", "uvicorn", "starlette", "sqlite3", "reconciler.server")
STORES = ("boto3", "botocore", "hvac")
NOT_FOR_PLAN = (*SERVER, *STORES, "deepdiff", "rich", "http.server", "reconciler.apply")
# S3, Vault and AWS code, and the pydantic models of state: validate reads manifests only.
STORE_CODE = (
    "reconciler.state.backends.s3",
    "reconciler.destinations.vault",
    "reconciler.destinations.aws_sm",
)
STATE_MODELS = ("reconciler.state.codec", "reconciler.state.backends", "reconciler.plan.saved")
NOT_FOR_VALIDATE = (
    *NOT_FOR_PLAN,
    *STORE_CODE,
    *STATE_MODELS,
    "httpx",
    "reconciler.api.client",
    "reconciler.api.http",
)
NOT_FOR_HELP = (*NOT_FOR_VALIDATE, "pydantic", "yaml")


def imported_modules(*args: str, cwd: Path) -> set[str]:
    """Every module ``python -X importtime -m reconciler ARGS`` imported (exit 0 asserted)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reconciler", *args],
        cwd=cwd,
        env=cli_environment(cwd),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "reconciler.cli" in modules, "no import trace read"
    return modules


def loaded(modules: set[str], forbidden: Iterable[str]) -> list[str]:
    """The forbidden packages (or any of their submodules) that were imported."""
    return sorted(
        name for name in forbidden if any(m == name or m.startswith(name + ".") for m in modules)
    )


def write_manifest(root: Path, tokens: list[dict[str, object]]) -> Path:
    directory = root / "manifests"
    directory.mkdir(exist_ok=True)
    (directory / "tokens.yaml").write_text(yaml.safe_dump({"tokens": tokens}), encoding="utf-8")
    return directory


def applied_workspace(root: Path, api: LocalApi) -> list[str]:
    """Three tokens created through apply; returns the connection options for plan."""
    write_manifest(root, [{"name": f"imp-{n}", "scopes": ["api"]} for n in range(3)])
    connection = ["--endpoint", api.url, "--api-key", api.admin_key, "--state", "s.json"]
    done = run_cli(*connection, "apply", "--auto-approve", "--secrets-out", "new.json", cwd=root)
    assert done.exit_code == 0, done
    return connection


def test_help_imports_no_client_server_or_models(tmp_path: Path) -> None:
    assert loaded(imported_modules("--help", cwd=tmp_path), NOT_FOR_HELP) == []


CONFIG_FOR_STORES = """\
state: {backend: s3, bucket: acme-tokens, key: prod/tokens.state.json}
secrets: [vault://secret/bentocloud, aws-sm://bentocloud]
"""


def test_help_and_validate_load_no_store_code_even_when_configured(tmp_path: Path) -> None:
    """reconciler.yaml naming S3 state and store destinations changes nothing for --help and
    validate: neither reads it, so neither loads S3, Vault or AWS code."""
    (tmp_path / "reconciler.yaml").write_text(CONFIG_FOR_STORES, encoding="utf-8")
    write_manifest(tmp_path, [{"name": "imp-0", "scopes": ["api"]}])
    assert loaded(imported_modules("--help", cwd=tmp_path), NOT_FOR_HELP) == []
    assert loaded(imported_modules("validate", cwd=tmp_path), NOT_FOR_VALIDATE) == []


def test_validate_checks_store_destinations_without_their_clients(tmp_path: Path) -> None:
    """A manifest's deliver_to naming Vault and Secrets Manager is parsed (our code), but
    neither hvac nor boto3 is imported, nor the state models."""
    destinations = ["vault://secret/bentocloud", "aws-sm://bentocloud"]
    write_manifest(tmp_path, [{"name": "imp-0", "scopes": ["api"], "deliver_to": destinations}])
    modules = imported_modules("validate", cwd=tmp_path)
    assert loaded(modules, (*STORES, *STATE_MODELS, "reconciler.state.backends.s3")) == []
    assert "reconciler.destinations.vault" in modules, "the positive control: parsed"


def _config_imports(cwd: Path) -> set[str]:
    """The modules reading ./reconciler.yaml (once, as a run does) imports."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from reconciler.config import load_config; "
            "load_config(); print('\\n'.join(sys.modules))",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_reading_the_config_loads_the_s3_backend_only_for_s3_state(tmp_path: Path) -> None:
    (tmp_path / "reconciler.yaml").write_text(CONFIG_FOR_STORES, encoding="utf-8")
    assert "reconciler.state.backends.s3" in _config_imports(tmp_path)
    (tmp_path / "reconciler.yaml").write_text(
        "state: {backend: local, path: state/t.json}\nsecrets: [vault://secret/x]\n",
        encoding="utf-8",
    )
    modules = _config_imports(tmp_path)
    assert loaded(modules, ("reconciler.state.backends.s3", *STORES, *STATE_MODELS)) == []
    assert "reconciler.config" in modules


def test_validate_imports_no_client_or_server(tmp_path: Path) -> None:
    write_manifest(tmp_path, [{"name": "imp-0", "scopes": ["api"]}])
    modules = imported_modules("validate", cwd=tmp_path)
    assert loaded(modules, NOT_FOR_VALIDATE) == []
    assert "reconciler.manifest" in modules


def test_plan_against_a_remote_api_imports_no_server_stores_or_deepdiff(
    tmp_path: Path, local_api: LocalApi
) -> None:
    connection = applied_workspace(tmp_path, local_api)
    modules = imported_modules(*connection, "plan", "--detailed-exitcode", cwd=tmp_path)
    assert loaded(modules, NOT_FOR_PLAN) == []
    assert "httpx" in modules


def test_plan_with_drift_imports_deepdiff(tmp_path: Path, local_api: LocalApi) -> None:
    connection = applied_workspace(tmp_path, local_api)
    drift = [{"name": "imp-0", "scopes": ["api", "read_cluster"]}]
    write_manifest(tmp_path, [*drift, *({"name": f"imp-{n}", "scopes": ["api"]} for n in (1, 2))])
    modules = imported_modules(*connection, "plan", cwd=tmp_path)
    assert loaded(modules, ("deepdiff",)) == ["deepdiff"]
    assert loaded(modules, (*SERVER, *STORES)) == []


@pytest.mark.parametrize("command", [("validate",), ("plan",)])
def test_embedded_api_is_the_only_way_to_the_server(tmp_path: Path, command: tuple[str]) -> None:
    write_manifest(tmp_path, [{"name": "imp-0", "scopes": ["api"]}])
    modules = imported_modules("--endpoint", "local", *command, cwd=tmp_path)
    expected = ["fastapi", "reconciler.server", "uvicorn"] if command == ("plan",) else []
    assert loaded(modules, ("fastapi", "uvicorn", "reconciler.server")) == expected


def test_plan_validate_and_help_load_no_store_client(tmp_path: Path) -> None:
    """Destinations in manifests and reconciler.yaml are parsed and named by plan, but
    neither hvac nor boto3 is imported unless a destination is checked or used."""
    import subprocess
    import sys

    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - {name: a, scopes: [api], deliver_to: ['vault://secret/x']}\n"
        "  - {name: b, scopes: [api]}\n",
        encoding="utf-8",
    )
    (tmp_path / "reconciler.yaml").write_text("secrets: ['aws-sm://y']\n", encoding="utf-8")
    script = (
        "import sys\n"
        "from reconciler.cli.main import main\n"
        "for args in (['validate'], ['--help'], ['--endpoint', 'local', '--state', 's.json',"
        " 'plan', '--out', 'p.json']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (args, exc.code)\n"
        "print(sorted(m for m in ('hvac', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert "deliver to: vault://secret/x" in done.stdout
    assert "deliver to: aws-sm://y (AWS Secrets Manager)" in done.stdout
    assert "Apply it with:" in done.stderr and "--secrets-out" not in done.stderr
