"""settings.resolve_connection with real BentoML config files: which source wins, and a
config key bound to the endpoint it was saved for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.api.settings import resolve_connection
from reconciler.errors import ConfigError

KEY = "rca_" + "C" * 40


def _home(tmp_path: Path, endpoint: str | None, text: str | None = None) -> dict[str, str]:
    config = tmp_path / "bentoml" / ".yatai.yaml"
    config.parent.mkdir(exist_ok=True)
    context = {"name": "default", "endpoint": endpoint, "api_token": KEY}
    config.write_text(text if text is not None else yaml.safe_dump({"contexts": [context]}))
    return {"BENTOML_HOME": str(config.parent)}


@pytest.mark.parametrize(
    ("saved", "asked"),
    [
        ("https://cloud.example.com", "https://cloud.example.com/"),
        ("https://cloud.example.com:443/", "https://CLOUD.example.com"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
    ],
)
def test_the_config_key_goes_to_its_own_endpoint_however_spelled(
    tmp_path: Path, saved: str, asked: str
) -> None:
    connection = resolve_connection(endpoint=asked, api_key=None, env=_home(tmp_path, saved))
    assert connection.api_key == KEY
    assert connection.endpoint == asked.rstrip("/")


@pytest.mark.parametrize(
    ("saved", "asked"),
    [
        ("https://cloud.example.invalid", "http://127.0.0.1:3000"),
        ("https://cloud.example.com", "http://cloud.example.com"),
        ("https://cloud.example.com", "https://cloud.example.com:8443"),
        ("https://cloud.example.com/a", "https://cloud.example.com/b"),
        (None, "https://cloud.example.com"),
    ],
)
def test_the_config_key_is_refused_for_another_endpoint(
    tmp_path: Path, saved: str | None, asked: str
) -> None:
    env = _home(tmp_path, saved)
    for source in ({"BENTO_CLOUD_API_ENDPOINT": asked}, {}):
        with pytest.raises(ConfigError) as caught:
            resolve_connection(
                endpoint=None if source else asked, api_key=None, env={**env, **source}
            )
        message = str(caught.value)
        assert "pass --api-key or set BENTO_CLOUD_API_KEY" in message
        assert KEY not in message and "\n" not in message


def test_an_explicit_key_with_the_config_endpoint_is_used(tmp_path: Path) -> None:
    env = {**_home(tmp_path, "https://cloud.example.com"), "BENTO_CLOUD_API_KEY": "rca_env-key"}
    connection = resolve_connection(endpoint=None, api_key=None, env=env)
    assert (connection.endpoint, connection.api_key) == ("https://cloud.example.com", "rca_env-key")
    assert connection.source.endswith("key from BENTO_CLOUD_API_KEY")


def test_the_config_is_not_read_when_nothing_is_missing(tmp_path: Path) -> None:
    env = _home(tmp_path, None, text=f"api_token: {KEY}\ncontexts: [\n")
    connection = resolve_connection(endpoint="https://a.example", api_key="rca_flag", env=env)
    assert connection.api_key == "rca_flag"
    with pytest.raises(ConfigError) as caught:
        resolve_connection(endpoint="https://a.example", api_key=None, env=env)
    assert "not valid YAML at line" in str(caught.value) and KEY not in str(caught.value)


def test_an_unreadable_config_names_the_file_only(tmp_path: Path) -> None:
    env = _home(tmp_path, None, text="")
    config = Path(env["BENTOML_HOME"]) / ".yatai.yaml"
    config.write_bytes(b"api_token: \xff" + KEY.encode())
    with pytest.raises(ConfigError) as caught:
        resolve_connection(endpoint="https://a.example", api_key=None, env=env)
    assert str(caught.value).startswith(f"{config}: ") and KEY not in str(caught.value)


def test_a_current_context_missing_from_the_config_has_its_own_message(tmp_path: Path) -> None:
    context = {"name": "prod", "endpoint": "https://prod.example.com", "api_token": KEY}
    text = yaml.safe_dump({"current_context_name": "staging", "contexts": [context]})
    env = _home(tmp_path, None, text)
    with pytest.raises(ConfigError) as caught:
        resolve_connection(endpoint=None, api_key=None, env=env)
    message = str(caught.value)
    assert "BentoML's current context 'staging' is not one of its contexts (known: 'prod')" in (
        message
    )
    assert "bentoml cloud current-context" in message and KEY not in message
