"""Trust boundaries through the real CLI and the real local API: a pasted key is refused
before any request, BentoML's config key goes only to its own endpoint, and a manifest
symlink cannot make reconciler read (or quote) a file outside the manifests folder.

Every run is recorded for the session's leak scan (tests/support/leaks.py), and each test
also checks its own output: exit 1, one line, nothing sent, nothing written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from support.cli import CliResult, run_cli, run_cli_subprocess
from support.leaks import REGISTRY

if TYPE_CHECKING:
    from support.local_api import LocalApi

BAD_KEY = (
    "Error: the API key contains a newline or a character HTTP headers cannot carry; check "
    "how it was pasted"
)
VERBOSITY = ((), ("-v",), ("-vv",))
TOKENS_ROUTE = "GET /api/v1/api_tokens"


def _manifests(home: Path) -> Path:
    folder = home / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / "tokens.yaml").write_text("tokens:\n  - name: my-token\n    scopes: [api]\n")
    return folder


def _one_line_error(result: CliResult, verbose: tuple[str, ...]) -> str:
    """The error line; below -vv it is all of stderr (at -vv a traceback comes first)."""
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    if "-vv" not in verbose:
        assert len(lines) == 1, result
    return lines[-1].removeprefix("reconciler.errors.ConfigError: ")


def _secret(value: str, kind: str) -> str:
    REGISTRY.add_secret(value, kind)
    REGISTRY.add_secret(value.strip(), kind)
    return value


# ---------------------------------------------------------------- a pasted key


@pytest.mark.parametrize("verbose", VERBOSITY)
@pytest.mark.parametrize("tail", ["\n", " ", "\r\n", "\t", "é"])
def test_a_key_with_whitespace_or_non_ascii_is_refused_before_any_request(
    local_api: LocalApi, tmp_path: Path, tail: str, verbose: tuple[str, ...]
) -> None:
    key = _secret(local_api.store.create_api_key() + tail, "pasted api key")
    state = tmp_path / "state.json"
    manifests = _manifests(tmp_path)
    local_api.reset_stats()
    for where, env in (
        (("--api-key", key), {}),
        ((), {"BENTO_CLOUD_API_KEY": key}),
    ):
        result = run_cli(
            "plan",
            str(manifests),
            "--endpoint",
            local_api.url,
            *where,
            "--state",
            str(state),
            *verbose,
            cwd=tmp_path,
            env=env,
        )
        line = _one_line_error(result, verbose)
        assert line.startswith(BAD_KEY.removeprefix("Error: " if "-vv" in verbose else "")), result
        assert key.strip() not in result.text
        assert "Illegal header value" not in result.text
    assert local_api.requests(TOKENS_ROUTE) == 0
    assert not state.exists()


# ---------------------------------------------------------------- BentoML's config


def _bentoml_config(home: Path, text: str) -> Path:
    config = home / ".no-bentoml-home" / ".yatai.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return config


def _context(endpoint: str, key: str) -> str:
    return yaml.safe_dump(
        {
            "current_context_name": "prod",
            "contexts": [{"name": "prod", "endpoint": endpoint, "api_token": key}],
        }
    )


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_a_config_key_is_never_sent_to_another_endpoint(
    local_api: LocalApi, tmp_path: Path, verbose: tuple[str, ...]
) -> None:
    key = _secret(local_api.store.create_api_key(), "config api key")
    _bentoml_config(tmp_path, _context("https://cloud.example.invalid", key))
    state = tmp_path / "state.json"
    local_api.reset_stats()
    for env in ({}, {"BENTO_CLOUD_API_ENDPOINT": local_api.url}):
        flags = () if env else ("--endpoint", local_api.url)
        result = run_cli(
            "plan",
            str(_manifests(tmp_path)),
            *flags,
            "--state",
            str(state),
            *verbose,
            cwd=tmp_path,
            env=env,
        )
        line = _one_line_error(result, verbose)
        assert "is for https://cloud.example.invalid" in line, result
        assert "pass --api-key or set BENTO_CLOUD_API_KEY" in line, result
        assert key not in result.text
    assert local_api.requests(TOKENS_ROUTE) == 0
    assert not state.exists()


def test_a_config_key_is_used_for_its_own_endpoint_however_it_is_spelled(
    local_api: LocalApi, tmp_path: Path
) -> None:
    key = _secret(local_api.store.create_api_key(), "config api key")
    _bentoml_config(tmp_path, _context(local_api.url + "/", key))
    result = run_cli(
        "plan",
        str(_manifests(tmp_path)),
        "--endpoint",
        local_api.url,
        "--state",
        str(tmp_path / "state.json"),
        cwd=tmp_path,
    )
    assert result.code == 0, result
    assert "my-token" in result.out


def test_the_config_is_not_read_when_flags_and_environment_say_everything(
    local_api: LocalApi, tmp_path: Path
) -> None:
    key = _secret(local_api.store.create_api_key(), "api key")
    # Unreadable as YAML: reading it at all would fail the run.
    _bentoml_config(tmp_path, "contexts: [\n")
    result = run_cli(
        "plan",
        str(_manifests(tmp_path)),
        "--state",
        str(tmp_path / "state.json"),
        cwd=tmp_path,
        env={"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": key},
    )
    assert result.code == 0, result


@pytest.mark.parametrize("verbose", VERBOSITY)
@pytest.mark.parametrize(
    "text",
    [
        "current_context_name: prod\ncontexts:\n- name: prod\n  api_token: {key}\n  endpoint: [\n",
        "contexts:\n\t- api_token: {key}\n",
        "- api_token: {key}\n",
        "current_context_name: default\ncontexts:\n- name: default\n  api_token: [{key}]\n",
    ],
    ids=["unclosed", "tab", "not-a-mapping", "key-not-a-string"],
)
def test_a_malformed_config_is_one_line_naming_the_file_never_its_text(
    local_api: LocalApi, tmp_path: Path, text: str, verbose: tuple[str, ...]
) -> None:
    key = _secret(local_api.store.create_api_key(), "config api key")
    config = _bentoml_config(tmp_path, text.format(key=key))
    result = run_cli(
        "plan",
        str(_manifests(tmp_path)),
        "--endpoint",
        local_api.url,
        "--state",
        str(tmp_path / "state.json"),
        *verbose,
        cwd=tmp_path,
    )
    line = _one_line_error(result, verbose)
    assert str(config) in line and "BentoML's cloud config" in line, result
    assert key not in result.text and "api_token:" not in result.text


# ---------------------------------------------------------------- redaction in logs


def test_log_lines_and_errors_are_redacted_on_the_real_stderr(tmp_path: Path) -> None:
    """The key inside the endpoint URL is logged (-vv) and named in the connection error:
    both reach stderr blanked, through the handler the CLI sets up."""
    key = "rca_" + "L" * 40
    vault = "hvs." + "V" * 40
    dead = f"http://127.0.0.1:9/{key}/{vault}"
    result = run_cli_subprocess(
        "plan",
        str(_manifests(tmp_path)),
        "--endpoint",
        dead,
        "--api-key",
        key,
        "--state",
        str(tmp_path / "state.json"),
        "-vv",
        cwd=tmp_path,
        env={"VAULT_TOKEN": vault},
    )
    assert result.exit_code == 1, result
    assert "DEBUG reconciler: connecting to http://127.0.0.1:9/[API key]/[VAULT_TOKEN]" in (
        result.stderr
    ), result
    assert "cannot connect to http://127.0.0.1:9/[API key]/[VAULT_TOKEN]" in result.stderr
    assert key not in result.output and vault not in result.output


# ---------------------------------------------------------------- manifest symlinks


def _secret_file(tmp_path: Path) -> tuple[Path, str]:
    secret = "ghs_" + "S" * 36
    REGISTRY.add_secret(secret, "file outside the manifests")
    outside = tmp_path / "outside" / "credentials"
    outside.parent.mkdir()
    # Lines that YAML would read and an error would quote: a key, a list, a name.
    outside.write_text(f"tokens: {secret}\nname: {secret}\n[{secret}]\n")
    return outside, secret


@pytest.mark.parametrize("verbose", VERBOSITY)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_manifest_symlink_out_of_the_folder_is_refused_unread(
    local_api: LocalApi, tmp_path: Path, command: str, verbose: tuple[str, ...]
) -> None:
    outside, secret = _secret_file(tmp_path)
    manifests = _manifests(tmp_path)
    link = manifests / "x.yaml"
    link.symlink_to(outside)
    state = tmp_path / "state.json"
    connection = ("--endpoint", local_api.url, "--api-key", local_api.admin_key)
    local_api.reset_stats()
    result = run_cli(
        command,
        str(manifests),
        *(connection if command == "plan" else ()),
        "--state",
        str(state),
        *verbose,
        cwd=tmp_path,
    )
    assert result.code == 1, result
    tail = result.err.strip().splitlines()[-2:]
    assert tail[0].endswith("1 problem in manifests:"), result
    assert tail[1].startswith(f"  {link}: a symbolic link to a file outside the manifests"), result
    assert secret not in result.text and str(outside) not in result.text
    assert local_api.requests(TOKENS_ROUTE) == 0
    assert not state.exists()


def test_a_symlink_to_a_hidden_file_inside_the_folder_is_refused(tmp_path: Path) -> None:
    """With the repository as the manifests folder, .git/config (the checkout token) is
    inside it: a link there is refused like one out of it."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    secret = "ghs_" + "G" * 36
    REGISTRY.add_secret(secret, "checkout token")
    (repo / ".git" / "config").write_text(f'[http]\n\textraheader = "AUTHORIZATION: {secret}"\n')
    (repo / "leak.yaml").symlink_to(repo / ".git" / "config")
    result = run_cli("validate", str(repo), cwd=tmp_path)
    assert result.code == 1, result
    assert "leak.yaml: a symbolic link" in result.err and secret not in result.text


def test_a_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    manifests = _manifests(tmp_path)
    (manifests / "shared").mkdir()
    os.replace(manifests / "tokens.yaml", manifests / "shared" / "tokens.yaml")
    (manifests / "alias.yaml").symlink_to(Path("shared") / "tokens.yaml")
    result = run_cli("validate", str(manifests), cwd=tmp_path)
    assert result.code == 0, result
    assert "1 token in 1 file" in result.out, result


def test_a_line_with_control_characters_is_quoted_escaped_on_one_line(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "t.yaml").write_text('tokens: "api\\n\\u001b[31mred"\n')
    result = run_cli("validate", str(manifests), cwd=tmp_path)
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and "\x1b" not in result.err, result
    assert "tokens must be a list" in lines[1], result
