"""Move the model versions of sluice's own registry table into MLflow's registry, once.

Each model becomes a registered model, and each of its versions a model version, in the order they were
made. A version gets a run of its own in the ``sluice-migrated`` experiment, holding the metrics the table
kept; its files, where they are on this machine (a ``file:`` URI or a path), are uploaded as the run's
artifacts, as MLflow registers local files only from a run; a version whose files are elsewhere
(``s3://``, ``gs://``...) is registered where it is. A version whose local files are gone is not
registered: a version nobody can load would be worse than none, and the result says so. Tags keep what
the table knew: the version's old name (``sluice.version``), the job that trained it (``sluice.job_id``)
and where its files were (``sluice.source``). A version already moved (found by its ``sluice.version``
tag) is skipped, so running it twice moves nothing twice. The newest moved version of each model becomes
its ``champion``, as it was what scoring used.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from monitors.retraining.mlflow import MlflowRegistry
from monitors.retraining.store import LegacyRegistry, ModelVersion

__all__ = ["EXPERIMENT", "Migrated", "migrate"]

EXPERIMENT = "sluice-migrated"


@dataclass(frozen=True, kw_only=True)
class Migrated:
    model: str
    old_version: str
    version: str | None
    """Its version in MLflow; None when it could not be moved."""
    moved: bool
    """False when an earlier run had moved it already, or when it cannot be moved (``problem``)."""
    problem: str = ""


def migrate(legacy: LegacyRegistry, registry: MlflowRegistry) -> list[Migrated]:
    result = []
    for model in legacy.models():
        known = {entry.tags.get("sluice.version"): entry.version for entry in registry.versions(model)}
        newest = None
        for entry in legacy.versions(model):
            if entry.version in known:
                moved = Migrated(
                    model=model, old_version=entry.version, version=known[entry.version], moved=False
                )
            else:
                moved = _move(entry, registry)
            result.append(moved)
            newest = moved.version or newest
        if newest is not None and registry.alias(model, "champion") is None:
            registry.set_alias(model, "champion", newest)
    return result


def _move(entry: ModelVersion, registry: MlflowRegistry) -> Migrated:
    local = _local_path(entry.uri)
    if local is not None and not local.exists():
        return Migrated(
            model=entry.model,
            old_version=entry.version,
            version=None,
            moved=False,
            problem=f"its files are gone from {local}; register it again from where they are",
        )
    tags = {"sluice.version": entry.version, "sluice.source": entry.uri}
    if entry.job_id:
        tags["sluice.job_id"] = entry.job_id
    run = registry.start_run(experiment=EXPERIMENT, name=f"{entry.model}-{entry.version}", tags=tags)
    registry.log(run, metrics=entry.metrics)
    if local is None:
        source = entry.uri
    elif local.is_dir():
        source = registry.log_artifacts(run, local)
    else:  # one file: upload it alone, under its own name
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy2(local, Path(folder) / local.name)
            source = registry.log_artifacts(run, Path(folder))
    registry.finish(run)
    version = registry.register(entry.model, source=source, run_id=run, tags=tags)
    return Migrated(model=entry.model, old_version=entry.version, version=version, moved=True)


def _local_path(uri: str) -> Path | None:
    """The path of a ``file:`` URI or a bare path; None for a URI of some other store."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None
