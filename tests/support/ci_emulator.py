"""Just enough of GitHub Actions and GitLab CI to run the workflows documented in
docs/github-actions.md on this machine, step by step, for real.

- Git is real: a bare repository stands in for the hosted one; checkouts, commits and
  pushes of the state branch happen in it.
- ``run:``/``script:`` steps run in bash as the CI systems run them (``-eo pipefail``),
  with the variables they set (``RUNNER_TEMP``, ``GITHUB_OUTPUT``, ``GITHUB_STEP_SUMMARY``,
  ``CI_*``), so the documented shell is what is tested.
- CI logins to secret stores are emulated by what they yield: ``hashicorp/vault-action``
  (JWT method) and ``aws-actions/configure-aws-credentials`` export the variables the test
  gives as ``logins`` to the later steps; GitLab ``id_tokens:`` become variables holding a
  placeholder token; the ``vault`` stub prints what ``Machine.answer`` set for it (the
  token a ``vault write auth/jwt/login`` would return). The stores themselves are real
  (OpenBao's dev server, moto) in the tests that use these.
- ``reconciler`` on PATH runs this checkout's reconciler (``python -m reconciler``). The
  outside services are stubs that record their arguments and the files they were given:
  ``pip`` (the package is already installed), ``gh``, ``curl`` and ``vault``.
- Expressions (``${{ ... }}``, ``if:``, GitLab ``rules: - if:``) are evaluated by a small
  evaluator covering the operators the document uses; anything else is an error, so a
  change to the document cannot silently skip a step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STUBBED = ("reconciler", "pip", "gh", "curl", "vault")

_STUB = """#!{python}
import json, os, sys
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
files = {{}}
for arg in args:
    for candidate in (arg, arg.partition("@")[2], arg.partition("=")[2]):
        if candidate and os.path.isfile(candidate):
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                files[candidate] = handle.read()
entry = {{"tool": tool, "args": args, "cwd": os.getcwd(), "files": files}}
entry["env"] = {{k: os.environ.get(k) for k in ("GH_TOKEN", "PR", "VAULT_TOKEN")}}
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(entry) + "\\n")
answer = os.path.join(os.path.dirname({log!r}), "answer-" + tool)
if tool != "reconciler" and os.path.isfile(answer):
    with open(answer, encoding="utf-8") as handle:
        sys.stdout.write(handle.read())
if tool == "reconciler":
    os.execv({python!r}, [{python!r}, "-m", "reconciler", *args])
"""


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


class Machine:
    """A CI machine: stub tools on PATH, a private HOME with a git identity, and a log of
    every stubbed call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.home = root / "home"
        self.log = root / "calls.jsonl"
        self.bin.mkdir(parents=True)
        self.home.mkdir()
        for tool in STUBBED:
            path = self.bin / tool
            path.write_text(_STUB.format(python=sys.executable, log=str(self.log)))
            path.chmod(0o755)
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = Test\n\temail = test@example.invalid\n"
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
        )

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: nothing of the developer's own shell leaks in."""
        env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "BENTOML_HOME": str(self.home / "no-bentoml"),
            "NO_COLOR": "1",
            "CI": "true",
        }
        env.update(extra or {})
        return env

    def answer(self, tool: str, text: str) -> None:
        """What the stub of ``tool`` prints from now on."""
        (self.root / f"answer-{tool}").write_text(text, encoding="utf-8")

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if tool is None or e["tool"] == tool]

    def run_shell(
        self, script: str, *, cwd: Path, env: Mapping[str, str], name: str
    ) -> subprocess.CompletedProcess[str]:
        path = self.root / f"script-{name}-{len(list(self.root.glob('script-*')))}.sh"
        path.write_text(script, encoding="utf-8")
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


# ---------------------------------------------------------------- expressions

_GH_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
    r"|(?P<num>\d+)|(?P<name>[A-Za-z_][\w.-]*))"
)
_STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")


