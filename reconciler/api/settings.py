"""Where to connect and with which key: flags, then BentoML's env vars, then its config file
(only when the first two leave something unset, and its key only for its own endpoint)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.errors import ConfigError, excerpt, register_secret
from reconciler.util.text import clip

ENV_ENDPOINT = "BENTO_CLOUD_API_ENDPOINT"
ENV_API_KEY = "BENTO_CLOUD_API_KEY"
LOCAL = "local"
API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Connection:
    """A resolved endpoint and key. The key is kept out of repr() so it never reaches logs."""

    endpoint: str
    api_key: str = field(repr=False)
    source: str


BAD_KEY = (
    "the API key contains a newline or a character HTTP headers cannot carry; check how it "
    "was pasted"
)


def check_api_key(api_key: str, source: str | None = None) -> None:
    """ConfigError unless the key can go in an HTTP header as it is.

    httpx would refuse it only when sending (after every retry, with the key in its
    message) or, when not ASCII, with a traceback. Keys are printable ASCII without spaces.
    """
    if not all("!" <= c <= "~" for c in api_key):
        raise ConfigError(BAD_KEY + (f" (the key from {source})" if source else ""))


def bentoml_config_path(env: Mapping[str, str]) -> Path:
    """BentoML's cloud config file: ``$BENTOML_HOME/.yatai.yaml``, by default ~/bentoml."""
    home = env.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    return Path(home) / ".yatai.yaml"


@dataclass(frozen=True)
class _Context:
    """The current context of BentoML's cloud config: its name, endpoint and key."""

    name: str
    endpoint: str | None
    api_key: str | None = field(repr=False)


def _load_config(path: Path) -> object:
    """The parsed file, or None when there is none. Errors never quote the file: it holds
    the key, and a YAML error's message would show the line it is on."""
    import yaml  # only commands that connect read this file; --help should not pay for it

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: BentoML's cloud config is not UTF-8 text; fix or remove it"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read BentoML's cloud config ({exc.strerror}); check its permissions"
        ) from None
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}: BentoML's cloud config is not valid YAML{where}; fix it, or log in again "
            "with `bentoml cloud login`"
        ) from None


def _current_context(path: Path) -> _Context | None:
    """The current context of BentoML's cloud config file, if there is one."""
    data = _load_config(path)
    if data is None:
        return None
    broken = f"{path}: BentoML's cloud config is malformed"
    fix = "fix it, or log in again with `bentoml cloud login`"
    if not isinstance(data, dict) or not isinstance(data.get("contexts") or [], list):
        raise ConfigError(f"{broken} (expected a mapping with a `contexts:` list); {fix}")
    current = data.get("current_context_name") or "default"
    for context in data.get("contexts") or []:
        if isinstance(context, dict) and context.get("name") == current:
            endpoint, key = context.get("endpoint"), context.get("api_token")
            if not isinstance(endpoint, (str, type(None))) or not isinstance(
                key, (str, type(None))
            ):
                raise ConfigError(
                    f"{broken} (context {clip(current)}: endpoint and api_token "
                    f"must be strings); {fix}"
                )
            register_secret(key, "API key")
            return _Context(str(current), endpoint or None, key or None)
    names = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, dict)]
    if data.get("current_context_name") or names:
        known = ", ".join(clip(n) for n in names if isinstance(n, str)) or "none"
        raise ConfigError(
            f"{path}: BentoML's current context {clip(current)} is not one of its contexts "
            f"(known: {known}); choose one with `bentoml cloud current-context`, or log in "
            "again with `bentoml cloud login`"
        )
    return None


def _same_endpoint(left: str, right: str) -> bool:
    """Whether two URLs name the same API (scheme, host and port, path without a final /)."""
    a, b = urlsplit(left.strip()), urlsplit(right.strip())
    try:
        ports = (a.port or _DEFAULT_PORTS.get(a.scheme.lower())) == (
            b.port or _DEFAULT_PORTS.get(b.scheme.lower())
        )
    except ValueError:
        return False
    return (
        ports
        and a.scheme.lower() == b.scheme.lower()
        and (a.hostname or "") == (b.hostname or "")
        and a.path.rstrip("/") == b.path.rstrip("/")
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str]:
    """The first set value and where it came from."""
    for value, source in candidates:
        if value:
            return value, source
    return None, ""


def resolve_connection(
    *,
    endpoint: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Pick the endpoint and key: flags, then env vars, then BentoML's current context (read
    only when the first two leave something unset). ``--endpoint local`` is handled by the
    caller before this. A key from BentoML's config goes only to the endpoint it was saved
    for. A ConfigError says what is missing and every way to set it."""
    env = os.environ if env is None else env
    chosen_endpoint, endpoint_source = _first(
        (endpoint, "--endpoint"), (env.get(ENV_ENDPOINT), ENV_ENDPOINT)
    )
    chosen_key, key_source = _first((api_key, "--api-key"), (env.get(ENV_API_KEY), ENV_API_KEY))
    register_secret(chosen_key, "API key")
    if not (chosen_endpoint and chosen_key):
        config_path = bentoml_config_path(env)
        context = _current_context(config_path)
        if context is not None and not chosen_endpoint and context.endpoint:
            chosen_endpoint, endpoint_source = context.endpoint, str(config_path)
        if context is not None and not chosen_key and context.api_key and chosen_endpoint:
            _check_bound(context, config_path, chosen_endpoint)
            chosen_key, key_source = context.api_key, str(config_path)

    if not chosen_endpoint:
        raise ConfigError(
            f"no BentoCloud endpoint configured: pass --endpoint URL (or --endpoint local for "
            f"the embedded local API), set {ENV_ENDPOINT}, or log in with `bentoml cloud login`"
        )
    if not chosen_key:
        raise ConfigError(
            f"no API key configured for {excerpt(chosen_endpoint, 200)}: pass --api-key, set "
            f"{ENV_API_KEY}, or log in with `bentoml cloud login`"
        )
    check_api_key(chosen_key, key_source)
    return Connection(
        endpoint=base_url(chosen_endpoint),
        api_key=chosen_key,
        source=f"endpoint from {endpoint_source}, key from {key_source}",
    )


def base_url(endpoint: str) -> str:
    """The endpoint as reconciler keeps it: no final ``/``, and no ``/api/v1`` pasted from
    an API URL (every path reconciler calls already starts with it)."""
    url = endpoint.strip().rstrip("/")
    return url[: -len(API_PREFIX)].rstrip("/") if url.endswith(API_PREFIX) else url


def _check_bound(context: _Context, path: Path, endpoint: str) -> None:
    """Refuse to send a key saved for one endpoint to another."""
    if context.endpoint and _same_endpoint(context.endpoint, endpoint):
        return
    saved_for = excerpt(context.endpoint, 200) if context.endpoint else "no endpoint"
    raise ConfigError(
        f"the API key in {path} (context {clip(context.name)}) is for {saved_for}, not "
        f"{excerpt(endpoint, 200)}: pass --api-key or set {ENV_API_KEY} with a key for "
        f"{excerpt(endpoint, 200)}"
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
