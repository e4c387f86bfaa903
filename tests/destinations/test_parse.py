"""parse_destination: every form of --secrets-out, the fix for each mistake, lazy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.cli import run_cli_subprocess

from reconciler.destinations.aws_sm import SecretsManagerDestination
from reconciler.destinations.base import Delivery
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.file import FileDestination
from reconciler.destinations.parse import parse_destination
from reconciler.destinations.vault import VaultDestination, VaultSettings
from reconciler.errors import DestinationSyntaxError, SecretsError


def test_vault_url_names_mount_and_path() -> None:
    destination = parse_destination("vault://secret/teams/platform/")
    assert isinstance(destination, VaultDestination)
    assert (destination.mount, destination.path) == ("secret", "teams/platform")
    assert destination.secret_path("ci-deployer") == "teams/platform/ci-deployer"


def test_vault_name_placeholder() -> None:
    destination = parse_destination("vault://kv/teams/{name}/bentocloud")
    assert isinstance(destination, VaultDestination)
    assert destination.secret_path("billing") == "teams/billing/bentocloud"


def test_aws_url_with_placeholder_and_kms_key() -> None:
    destination = parse_destination("aws-sm://prod/{name}/token?kms_key_id=alias/tokens")
    assert isinstance(destination, SecretsManagerDestination)
    assert destination.secret_id("billing") == "prod/billing/token"
    assert destination.kms_key_id == "alias/tokens"
    plain = parse_destination("aws-sm://bentocloud")
    assert isinstance(plain, SecretsManagerDestination)
    assert plain.secret_id("ci") == "bentocloud/ci" and plain.kms_key_id is None


def test_exec_keeps_the_whole_command() -> None:
    destination = parse_destination('exec:gh secret set "$RECONCILER_TOKEN_NAME" --app actions')
    assert isinstance(destination, ExecDestination)
    assert destination.command == 'gh secret set "$RECONCILER_TOKEN_NAME" --app actions'
    assert destination.describe() == f"exec:{destination.command}"


@pytest.mark.parametrize(
    ("text", "fmt"), [("new.json", "json"), ("out/tokens.env", "dotenv"), ("/tmp/x", "json")]
)
def test_anything_else_is_a_file_path(text: str, fmt: str) -> None:
    destination = parse_destination(text)
    assert isinstance(destination, FileDestination) and destination.path == Path(text)
    assert destination.format == fmt and destination.describe() == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vault://secret", "no path after the mount 'secret'; e.g. vault://secret/bentocloud"),
        ("vault:///bentocloud", "no KV mount after vault://"),
        ("vault://secret/a?x=1", "takes no query, fragment or credentials (set VAULT_ADDR"),
        ("vault://root:hunter2@secret/a", "takes no query, fragment or credentials"),
        ("vault://secret/a b", "the path must be segments of letters"),
        ("vault://secret/{name}/{name}", "{name} may appear once"),
        ("aws-sm://", "the path must be segments"),
        (
            "aws-sm://prod?kms=alias/x",
            "unknown or empty option 'kms'; the one option is kms_key_id",
        ),
        ("aws-sm://prod?kms_key_id=", "unknown or empty option 'kms_key_id'"),
        ("exec:", "no command after exec:"),
        ("exec:   ", "no command after exec:"),
        ("vaults://secret/a", "unknown destination; use vault://MOUNT/PATH, aws-sm://PATH"),
        ("s3://bucket/key", "unknown destination"),
        ("", "empty secrets destination"),
    ],
)
def test_mistakes_name_the_entry_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(DestinationSyntaxError) as caught:
        parse_destination(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, SecretsError)  # the CLI's one-line, exit-1 path
    assert "hunter2" not in str(caught.value)


def test_credentials_in_a_vault_url_are_not_echoed() -> None:
    with pytest.raises(DestinationSyntaxError) as caught:
        parse_destination("vault://secret/a?token=hvs.SECRETSECRET")
    text = str(caught.value)
    assert text.startswith("'vault://secret/a' (shown without its query or credentials)")
    assert "SECRETSECRET" not in text and "set VAULT_ADDR and VAULT_TOKEN instead" in text


def test_delivery_and_settings_never_show_secrets() -> None:
    value = "rct_9sVfQ2kTqXw3LmN8pYb1Zc4Hd7Jr0GeA5uOiKtFyWnE"
    delivery = Delivery("ci", "ci-2", "tok_1", None, value)
    assert value not in repr(delivery) and value not in str(delivery)
    settings = VaultSettings(
        addr="https://vault:8200", token="hvs.abc123", namespace=None, verify=True
    )
    assert "hvs.abc123" not in repr(settings) and "hvs.abc123" not in str(settings)


def test_no_store_client_is_imported_by_parsing_or_the_cli() -> None:
    """hvac and boto3 load only when a destination is checked or used."""
    script = textwrap.dedent(
        """
        import sys
        import reconciler.cli.main
        from reconciler.destinations.parse import parse_destination
        for text in ("vault://secret/a", "aws-sm://a", "exec:true", "new.json"):
            parse_destination(text).describe()
        loaded = sorted(m for m in ("hvac", "boto3", "botocore", "requests") if m in sys.modules)
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_destination_mistakes_in_manifests_and_config_name_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - name: a\n    scopes: [api]\n    deliver_to: ['vualt://x']\n"
        "  - name: b\n    scopes: [api]\n    deliver_to: []\n",
        encoding="utf-8",
    )
    result = run_cli_subprocess("validate", cwd=tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result
    assert "manifests/t.yaml:4: token 'a': deliver_to: 'vualt://x': unknown destination" in (
        result.stderr
    )
    assert "manifests/t.yaml:7: token 'b': deliver_to is empty" in result.stderr
    (tmp_path / "manifests" / "t.yaml").write_text(
        "tokens:\n  - {name: a, scopes: [api]}\n", encoding="utf-8"
    )
    (tmp_path / "reconciler.yaml").write_text("secrets:\n  - 'exec:'\n", encoding="utf-8")
    applied = run_cli_subprocess(
        "--endpoint", "local", "--state", "s.json", "apply", "--auto-approve", cwd=tmp_path
    )
    assert applied.exit_code == 1, applied
    assert "reconciler.yaml:2: secrets[0]: 'exec:': no command after exec:" in applied.stderr
    assert not (tmp_path / "s.json").exists()