def github_eval(text: str, context: Mapping[str, Any], status: str = "success") -> Any:
    """Evaluate a GitHub Actions expression (``${{ }}`` optional). Like GitHub, a condition
    without a status function means ``success() && (condition)``."""
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2].strip()
    parts: list[str] = []
    position = 0
    while position < len(text):
        match = _GH_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot evaluate {text!r} at {text[position:]!r}")
        position = match.end()
        if match["str"]:
            parts.append(repr(match["str"][1:-1].replace("''", "'")))
        elif match["op"]:
            parts.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
        elif match["num"]:
            parts.append(match["num"])
        else:
            name = match["name"]
            if name in _STATUS_FUNCTIONS:
                parts.append(f"_{name}")
            elif name in ("true", "false", "null"):
                parts.append({"true": "True", "false": "False", "null": "None"}[name])
            else:
                parts.append(f"_lookup({name!r})")

    def lookup(path: str) -> Any:
        value: Any = context
        for key in path.split("."):
            value = value.get(key, "") if isinstance(value, Mapping) else ""
        return value

    names: dict[str, Callable[..., Any]] = {
        "_always": lambda: True,
        "_success": lambda: status == "success",
        "_failure": lambda: status == "failure",
        "_cancelled": lambda: False,
        "_lookup": lookup,
    }
    result = eval("".join(parts), {"__builtins__": {}}, names)  # our own tokens only
    return result


def github_condition(text: str, context: Mapping[str, Any], status: str) -> bool:
    if not any(f"{name}(" in text for name in _STATUS_FUNCTIONS) and status != "success":
        return False
    return bool(github_eval(text, context, status))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def interpolate(value: Any, context: Mapping[str, Any]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(github_eval(m.group(1), context)), str(value))


_GL_TOKEN = re.compile(
    r'\s*(?:(?P<str>"[^"]*")|(?P<op>==|!=|&&|\|\||\(|\))|(?P<var>\$[A-Za-z_]\w*))'
)


def gitlab_rule(text: str, variables: Mapping[str, str]) -> bool:
    """Evaluate a GitLab ``rules: - if:`` expression (comparisons, && and ||)."""
    parts: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _GL_TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot evaluate {text!r} at {text[position:]!r}")
        position = match.end()
        if match["str"]:
            parts.append(repr(match["str"][1:-1]))
        elif match["op"]:
            parts.append({"&&": " and ", "||": " or "}.get(match["op"], match["op"]))
        else:
            parts.append(repr(variables.get(match["var"][1:])))
    return bool(eval("".join(parts), {"__builtins__": {}}, {}))  # our own tokens only


# ---------------------------------------------------------------- GitHub Actions


@dataclass
class Job:
    """What one job did."""

    name: str
    skipped: bool = False
    status: str = "success"
    outputs: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    workspace: Path | None = None
    summary: str = ""

    def __str__(self) -> str:
        return f"job {self.name}: {self.status}\n" + "\n".join(self.logs)


