"""The store variants of docs/github-actions.md, run step by step through the CI emulator:
the apply jobs deliver straight to a real OpenBao dev server and moto's Secrets Manager,
with no secrets file on the runner, and every delivered value authenticates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from support.ci_docs import (
    AUDIT,
    DEPLOYER,
    GRAFANA,
    NIGHTLY,
    Hosted,
    assert_all_ran,
    doc_blocks,
    push,
    remote_state,
    secret_works,
)
from support.ci_emulator import GitHubRun, GitLabPipeline, git
from support.leaks import REGISTRY
from support.local_api import LocalApi
from support.moto import AWS_ENV, REGION
from support.stores import Stores

ROLE = "arn:aws:iam::123456789012:role/reconciler"


def _vault_value(stores: Stores, name: str) -> dict[str, Any]:
    answer = stores.bao.client().secrets.kv.v2.read_secret_version(
        path=f"bentocloud/{name}", mount_point="secret", raise_on_deleted_version=True
    )
    document: dict[str, Any] = answer["data"]["data"]
    REGISTRY.add_secret(document["token"], f"token value in vault ({name})")
    return document


def _aws_value(stores: Stores, name: str) -> dict[str, Any]:
    import json

    answer = stores.moto.client().get_secret_value(SecretId=f"bentocloud/{name}")
    document: dict[str, Any] = json.loads(answer["SecretString"])
    REGISTRY.add_secret(document["token"], f"token value in aws ({name})")
    return document


def _no_secrets_file(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.is_file() and "new-tokens" in p.name]
    assert not leftovers, leftovers


def test_documented_github_apply_job_delivers_to_vault_and_aws(
    hosted: Hosted, local_api: LocalApi, stores: Stores
) -> None:
    machine, remote, tokens = hosted
    dev = tokens.root
    workflow = yaml.safe_load(doc_blocks()["github-workflow"][1])
    variant = yaml.safe_load(doc_blocks()["github-stores"][1])
    workflow["jobs"]["apply"] = variant["jobs"]["apply"]
    aws_login = {
        "AWS_ACCESS_KEY_ID": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": REGION,  # the action exports both
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        # Where the emulated role's Secrets Manager is: moto on 127.0.0.1.
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": stores.moto.url,
    }
    REGISTRY.add_secret(stores.bao.root_token, "vault token (VAULT_TOKEN)")
    REGISTRY.add_secret(AWS_ENV["AWS_SECRET_ACCESS_KEY"], "AWS secret access key")

    def run(event: str) -> GitHubRun:
        return GitHubRun(
            machine,
            remote,
            workflow,
            event=event,
            ref="refs/heads/main",
            checkout="main",
            secrets={"BENTO_CLOUD_API_KEY": local_api.admin_key},
            variables={
                "BENTO_CLOUD_API_ENDPOINT": local_api.url,
                "VAULT_ADDR": stores.bao.url,
                "RECONCILER_AWS_ROLE": ROLE,
            },
            logins={
                "hashicorp/vault-action@v3": {"VAULT_TOKEN": stores.bao.root_token},
                "aws-actions/configure-aws-credentials@v4": aws_login,
            },
        )

    merged = run("push")
    assert merged.run("plan").outputs == {"changes": "true"}
    apply = merged.run("apply")
    assert apply.status == "success", str(apply)
    logs = "\n".join(apply.logs)
    assert "Apply complete: 3 created." in logs
    assert "emulated login" in logs
    owned = remote_state(remote)
    assert sorted(owned) == ["ci-deployer", "grafana-reader", "nightly"]
    for name, uid in owned.items():
        vault, aws = _vault_value(stores, name), _aws_value(stores, name)
        assert vault == aws and vault["uid"] == uid
        assert secret_works(local_api, vault["token"], uid)
    assert not machine.calls("gh")  # nothing is copied from a file
    _no_secrets_file(machine.root)

    # A token added later is delivered too; the others are left as they are.
    tokens.declare(DEPLOYER, GRAFANA, NIGHTLY, AUDIT)
    push(dev, machine, "main")
    before = _vault_value(stores, "ci-deployer")
    later = run("push")
    assert later.run("plan").outputs == {"changes": "true"}
    assert later.run("apply").status == "success"
    audit = _vault_value(stores, "audit")
    assert secret_works(local_api, audit["token"], remote_state(remote)["audit"])
    assert _vault_value(stores, "ci-deployer") == before
    assert_all_ran(doc_blocks()["github-stores"][1], machine)


def test_documented_gitlab_apply_job_delivers_to_vault(
    hosted: Hosted, local_api: LocalApi, stores: Stores
) -> None:
    machine, remote, tokens = hosted
    config = yaml.safe_load(doc_blocks()["gitlab-ci"][1])
    config["apply"] = yaml.safe_load(doc_blocks()["gitlab-stores"][1])["apply"]
    host, path = "gitlab.example.com", "group/tokens"
    REGISTRY.add_secret(stores.bao.root_token, "vault token (VAULT_TOKEN)")
    machine.answer("vault", stores.bao.root_token)  # what the JWT login returns
    variables = {
        "CI_DEFAULT_BRANCH": "main",
        "CI_SERVER_HOST": host,
        "CI_PROJECT_PATH": path,
        "CI_PROJECT_ID": "42",
        "CI_API_V4_URL": f"https://{host}/api/v4",
        "CI_JOB_TOKEN": "job-token",
        "CI_COMMIT_SHORT_SHA": "0123abcd",
        "RECONCILER_GITLAB_TOKEN": "gl-token",
        "RECONCILER_PUSH_TOKEN": "push-token",
        "BENTO_CLOUD_API_ENDPOINT": local_api.url,
        "BENTO_CLOUD_API_KEY": local_api.admin_key,
        "VAULT_ADDR": stores.bao.url,
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_BRANCH": "main",
        "CI_COMMIT_REF_NAME": "main",
    }
    urls = {
        f"https://gitlab-ci-token:job-token@{host}/{path}.git": f"file://{remote}",
        f"https://reconciler:push-token@{host}/{path}.git": f"file://{remote}",
    }
    git("switch", "--quiet", "main", cwd=tokens.root, env=machine.env())
    main = GitLabPipeline(
        machine, remote, config, checkout="main", git_urls=urls, variables=variables
    )
    assert main.run("plan").status == "success"
    apply = main.run("apply")
    assert apply.status == "success", str(apply)
    (login,) = machine.calls("vault")
    assert login["args"] == [
        "write",
        "-field=token",
        "auth/jwt/login",
        "role=reconciler",
        "jwt=emulated-id-token-for-reconciler",
    ]
    owned = remote_state(remote)
    assert sorted(owned) == ["ci-deployer", "grafana-reader", "nightly"]
    for name, uid in owned.items():
        document = _vault_value(stores, name)
        assert document["uid"] == uid and secret_works(local_api, document["token"], uid)
    _no_secrets_file(machine.root)
    assert_all_ran(doc_blocks()["gitlab-stores"][1], machine)
