"""The container and cluster definitions in infra/ are checked with the tools that run here:
`docker compose config` (no engine needed) and Kubernetes' own JSON schemas (kubernetes-validate)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

INFRA = ROOT / "infra"
K8S_VERSION = "1.33"


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.skipif(not compose_command(), reason="needs `docker compose` or docker-compose (.ci/run installs it)")
def test_docker_compose_file_is_valid_and_gives_the_gpu_worker_one_gpu() -> None:
    done = subprocess.run(
        [*compose_command(), "-f", str(INFRA / "docker-compose.yml"), "config"],  # type: ignore[misc]
        capture_output=True,
        text=True,
        cwd=INFRA,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    services = resolved["services"]
    assert {"postgres", "minio", "prefect-server", "mlflow", "worker-cpu", "worker-gpu"} <= set(services)
    [device] = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    assert "deploy" not in services["worker-cpu"]
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    for worker in ("worker-cpu", "worker-gpu"):
        assert services[worker]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert services[worker]["environment"]["PREFECT_WORKER_QUERY_SECONDS"] == "2", "a round's trials start together"


def k8s_errors(document: dict[str, Any]) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error.message)
    return None


def test_kubernetes_manifests_match_the_schema() -> None:
    documents = [
        document
        for path in sorted((INFRA / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    assert {document["kind"] for document in documents} >= {"Deployment", "Role", "ServiceAccount"}
    for document in documents:
        assert k8s_errors(document) is None, (document["kind"], k8s_errors(document))
    # The worker reads this ConfigMap: it asks for flow runs every 2 s, so a round's trial Jobs start together.
    [endpoints] = [document for document in documents if document["metadata"]["name"] == "tuneloop-endpoints"]
    worker = next(document for document in documents if document["kind"] == "Deployment")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": "tuneloop-endpoints"}} in container["envFrom"]
    assert endpoints["data"]["PREFECT_WORKER_QUERY_SECONDS"] == "2"


def rendered_job(template: dict[str, Any]) -> dict[str, Any]:
    """The Job a Kubernetes worker would submit: placeholders replaced by the variables' defaults."""
    defaults = {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}
    defaults["command"] = ["prefect", "flow-run", "execute"]
    defaults["env"] = [{"name": key, "value": value} for key, value in defaults["env"].items()]

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, str) and (found := re.fullmatch(r"\{\{ (\w+) \}\}", value)):
            return defaults[found.group(1)]
        if isinstance(value, str) and "{{" in value:
            return re.sub(r"\{\{ (\w+) \}\}", lambda match: str(defaults[match.group(1)]), value)
        return value

    return fill(copy.deepcopy(template["job_configuration"]["job_manifest"]))


def test_gpu_job_template_requests_one_gpu_and_renders_to_a_valid_job() -> None:
    template = json.loads((INFRA / "k8s/base-job-template.json").read_text())
    placeholders = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"]), "every placeholder is a variable"
    job = rendered_job(template)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert k8s_errors(job) is None, k8s_errors(job)

    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {}
    assert k8s_errors(broken), "the schema check catches a misspelled field"
