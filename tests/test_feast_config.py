"""``sluice apply`` writes the ``feature_store.yaml`` Feast's SDK needs: never a user's, never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.registry import FEAST_CONFIG_FILE, feast_repo_config, write_feast_config
from features.repo import load_repo

DEFINITIONS = """
from feast import Entity, ValueType

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
"""


def repo_with(tmp_path: Path, config: str) -> Path:
    (tmp_path / "sluice.yaml").write_text(config)
    (tmp_path / "definitions.py").write_text(DEFINITIONS)
    return tmp_path


@pytest.mark.parametrize(
    ("config", "environment", "reference"),
    [
        ("project: plain\n", {}, None),
        (
            "project: secret\nredis:\n  url: rediss://cache.internal:6380/2\n  password: ${REDIS_PW}\n",
            {"REDIS_PW": "hunter2"},
            "${REDIS_PW}",
        ),
        # A literal password, or one in the URL, is not copied: Feast reads it from SLUICE_REDIS_PASSWORD.
        ("project: inline\nredis:\n  url: redis://:hunter2@cache:6379/0\n", {}, "${SLUICE_REDIS_PASSWORD}"),
        (
            "project: sql\nregistry:\n  path: postgresql://feast:hunter2@db:5432/registry\n",
            {},
            "${SLUICE_REGISTRY_PASSWORD}",
        ),
    ],
)
def test_feasts_sdk_loads_the_written_file_with_the_same_settings_and_no_secret_in_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    environment: dict[str, str],
    reference: str | None,
) -> None:
    from feast.repo_config import load_repo_config

    for name, value in {
        **environment,
        "SLUICE_REDIS_PASSWORD": "hunter2",
        "SLUICE_REGISTRY_PASSWORD": "hunter2",
    }.items():
        monkeypatch.setenv(name, value)
    repo = load_repo(repo_with(tmp_path, config))
    written = write_feast_config(repo)
    assert written == tmp_path / FEAST_CONFIG_FILE
    text = written.read_text()
    assert "hunter2" not in text
    if reference is not None:
        assert reference in text

    theirs = load_repo_config(tmp_path, written)  # what FeatureStore(repo_path=...) does
    ours = feast_repo_config(repo.config, repo.path)
    assert theirs.project == ours.project
    assert theirs.online_store.connection_string == ours.online_store.connection_string
    assert theirs.registry.registry_type == ours.registry.registry_type
    assert theirs.entity_key_serialization_version == ours.entity_key_serialization_version
    if ours.registry.registry_type == "file":
        assert (tmp_path / theirs.registry.path).resolve() == Path(ours.registry.path).resolve()
    else:
        assert theirs.registry.path == ours.registry.path


def test_a_users_file_is_never_overwritten(tmp_path: Path) -> None:
    repo = load_repo(repo_with(tmp_path, "project: mine\n"))
    (tmp_path / FEAST_CONFIG_FILE).write_text("project: hand_written\n")
    assert write_feast_config(repo) is None
    assert (tmp_path / FEAST_CONFIG_FILE).read_text() == "project: hand_written\n"
