"""The job backends by name, with what each needs: an explicit registry, no plugin lookup.

>>> sorted(BACKENDS)
['kfp', 'kubernetes', 'local', 'metaflow', 'ray']
>>> BACKENDS["ray"].install
"pip install 'sluice[ray]'"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from features.config import SluiceConfig
from monitors.retraining.jobs import JobBackend
from sluice.tools import tool_python

__all__ = ["BACKENDS", "BackendInfo", "job_backend"]


@dataclass(frozen=True, kw_only=True)
class BackendInfo:
    name: str
    description: str
    install: str | None
    """How to install its optional dependency, if it has one."""
    build: Callable[[SluiceConfig, Path], JobBackend]


def _local(config: SluiceConfig, repo_path: Path) -> JobBackend:
    from monitors.retraining.local import LocalBackend

    return LocalBackend(root=config.state_dir / "jobs", cwd=repo_path)


def _ray(config: SluiceConfig, repo_path: Path) -> JobBackend:
    from monitors.retraining.ray_jobs import RayBackend

    return RayBackend(address=config.retraining.ray.address, runtime_env=config.retraining.ray.runtime_env)


def _kubernetes(config: SluiceConfig, repo_path: Path) -> JobBackend:
    from monitors.retraining.kubernetes_jobs import KubernetesBackend

    return KubernetesBackend(config=config.retraining.kubernetes)


def _metaflow(config: SluiceConfig, repo_path: Path) -> JobBackend:
    from monitors.retraining.pipelines.metaflow_backend import MetaflowBackend

    settings = config.retraining.metaflow
    return MetaflowBackend(
        python=Path(settings.python or tool_python(config.state_dir, "metaflow")),
        root=config.state_dir / "jobs",
        datastore_root=Path(settings.datastore_root or config.state_dir / "metaflow"),
        cwd=repo_path,
        decorators=settings.decorators,
    )


def _kfp(config: SluiceConfig, repo_path: Path) -> JobBackend:
    from monitors.retraining.pipelines.kfp_backend import KfpBackend

    settings = config.retraining.kfp
    return KfpBackend(config=settings, python=Path(settings.python or tool_python(config.state_dir, "kfp")))


BACKENDS: dict[str, BackendInfo] = {
    "local": BackendInfo(
        name="local",
        description="a subprocess on this machine; uses its GPU when CUDA is present",
        install=None,
        build=_local,
    ),
    "ray": BackendInfo(
        name="ray",
        description="the Ray Jobs API of a Ray cluster (entrypoint_num_gpus for GPUs)",
        install="pip install 'sluice[ray]'",
        build=_ray,
    ),
    "kubernetes": BackendInfo(
        name="kubernetes",
        description="a batch/v1 Job, a Kubeflow TrainJob or a PyTorchJob with nvidia.com/gpu limits",
        install="pip install 'sluice[kubernetes]'",
        build=_kubernetes,
    ),
    "metaflow": BackendInfo(
        name="metaflow",
        description="a Metaflow run (Runner API) of the retraining flow; --with kubernetes or batch for GPUs",
        install="make pipeline-tools (Metaflow in its own venv under <state_dir>/tools/metaflow)",
        build=_metaflow,
    ),
    "kfp": BackendInfo(
        name="kfp",
        description="a Kubeflow Pipelines run of a one-step pipeline, with nvidia.com/gpu for GPUs",
        install="make pipeline-tools (the kfp SDK in its own venv under <state_dir>/tools/kfp)",
        build=_kfp,
    ),
}


def job_backend(config: SluiceConfig, repo_path: Path) -> JobBackend:
    name = config.retraining.backend
    if name not in BACKENDS:
        raise ValueError(f"unknown job backend {name!r}; use one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name].build(config, repo_path)
