"""Load a feature repo: a folder of Python definition files and one ``sluice.yaml``.

Definition files are imported the way Feast imports them, each under a private module name, and
every Feast object they define at module level is collected. The repo folder goes at the end of
``sys.path``, so definition files can import each other without shadowing installed packages.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.config import SluiceConfig, load_config
from features.spec import FeatureViewSpec
from features.validation import validate

__all__ = ["FeatureRepo", "RepoLoadError", "load_repo", "own_batch_source_name"]

_SKIPPED_DIRS = {"__pycache__", "data", "node_modules"}


class RepoLoadError(ValueError):
    """A definition file could not be imported; the message names the file and line."""


@dataclass(frozen=True, kw_only=True)
class FeatureRepo:
    """A loaded, validated feature repo."""

    path: Path
    config: SluiceConfig
    objects: tuple[Any, ...]
    """The Feast objects the definition files define, in file order, without duplicates."""
    specs: tuple[FeatureViewSpec, ...]
    """The feature views sluice streams, compiled from ``objects``."""

    def spec(self, name: str) -> FeatureViewSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.specs) or "none"
        raise KeyError(f"no streamed feature view named {name!r}; the repo has: {known}")


def load_repo(path: Path, *, config: SluiceConfig | None = None) -> FeatureRepo:
    """Import the repo's definitions, validate them, and resolve relative offline paths against it."""
    path = path.resolve()
    config = config or load_config(path)
    objects = _collect_objects(path)
    validated = validate(objects, project=config.project)
    specs = [_resolve_paths(spec, path, config) for spec in validated]
    _own_batch_sources(objects, specs)
    return FeatureRepo(path=path, config=config, objects=tuple(objects), specs=tuple(specs))


def own_batch_source_name(view_name: str) -> str:
    """The name of the FileSource that sluice registers as a streamed view's own batch source."""
    return f"{view_name}__offline"


def _own_batch_sources(objects: list[Any], specs: list[FeatureViewSpec]) -> None:
    """Point each streamed view's batch source at the view's own folder, so that Feast's registry, and
    Feast's SDK reading training data through it, see each view's rows alone."""
    from feast import FeatureView, FileSource

    views = {item.name: item for item in objects if isinstance(item, FeatureView)}
    for spec in specs:
        view = views[spec.name]
        shared: Any = view.batch_source  # a FileSource: validation refuses any other
        # As the user declared it (Feast reads those timestamp columns, and requires them on a push).
        view.batch_source = FileSource(
            name=own_batch_source_name(spec.name),
            path=spec.offline_path,
            timestamp_field=shared.timestamp_field,
            created_timestamp_column=shared.created_timestamp_column,
            field_mapping=shared.field_mapping,
            s3_endpoint_override=spec.offline_store.endpoint_url
            if spec.offline_path.startswith("s3://")
            else None,
        )


def definition_files(path: Path) -> list[Path]:
    files = []
    for file in sorted(path.rglob("*.py")):
        relative = file.relative_to(path)
        if any(part.startswith(".") or part in _SKIPPED_DIRS for part in relative.parts[:-1]):
            continue
        files.append(file)
    return files


def _collect_objects(path: Path) -> list[Any]:
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    if str(path) not in sys.path:
        sys.path.append(str(path))
    seen: set[int] = set()
    objects: list[Any] = []
    for file in definition_files(path):
        module = _import_file(file, path)
        for value in vars(module).values():
            if isinstance(value, kinds) and id(value) not in seen:
                seen.add(id(value))
                objects.append(value)
    return objects


def _import_file(file: Path, root: Path) -> Any:
    relative = file.relative_to(root).with_suffix("")
    plain = ".".join(relative.parts)
    imported = sys.modules.get(plain)
    if imported is not None and getattr(imported, "__file__", None) == str(file):
        return imported  # a definition file imported it by its own name: the same objects, not copies
    name = "sluice_repo." + plain
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RepoLoadError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as Python's own imports do: dataclasses and pickling look it up there.
    sys.modules[name] = module
    if _resolves_to(plain, file):
        # A file that imports this one by name gets this module, not a second copy of its objects.
        sys.modules.setdefault(plain, module)
    try:
        with warnings.catch_warnings():
            # Feast marks every StreamFeatureView as alpha; sluice is what runs them, so say nothing.
            warnings.filterwarnings("ignore", message="Stream feature views are experimental")
            spec.loader.exec_module(module)
    except SyntaxError as error:
        raise RepoLoadError(f"{file}:{error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:
        line = next(
            (
                frame.lineno
                for frame in reversed(traceback.extract_tb(error.__traceback__))
                if frame.filename == str(file)
            ),
            None,
        )
        where = f"{file}:{line}" if line else str(file)
        hint = ""
        if type(error).__name__ == "FeastModuleImportError" and "transformation" in str(error):
            hint = "; sluice runs python and pandas transformations: use mode='python' or mode='pandas'"
        raise RepoLoadError(f"{where}: {type(error).__name__}: {error}{hint}") from None
    return module


def _resolves_to(name: str, file: Path) -> bool:
    """Whether ``import name`` would import ``file`` (and not an installed module of that name)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return found is not None and found.origin == str(file)


def _resolve_paths(spec: FeatureViewSpec, root: Path, config: SluiceConfig) -> FeatureViewSpec:
    """A relative offline path taken from the repo, and the object-storage settings the path needs."""
    from dataclasses import replace

    spec = replace(spec, offline_store=config.offline_store.for_source(spec.offline_store.endpoint_url))
    if not spec.offline_path or "://" in spec.offline_path or Path(spec.offline_path).is_absolute():
        return spec
    return replace(spec, offline_path=str(root / spec.offline_path))
