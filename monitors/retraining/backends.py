"""The job backends by name, with what each needs: an explicit registry, no plugin lookup.

>>> sorted(BACKENDS)
['kubernetes', 'local', 'ray']
>>> BACKENDS["ray"].install
"pip install 'sluice[ray]'"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from features.config import SluiceConfig
from monitors.retraining.jobs import JobBackend

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
}


def job_backend(config: SluiceConfig, repo_path: Path) -> JobBackend:
    name = config.retraining.backend
    if name not in BACKENDS:
        raise ValueError(f"unknown job backend {name!r}; use one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name].build(config, repo_path)
