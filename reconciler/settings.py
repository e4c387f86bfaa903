"""Where to connect and with which key: flags, then BentoML's env vars, then its config file."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.errors import ConfigError

ENV_ENDPOINT = "BENTO_CLOUD_API_ENDPOINT"
ENV_API_KEY = "BENTO_CLOUD_API_KEY"
LOCAL = "local"


@dataclass(frozen=True)
class Connection:
    """A resolved endpoint and key. The key is kept out of repr() so it never reaches logs."""

    endpoint: str
    api_key: str = field(repr=False)
    source: str


def bentoml_config_path(env: Mapping[str, str]) -> Path:
    """BentoML's cloud config file: ``$BENTOML_HOME/.yatai.yaml``, by default ~/bentoml."""
    home = env.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    return Path(home) / ".yatai.yaml"


def _from_bentoml_config(path: Path) -> tuple[str | None, str | None]:
    import yaml  # only commands that connect read this file; --help should not pay for it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read BentoML's cloud config ({exc})") from None
    if not isinstance(data, dict):
        return None, None
    current = data.get("current_context_name") or "default"
    for context in data.get("contexts") or []:
        if isinstance(context, dict) and context.get("name") == current:
            endpoint = context.get("endpoint")
            key = context.get("api_token")
            return (
                str(endpoint) if endpoint else None,
                str(key) if key else None,
            )
    return None, None


def resolve_connection(
    *,
    endpoint: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Pick the endpoint and key in DESIGN.md's order; ``--endpoint local`` is handled by the
    caller before this. A ConfigError says what is missing and every way to set it."""
    env = os.environ if env is None else env
    config_path = bentoml_config_path(env)
    file_endpoint, file_key = _from_bentoml_config(config_path)

    chosen_endpoint, endpoint_source = endpoint, "--endpoint"
    if not chosen_endpoint:
        chosen_endpoint, endpoint_source = env.get(ENV_ENDPOINT), ENV_ENDPOINT
    if not chosen_endpoint:
        chosen_endpoint, endpoint_source = file_endpoint, str(config_path)
    chosen_key, key_source = api_key, "--api-key"
    if not chosen_key:
        chosen_key, key_source = env.get(ENV_API_KEY), ENV_API_KEY
    if not chosen_key:
        chosen_key, key_source = file_key, str(config_path)

    if not chosen_endpoint:
        raise ConfigError(
            f"no BentoCloud endpoint configured: pass --endpoint URL (or --endpoint local for "
            f"the embedded local API), set {ENV_ENDPOINT}, or log in with `bentoml cloud login`"
        )
    if not chosen_key:
        raise ConfigError(
            f"no API key configured for {chosen_endpoint}: pass --api-key, set {ENV_API_KEY}, "
            "or log in with `bentoml cloud login`"
        )
    return Connection(
        endpoint=chosen_endpoint.rstrip("/"),
        api_key=chosen_key,
        source=f"endpoint from {endpoint_source}, key from {key_source}",
    )


def check_endpoint_url(endpoint: str, *, allow_insecure_http: bool) -> None:
    """Refuse URLs that would leak the key: not http(s), or plain http to a remote host."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"endpoint {endpoint!r} is not an http(s) URL; use e.g. https://cloud.bentoml.com "
            "or --endpoint local"
        )
    if parts.username or parts.password:
        raise ConfigError("endpoint must not carry credentials in the URL; use --api-key")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to send the API key over plain http to {parts.hostname}; use https, or "
            "pass --allow-insecure-http if you really mean it"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