class GitHubRun:
    """One workflow run (one event): jobs share its artifacts."""

    def __init__(
        self,
        machine: Machine,
        remote: Path,
        workflow: Mapping[str, Any],
        *,
        event: str,
        ref: str,
        checkout: str,
        secrets: Mapping[str, str],
        variables: Mapping[str, str],
        pull_request: int | None = None,
        logins: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """``logins``: for a login action (``hashicorp/vault-action@v3``,
        ``aws-actions/configure-aws-credentials@v4``), the variables it exports."""
        self.logins = {k: dict(v) for k, v in (logins or {}).items()}
        self.machine = machine
        self.remote = remote
        self.workflow = workflow
        self.checkout = checkout
        self.number = len(list(machine.root.glob("run-*")))
        self.root = machine.root / f"run-{self.number}"
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True)
        sha = git("rev-parse", checkout, cwd=remote).strip()
        self.github: dict[str, Any] = {
            "event_name": event,
            "ref": ref,
            "sha": sha,
            "token": "github-token",
            "event": {"pull_request": {"number": pull_request}} if pull_request else {},
        }
        self.secrets = dict(secrets)
        self.variables = dict(variables)
        self.jobs: dict[str, Job] = {}

    def run(self, job_id: str) -> Job:
        spec = self.workflow["jobs"][job_id]
        needs = spec.get("needs", [])
        needs = [needs] if isinstance(needs, str) else list(needs)
        context: dict[str, Any] = {
            "github": self.github,
            "secrets": self.secrets,
            "vars": self.variables,
            "needs": {
                name: {"outputs": self.jobs[name].outputs, "result": self.jobs[name].status}
                for name in needs
            },
            "steps": {},
        }
        status = "success" if all(self.jobs[n].status == "success" for n in needs) else "failure"
        job = Job(job_id)
        self.jobs[job_id] = job
        if not github_condition(str(spec.get("if", "success()")), context, status):
            job.skipped = True
            job.status = "skipped"
            return job
        workspace = self.root / job_id
        temp = self.root / f"{job_id}-temp"
        workspace.mkdir()
        temp.mkdir()
        job.workspace = workspace
        summary = temp / "step-summary.md"
        summary.touch()
        context["runner"] = {"temp": str(temp)}
        env = self.machine.env(
            {
                "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_EVENT_NAME": self.github["event_name"],
                "GITHUB_REF": self.github["ref"],
                "GITHUB_SHA": self.github["sha"],
                "GITHUB_STEP_SUMMARY": str(summary),
                "RUNNER_TEMP": str(temp),
            }
        )
        for scope in (self.workflow.get("env", {}), spec.get("env", {})):
            env.update({k: interpolate(v, context) for k, v in scope.items()})
        for index, step in enumerate(spec["steps"]):
            condition = str(step.get("if", "success()"))
            if not github_condition(condition, context, job.status):
                job.logs.append(f"[{index}] skipped: {step.get('name') or step.get('uses')}")
                continue
            if "uses" in step:
                self._uses(step, workspace, context, job, env)
                continue
            outputs = temp / f"output-{index}"
            outputs.touch()
            step_env = dict(env)
            step_env.update({k: interpolate(v, context) for k, v in step.get("env", {}).items()})
            step_env["GITHUB_OUTPUT"] = str(outputs)
            cwd = workspace / step.get("working-directory", ".")
            result = self.machine.run_shell(
                interpolate(step["run"], context), cwd=cwd, env=step_env, name=job_id
            )
            job.logs.append(
                f"[{index}] {step.get('name') or step['run'].splitlines()[0]} -> "
                f"{result.returncode}\n{result.stdout}{result.stderr}"
            )
            if result.returncode != 0:
                job.status = "failure"
            if "id" in step:
                values = dict(
                    line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line
                )
                context["steps"][step["id"]] = {"outputs": values}
        job.outputs = {k: interpolate(v, context) for k, v in spec.get("outputs", {}).items()}
        job.summary = summary.read_text(encoding="utf-8")
        return job

    def _uses(
        self,
        step: Mapping[str, Any],
        workspace: Path,
        context: Mapping[str, Any],
        job: Job,
        env: dict[str, str],
    ) -> None:
        action = str(step["uses"])
        options = {k: interpolate(v, context) for k, v in step.get("with", {}).items()}
        if action in _LOGIN_OPTIONS:
            for option in _LOGIN_OPTIONS[action]:
                assert options.get(option), f"{action} needs {option}: {options}"
            assert action in self.logins, f"the test gave no login for {action}"
            env.update(self.logins[action])  # what the action exports to later steps
            job.logs.append(f"uses {action} (emulated login) {sorted(options)}")
            return
        if action == "actions/checkout@v4":
            ref = options.get("ref", self.checkout)
            target = workspace / options.get("path", ".")
            target.mkdir(parents=True, exist_ok=True)
            git("clone", "--quiet", "--branch", ref, str(self.remote), ".", cwd=target)
        elif action == "actions/setup-python@v5":
            pass  # this interpreter runs reconciler
        elif action == "actions/upload-artifact@v4":
            store = self.artifacts / options["name"]
            store.mkdir()
            for line in options["path"].splitlines():
                shutil.copy2(workspace / line.strip(), store)
        elif action == "actions/download-artifact@v4":
            target = workspace / options.get("path", ".")
            for item in (self.artifacts / options["name"]).iterdir():
                shutil.copy2(item, target)
        else:
            raise AssertionError(f"the emulator does not know the action {action}")
        job.logs.append(f"uses {action} {options}")


