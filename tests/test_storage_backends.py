"""One conformance suite for every place offline data can live: a local folder, S3 (moto's server),
Google Cloud Storage (fake-gcs-server) and Azure Blob Storage (Azurite), all on loopback.

The same checks run on each: bytes and Parquet written whole and read back, listing, moving and
deleting, then the parts of sluice that sit on them (a view's batch files, state snapshots, reference
profiles) written and read back through each one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from features.config import OfflineStoreConfig, SluiceConfig
from features.repo import load_repo
from monitors.drift.profile import ReferenceProfile
from offline_store.dataset import OfflineDataset
from offline_store.storage import Location
from streams.snapshots import PartitionSnapshot, SnapshotStore
from streams.windows import WindowState
from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY, EmulatorUnavailable, azurite, fake_gcs
from tests.s3 import CREDENTIALS, ENDPOINT
from tests.streaming import make_repo

pytestmark = pytest.mark.stack


@pytest.fixture(params=["local", "s3", "gs", "abfs"])
def root(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stack_config: SluiceConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, OfflineStoreConfig]]:
    """A fresh folder on the backend: its URI, and the ``offline_store`` settings that reach it."""
    backend = request.param
    name = f"sluice-{uuid.uuid4().hex[:12]}"
    if backend == "local":
        yield str(tmp_path / "data"), OfflineStoreConfig()
    elif backend == "s3":
        for variable, value in CREDENTIALS.items():
            monkeypatch.setenv(variable, value)
        pafs.S3FileSystem(
            endpoint_override=ENDPOINT.split("://")[1], scheme="http", allow_bucket_creation=True
        ).create_dir(name)
        yield f"s3://{name}/data", OfflineStoreConfig(endpoint_url=ENDPOINT)
    elif backend == "gs":
        try:
            with fake_gcs(stack_config.state_dir, tmp_path) as endpoint:
                monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
                monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "sluice-tests")  # buckets belong to a project
                Location.parse(f"gs://{name}").filesystem.create_dir(name)
                yield f"gs://{name}/data", OfflineStoreConfig()
        except EmulatorUnavailable as error:
            pytest.fail(str(error))
    else:
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
        try:
            with azurite(stack_config.state_dir, tmp_path) as endpoint:
                options = OfflineStoreConfig(endpoint_url=endpoint)
                uri = f"abfs://{name}@{AZURITE_ACCOUNT}.dfs.core.windows.net"
                Location.parse(uri, options).filesystem.create_dir(name)
                yield f"{uri}/data", options
        except EmulatorUnavailable as error:
            pytest.fail(str(error))


def test_bytes_are_written_whole_listed_moved_and_deleted(root: tuple[str, OfflineStoreConfig]) -> None:
    uri, options = root
    folder = Location.parse(uri, options)
    payload = np.random.default_rng(0).bytes(3 << 20)  # several upload parts' worth
    folder.child("a", "one.bin").write_bytes(payload)
    folder.child("a", "b", "two.bin").write_bytes(b"two")
    assert folder.child("a", "one.bin").read_bytes() == payload
    assert folder.child("a", "one.bin").exists() and not folder.child("a", "none.bin").exists()
    assert sorted(file.name for file in folder.child("a").files()) == ["one.bin", "two.bin"]
    assert [file.name for file in folder.child("a").files(recursive=False)] == ["one.bin"]
    assert list(folder.child("missing").files()) == []
    folder.child("a").move_to(folder.child("moved"))
    assert sorted(file.name for file in folder.child("moved").files()) == ["one.bin", "two.bin"]
    assert list(folder.child("a").files()) == []
    folder.child("moved", "one.bin").delete()
    folder.child("moved", "one.bin").delete()  # gone already: not an error
    assert [file.name for file in folder.child("moved").files()] == ["two.bin"]


def test_parquet_round_trips_with_its_schema(root: tuple[str, OfflineStoreConfig]) -> None:
    uri, options = root
    table = pa.table(
        {
            "card_id": pa.array([1, 2, 3], pa.int64()),
            "amount": pa.array([1.5, None, 3.25]),
            "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
            "at": pa.array([0, 1, 2], pa.timestamp("us", tz="UTC")),
        }
    )
    target = Location.parse(uri, options).child("table.parquet")
    target.write_parquet(table)
    assert target.read_parquet().equals(table)
    assert target.read_schema() == table.schema


def test_a_views_batch_files_snapshots_and_profiles_live_there(
    root: tuple[str, OfflineStoreConfig], tmp_path: Path
) -> None:
    uri, options = root
    spec = load_repo(make_repo(tmp_path / "repo", project="p", topic="t", offline=uri)).spec("card_stats")
    spec = replace(spec, offline_store=options)
    dataset = OfflineDataset(spec=spec)
    times = np.array([1_700_000_000_000_000, 1_700_000_001_000_000], dtype=np.int64)
    features = {name: np.array([1.0, 2.0]) for name in spec.features}
    dataset.write_batch(
        partition=0, first_offset=0, last_offset=1, keys=[7, 8], event_times_us=times,
        created_times_us=times, offsets=np.array([0, 1]), features=features,
    )  # fmt: skip
    [batch] = list(dataset.batch_files())
    assert (batch.first_offset, batch.last_offset) == (0, 1)
    frame = dataset.read().to_pandas().sort_values("card_id")
    assert frame["card_id"].tolist() == [7, 8] and frame["amount_sum_30s"].tolist() == [1.0, 2.0]

    state = WindowState(spec=spec)
    state.advance(state.ids_for([7]), times[:1], np.array([0]), {"amount": np.array([5.0])})
    snapshots = SnapshotStore(spec=spec, root=dataset.root)
    snapshot = PartitionSnapshot(offset=41, max_event_time=int(times[0]), vocabularies={}, state=state)
    snapshots.save(0, snapshot.to_bytes(spec), offset=41)
    restored = snapshots.newest(0, before=42)
    assert restored is not None and restored.offset == 41 and restored.state is not None
    assert restored.state.entity_keys == [7]
    assert snapshots.newest(0, before=41) is None  # not past the commit

    training = pd.DataFrame({"amount": np.random.default_rng(1).normal(size=300), "country": ["DE"] * 300})
    profile = ReferenceProfile.build(training, model="fraud", version="2")
    profile.save(f"{uri}/profiles", storage=options)
    loaded = ReferenceProfile.load(f"{uri}/profiles", model="fraud", version="2", storage=options)
    assert loaded.features["amount"].sample.tolist() == profile.features["amount"].sample.tolist()
