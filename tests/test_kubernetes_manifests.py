"""The manifests in ``deploy/kubernetes/``: every object validates against the API server's schemas
(strict; the ServiceMonitor against the CRD's fields), every pod runs as non-root on a read-only root file
system with its writable paths on volumes, the ConfigMap's ``sluice.yaml`` loads with the Secret's keys,
and each role's container command, as the manifests spell it, starts through the image's entrypoint
script against the local stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from features.config import load_config
from tests.kubernetes_schemas import validate
from tests.streaming import delete_topics, get_when_up, make_repo, sluice, stop

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
WORKLOADS = ("Deployment", "StatefulSet")


def objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return found


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every workload."""
    for manifest in objects():
        if manifest["kind"] in WORKLOADS:
            pod = manifest["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield pod, container


def test_every_object_validates_against_the_api_servers_schema() -> None:
    kinds = sorted({manifest["kind"] for manifest in objects()})
    assert kinds == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service",
        "ServiceMonitor", "StatefulSet",
    ]  # fmt: skip
    for manifest in objects():
        validate(manifest)


def test_the_validation_refuses_a_field_the_schema_does_not_have() -> None:
    import jsonschema

    worker = next(manifest for manifest in objects() if manifest["kind"] == "StatefulSet")
    worker["spec"]["template"]["spec"]["containers"][0]["cpuLimit"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        validate(worker)
    monitor = next(manifest for manifest in objects() if manifest["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "half a minute"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_pods_run_as_non_root_on_a_read_only_root_with_their_writable_paths_on_volumes() -> None:
    roles = set()
    for pod, container in containers():
        roles.add(container["args"][0])
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        writable = [
            mount["mountPath"]
            for mount in container["volumeMounts"]
            if "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly")
        ]
        env = {item["name"]: item.get("value") for item in container["env"]}
        for name in ("SLUICE_STATE_DIR", "NUMBA_CACHE_DIR", "HOME"):
            assert any(env[name] == path or env[name].startswith(path + "/") for path in writable), name
        assert "/tmp" in writable
        assert {"configMapRef", "secretRef"} & {key for item in container["envFrom"] for key in item}
    assert roles == {"worker", "monitor", "serve", "ui"}


def test_the_config_map_loads_with_the_secrets_keys(tmp_path: Path) -> None:
    by_kind = {
        manifest["kind"]: manifest for manifest in objects() if manifest["kind"] in ("ConfigMap", "Secret")
    }
    text = by_kind["ConfigMap"]["data"]["sluice.yaml"]
    secret = by_kind["Secret"]["stringData"]
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= secret.keys()
    (tmp_path / "sluice.yaml").write_text(text)
    config = load_config(tmp_path, environ=secret)
    assert config.kafka.sasl_password == secret["KAFKA_PASSWORD"]
    assert config.registry.path == secret["SLUICE_REGISTRY_URL"]
    assert config.alerts.store_url == secret["SLUICE_STORE_URL"]
    assert config.profiles.startswith("s3://") and config.scores_location.startswith("s3://")
    # Every workload mounts the ConfigMap where the repo's sluice.yaml is, and reads the Secret.
    for _, container in containers():
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert mounts[f"{container['workingDir']}/sluice.yaml"]["subPath"] == "sluice.yaml"
        assert {"secretRef": {"name": "sluice-credentials"}} in container["envFrom"]


def expand(argument: str, env: dict[str, str]) -> str:
    """``$(NAME)`` in a container's args, as the kubelet expands it from the container's env."""
    return re.sub(r"\$\((\w+)\)", lambda match: env.get(match.group(1), match.group(0)), argument)


@pytest.mark.stack
def test_each_roles_command_starts_through_the_images_entrypoint(
    tmp_path: Path, project: str, topic: str
) -> None:
    """What a pod runs: ``sluice-entrypoint ARGS`` in the repo folder, with the container's env (its
    volume paths under a temporary root, $(POD_NAME) as the kubelet fills it), against the local stack
    instead of the ConfigMap's addresses."""
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    root = tmp_path / "volumes"
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for _, container in containers():
            env = {
                item["name"]: str(root) + item["value"] if item["value"].startswith("/") else item["value"]
                for item in container["env"]
                if "value" in item
            }
            env["POD_NAME"] = "sluice-worker-0"
            for path in env.values():
                if path.startswith(str(root)):
                    Path(path).mkdir(parents=True, exist_ok=True)
            args = [expand(argument, env) for argument in container["args"]]
            log = tmp_path / f"{args[0]}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [str(ENTRYPOINT), *args],
                    cwd=repo,
                    env={
                        **os.environ,
                        **env,
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                    },
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append((args[0], process, log))
        port = {"worker": "9400", "monitor": "9401", "serve": "6566", "ui": "8790"}
        for role, process, log in processes:
            path = "/health" if role in ("serve", "ui") else "/metrics"
            answer = get_when_up(f"http://127.0.0.1:{port[role]}{path}", process, log, timeout_s=90)
            assert "sluice_" in answer or role in ("serve", "ui"), answer[:500]
    finally:
        for _, process, _ in processes:
            stop(process)
        delete_topics(topic, f"{topic}.dlq")
    # Each role wrote its state under the volume, not into the image.
    assert (root / "var" / "lib" / "sluice").is_dir()