# The login actions the emulator knows, and the options each must be given.
_LOGIN_OPTIONS = {
    "hashicorp/vault-action@v3": ("url", "method", "role", "exportToken"),
    "aws-actions/configure-aws-credentials@v4": ("role-to-assume", "aws-region"),
}


# ---------------------------------------------------------------- GitLab CI


class GitLabPipeline:
    """One pipeline: jobs run in stage order; artifacts and dotenv reports flow to the
    jobs that ``need`` them."""

    def __init__(
        self,
        machine: Machine,
        remote: Path,
        config: Mapping[str, Any],
        *,
        variables: Mapping[str, str],
        checkout: str,
        git_urls: Mapping[str, str],
    ) -> None:
        self.machine = machine
        self.remote = remote
        self.config = config
        self.checkout = checkout
        self.variables = dict(variables)
        self.number = len(list(machine.root.glob("pipeline-*")))
        self.root = machine.root / f"pipeline-{self.number}"
        self.root.mkdir()
        self.jobs: dict[str, Job] = {}
        self.dotenv: dict[str, dict[str, str]] = {}
        # The hosted repository's URLs lead to the local bare one.
        self.git_env = {"GIT_CONFIG_COUNT": str(len(git_urls))}
        for index, (url, target) in enumerate(git_urls.items()):
            self.git_env[f"GIT_CONFIG_KEY_{index}"] = f"url.{target}.insteadOf"
            self.git_env[f"GIT_CONFIG_VALUE_{index}"] = url

    def included(self, job_id: str) -> bool:
        rules = self.config[job_id].get("rules")
        if rules is None:
            return True
        return any(gitlab_rule(rule["if"], self.variables) for rule in rules)

    def run(self, job_id: str) -> Job:
        spec = self.config[job_id]
        job = Job(job_id)
        self.jobs[job_id] = job
        if not self.included(job_id):
            job.skipped = True
            job.status = "skipped"
            return job
        needs = spec.get("needs", [])
        workspace = self.root / job_id
        workspace.mkdir()
        job.workspace = workspace
        git("clone", "--quiet", "--branch", self.checkout, str(self.remote), ".", cwd=workspace)
        variables = dict(self.variables)
        for name in needs:
            assert self.jobs[name].status == "success", f"{job_id} needs {name}, which failed"
            variables.update(self.dotenv.get(name, {}))
            artifacts = self.root / f"{name}-artifacts"
            for item in artifacts.iterdir() if artifacts.exists() else ():
                shutil.copy2(item, workspace)
        # Job variables from the file, overridden by the project's (as in GitLab).
        env = self.machine.env({**spec.get("variables", {}), **variables, **self.git_env})
        for name, token in spec.get("id_tokens", {}).items():
            env[name] = f"emulated-id-token-for-{token['aud']}"
        default = self.config.get("default", {})
        script = [*default.get("before_script", []), *spec["script"]]
        result = self.machine.run_shell("\n".join(script), cwd=workspace, env=env, name=job_id)
        job.logs.append(f"script -> {result.returncode}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            job.status = "failure"
        if spec.get("after_script"):
            # A shell of its own, run whatever the script did.
            after = self.machine.run_shell(
                "\n".join(spec["after_script"]), cwd=workspace, env=env, name=job_id
            )
            job.logs.append(f"after_script -> {after.returncode}\n{after.stdout}{after.stderr}")
            assert after.returncode == 0, str(job)  # GitLab would only warn; we insist
        artifacts_spec = spec.get("artifacts", {})
        store = self.root / f"{job_id}-artifacts"
        store.mkdir()
        for path in artifacts_spec.get("paths", []):
            if (workspace / path).exists():
                shutil.copy2(workspace / path, store)
        report = artifacts_spec.get("reports", {}).get("dotenv")
        if report and (workspace / report).exists():
            lines = (workspace / report).read_text().splitlines()
            self.dotenv[job_id] = dict(line.split("=", 1) for line in lines if "=" in line)
        return job
