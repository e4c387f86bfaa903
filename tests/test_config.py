"""reconciler.yaml and the precedence of state locations: --state, env, file, default."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.config import (
    CONFIG_FILE_NAME,
    ENV_STATE,
    StateSetting,
    load_config,
    resolve_state_location,
)
from reconciler.defaults import STATE_PATH
from reconciler.errors import ConfigError
from reconciler.session import Session, SessionSettings
from reconciler.state.backends import LocalStateBackend, S3Location, S3StateBackend, backend_for

S3_YAML = """\
# shared state for CI
state:
  backend: s3
  bucket: acme-reconciler
  key: prod/tokens.state.json
  region: eu-west-1
  endpoint_url: https://s3.eu-west-1.amazonaws.com
  kms_key_id: alias/reconciler
"""


def load_state_setting(path: Path) -> StateSetting | None:
    return load_config(path).state


def state_location(state: str | None = None) -> str:
    """Where a run in the working directory keeps state, given ``--state``."""
    return Session(SessionSettings(state=state)).state_location


def write(directory: Path, text: str) -> Path:
    path = directory / CONFIG_FILE_NAME
    path.write_text(textwrap.dedent(text))
    return path


def test_no_file_means_default(tmp_path: Path) -> None:
    assert resolve_state_location(None, load_config(tmp_path / CONFIG_FILE_NAME), env={}) is None


def test_s3_section_becomes_a_location(tmp_path: Path) -> None:
    write(tmp_path, S3_YAML)
    setting = resolve_state_location(None, load_config(tmp_path / CONFIG_FILE_NAME), env={})
    assert setting is not None
    assert setting.source == f"{tmp_path / CONFIG_FILE_NAME}:2"
    assert S3Location.parse(setting.location) == S3Location(
        bucket="acme-reconciler",
        key="prod/tokens.state.json",
        region="eu-west-1",
        endpoint_url="https://s3.eu-west-1.amazonaws.com",
        kms_key_id="alias/reconciler",
    )


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    write(tmp_path, S3_YAML)
    env = {ENV_STATE: "s3://from-env/tokens.json"}
    flag = resolve_state_location("flag.json", load_config(tmp_path / CONFIG_FILE_NAME), env=env)
    assert flag is not None and (flag.location, flag.source) == ("flag.json", "--state")
    from_env = resolve_state_location(None, load_config(tmp_path / CONFIG_FILE_NAME), env=env)
    assert from_env is not None
    assert (from_env.location, from_env.source) == ("s3://from-env/tokens.json", f"${ENV_STATE}")
    from_file = resolve_state_location(
        None, load_config(tmp_path / CONFIG_FILE_NAME), env={ENV_STATE: "  "}
    )
    assert from_file is not None and from_file.location.startswith("s3://acme-reconciler/")


def test_options_read_the_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_STATE, raising=False)
    monkeypatch.chdir(tmp_path)
    assert state_location() == STATE_PATH
    write(tmp_path, "state: {backend: local, path: elsewhere/tokens.json}\n")
    assert state_location() == "elsewhere/tokens.json"
    assert isinstance(backend_for(state_location()), LocalStateBackend)
    monkeypatch.setenv(ENV_STATE, "s3://env-bucket/k.json")
    assert isinstance(backend_for(state_location()), S3StateBackend)
    assert state_location("flag.json") == "flag.json"


def test_local_path_is_relative_to_the_file(tmp_path: Path) -> None:
    write(tmp_path, "state:\n  backend: local\n  path: state/prod.json\n")
    setting = load_state_setting(tmp_path / CONFIG_FILE_NAME)
    assert setting is not None and setting.location == str(tmp_path / "state" / "prod.json")


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "state:\n", "state: {backend: local}\n"])
def test_empty_settings_mean_default(tmp_path: Path, text: str) -> None:
    write(tmp_path, text)
    assert load_state_setting(tmp_path / CONFIG_FILE_NAME) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "stat:\n  backend: s3\n",
            ["reconciler.yaml:1: unknown key 'stat': did you mean 'state'?"],
        ),
        ("state: s3://b/k\n", ["reconciler.yaml:1: state must be a mapping"]),
        ("state:\n  bucket: b\n", ["reconciler.yaml:1: state.backend must be s3 or local"]),
        ("state:\n  backend: gcs\n", ["reconciler.yaml:2: state.backend must be s3 or local"]),
        (
            "state:\n  backend: s3\n  bucket: acme-bucket\n  prefix: x\n  key: k\n",
            ["reconciler.yaml:4: unknown key state.prefix for backend s3"],
        ),
        (
            "state:\n  backend: s3\n  bucket: acme-bucket\n",
            ["reconciler.yaml:1: state.key is required for s3"],
        ),
        (
            "state:\n  backend: s3\n  bucket: 12\n  key: [a]\n",
            [
                "reconciler.yaml:3: state.bucket must be a non-empty string",
                "reconciler.yaml:4: state.key must be a non-empty string",
            ],
        ),
        (
            "state:\n  backend: s3\n  bucket: Not_A_Bucket\n  key: k\n",
            ["reconciler.yaml:1: s3://Not_A_Bucket/k: 'Not_A_Bucket' is not a valid S3 bucket"],
        ),
        (
            "state:\n  backend: local\n  bucket: acme-bucket\n",
            ["reconciler.yaml:3: unknown key state.bucket for backend local"],
        ),
        ("state: [\n", ["reconciler.yaml:2: YAML syntax error"]),
    ],
)
def test_problems_name_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_state_setting(Path(CONFIG_FILE_NAME))
    message = str(caught.value)
    assert message.startswith(f"{len(expected)} problem")
    for line in expected:
        assert line in message


def test_cli_reports_a_bad_file_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.cli.main import main

    monkeypatch.delenv(ENV_STATE, raising=False)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "state:\n  backend: s3\n")
    with pytest.raises(SystemExit) as exited:
        main(["state", "list"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "problems in reconciler.yaml" in err
    assert "state.bucket is required" in err and "state.key is required" in err


def test_an_unknown_updates_mode_names_the_file_line_and_the_fix(tmp_path: Path) -> None:
    from support.cli import run_cli_subprocess

    (tmp_path / CONFIG_FILE_NAME).write_text("updates: sometimes\n", encoding="utf-8")
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "a.yaml").write_text(
        "tokens:\n  - name: reader\n    scopes: [api]\n", encoding="utf-8"
    )

    result = run_cli_subprocess("--endpoint", "local", "plan", cwd=tmp_path)

    assert result.exit_code == 1, result
    assert f"{CONFIG_FILE_NAME}:1: updates must be in-place or replace" in result.stderr
    assert "'sometimes'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), "a refused run creates nothing"


def test_the_s3_keys_of_the_config_are_the_backend_options() -> None:
    """config.py repeats the S3 backend's option names so that reading the file does not
    import the backend: the two lists must stay equal."""
    from reconciler.config import S3_OPTION_KEYS
    from reconciler.state.backends.s3 import OPTION_KEYS

    assert S3_OPTION_KEYS == OPTION_KEYS
