"""`sluice plan` and `sluice apply` on a copy of the fraud example, run as a user runs them.

Each test copies examples/fraud into its own folder, with its own Feast project and source topic,
and drives the real CLI in a subprocess against the local Kafka broker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from features.config import SluiceConfig

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

pytestmark = pytest.mark.stack

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fraud"
NO_CHANGES = "no changes: the registry and the topics match the repo"


@dataclass(frozen=True, kw_only=True)
class FraudRepo:
    """A private copy of the fraud example: its folder, project, topic and environment."""

    path: Path
    project: str
    topic: str
    env: dict[str, str]

    @property
    def definitions(self) -> Path:
        return self.path / "card_features.py"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def sluice(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sluice", "--repo", str(self.path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def printed(self, *args: str) -> list[str]:
        """The lines a successful sluice command prints."""
        result = self.sluice(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def edit(self, old: str, new: str, *, count: int = 1) -> None:
        """Replace ``old`` in the definitions, which must hold it exactly ``count`` times."""
        text = self.definitions.read_text(encoding="utf-8")
        assert text.count(old) == count, f"examples/fraud/card_features.py no longer holds {old!r} {count}x"
        self.definitions.write_text(text.replace(old, new), encoding="utf-8")

    def registered(self) -> dict[tuple[str, str], Any]:
        """This project's objects in the Feast registry file, by kind and name (empty without a file)."""
        from feast.protos.feast.core.Registry_pb2 import Registry

        registry_file = self.path / ".sluice" / "registry.db"
        registry = Registry()
        if registry_file.exists():
            registry.ParseFromString(registry_file.read_bytes())
        found: dict[tuple[str, str], Any] = {}
        for kind, items in (
            ("Entity", registry.entities),
            ("StreamFeatureView", registry.stream_feature_views),
            ("FeatureService", registry.feature_services),
        ):
            for item in items:
                if item.spec.project == self.project and item.spec.name != "__dummy":
                    found[(kind, item.spec.name)] = item
        for source in registry.data_sources:
            if source.project == self.project:
                found[("DataSource", source.name)] = source
        return found


@pytest.fixture
def kafka_admin(stack_config: SluiceConfig, topic: str) -> Iterator[KafkaAdminClient]:
    """An admin client; deletes the test's source and dead-letter topics afterwards."""
    # Imported here, under pytest's warning filters: kafka-python warns on import, and Feast,
    # imported by other test modules during collection, lets such warnings through.
    from streams import admin_client

    admin = admin_client(stack_config.kafka)
    yield admin
    created = [name for name in (topic, f"{topic}.dlq") if name in admin.list_topics()]
    if created:
        admin.delete_topics(created)
    admin.close()


@pytest.fixture
def fraud_repo(tmp_path: Path, project: str, topic: str, kafka_admin: KafkaAdminClient) -> FraudRepo:
    path = tmp_path / "fraud"
    # Only what the repo defines: not a registry or Parquet data left by someone's earlier runs.
    shutil.copytree(
        EXAMPLE, path, ignore=shutil.ignore_patterns(".sluice", "data", "__pycache__", "feature_store.yaml")
    )
    config = yaml.safe_load((path / "sluice.yaml").read_text(encoding="utf-8"))
    (path / "sluice.yaml").write_text(yaml.safe_dump({**config, "project": project}), encoding="utf-8")
    repo = FraudRepo(
        path=path,
        project=project,
        topic=topic,
        env={**os.environ, "SLUICE_STATE_DIR": str(tmp_path / "state")},
    )
    repo.edit('topic="transactions"', f'topic="{topic}"')
    return repo


def everything_new(repo: FraudRepo) -> list[str]:
    """What plan and apply print for the fraud example on an empty registry and broker."""
    return [
        "+ Entity card",
        "+ DataSource transactions",
        "+ StreamFeatureView card_transaction_stats",
        "+ FeatureService fraud_model_v1",
        "+ DataSource transactions_history",
        # The view's own batch source: its folder under transactions_history's path.
        "+ DataSource card_transaction_stats__offline",
        f"+ Topic {repo.topic} (4 partitions)",
        f"+ Topic {repo.dlq_topic} (4 partitions)",
        "+ File feature_store.yaml (for Feast's SDK: FeatureStore(repo_path=...))",
    ]


def test_plan_on_a_fresh_repo_lists_everything_and_changes_nothing(
    fraud_repo: FraudRepo, kafka_admin: KafkaAdminClient
) -> None:
    assert fraud_repo.printed("plan") == everything_new(fraud_repo)
    assert fraud_repo.printed("plan") == everything_new(fraud_repo)
    assert not {fraud_repo.topic, fraud_repo.dlq_topic} & set(kafka_admin.list_topics())
    assert fraud_repo.registered() == {}


def test_apply_creates_the_topics_and_registers_the_definitions(
    fraud_repo: FraudRepo, kafka_admin: KafkaAdminClient
) -> None:
    assert fraud_repo.printed("apply") == everything_new(fraud_repo)

    described = kafka_admin.describe_topics([fraud_repo.topic, fraud_repo.dlq_topic])
    assert {topic["name"]: len(topic["partitions"]) for topic in described} == {
        fraud_repo.topic: 4,
        fraud_repo.dlq_topic: 4,
    }
    assert set(fraud_repo.registered()) == {
        ("Entity", "card"),
        ("DataSource", "transactions"),
        ("DataSource", "transactions_history"),
        ("DataSource", "card_transaction_stats__offline"),
        ("StreamFeatureView", "card_transaction_stats"),
        ("FeatureService", "fraud_model_v1"),
    }
    # Feast reads the view's training data from the view's own folder, where the worker writes it.
    view = fraud_repo.registered()[("StreamFeatureView", "card_transaction_stats")]
    assert view.spec.batch_source.file_options.uri.endswith("/card_transaction_stats")

    assert fraud_repo.printed("plan") == [NO_CHANGES]


def test_plan_shows_an_updated_then_a_deleted_definition(fraud_repo: FraudRepo) -> None:
    assert fraud_repo.printed("apply") == everything_new(fraud_repo)

    fraud_repo.edit("ttl=timedelta(days=2)", "ttl=timedelta(days=3)")
    assert fraud_repo.printed("plan") == ["~ StreamFeatureView card_transaction_stats"]
    assert fraud_repo.printed("apply") == ["~ StreamFeatureView card_transaction_stats"]
    view = fraud_repo.registered()[("StreamFeatureView", "card_transaction_stats")]
    assert view.spec.ttl.ToTimedelta() == timedelta(days=3)

    fraud_repo.edit(
        'fraud_model_v1 = FeatureService(name="fraud_model_v1", features=[card_transaction_stats])', ""
    )
    assert fraud_repo.printed("plan") == ["- FeatureService fraud_model_v1"]
    assert fraud_repo.printed("apply") == ["- FeatureService fraud_model_v1"]
    assert ("FeatureService", "fraud_model_v1") not in fraud_repo.registered()


def test_apply_refuses_a_bad_definition_without_a_traceback(
    fraud_repo: FraudRepo, kafka_admin: KafkaAdminClient
) -> None:
    # The example names the functions twice: once for the schema, once for the aggregations.
    fraud_repo.edit('for fn in ("sum", "mean", "max")', 'for fn in ("sum", "median", "max")', count=2)

    applied = fraud_repo.sluice("apply")

    assert applied.returncode == 1
    assert "problems in the feature repo:" in applied.stderr
    assert (
        "StreamFeatureView 'card_transaction_stats': aggregations[6].function: "
        "unknown aggregation function 'median'; valid functions: count, last, max, mean, min, stddev, sum"
    ) in applied.stderr.splitlines()
    assert "Traceback" not in applied.stderr
    assert applied.stdout == ""
    assert not {fraud_repo.topic, fraud_repo.dlq_topic} & set(kafka_admin.list_topics())
    assert fraud_repo.registered() == {}


@pytest.mark.parametrize(
    ("source", "line", "problem"),
    [
        pytest.param(
            'from features import Entity\n\nbroken = Entity(name="broken"\n',
            3,
            "syntax error: '(' was never closed",
            id="syntax error",
        ),
        pytest.param(
            'WINDOWS = {"10m": 600}\nLOOKBACK = WINDOWS["1h"]\n',
            2,
            "KeyError: '1h'",
            id="exception at import",
        ),
    ],
)
def test_a_broken_definition_file_is_named_with_its_line(
    fraud_repo: FraudRepo, source: str, line: int, problem: str
) -> None:
    broken = fraud_repo.path / "broken.py"
    broken.write_text(source, encoding="utf-8")

    planned = fraud_repo.sluice("plan")

    assert planned.returncode == 1
    assert f"Error: {broken}:{line}: {problem}" in planned.stderr.splitlines()
    assert "Traceback" not in planned.stderr


def test_a_kafka_source_without_a_batch_source_is_named_with_its_line(fraud_repo: FraudRepo) -> None:
    text = fraud_repo.definitions.read_text(encoding="utf-8")
    without_history, removed = re.subn(
        r"\n    batch_source=FileSource\(.*?\n    \),", "", text, flags=re.DOTALL
    )
    assert removed == 1
    fraud_repo.definitions.write_text(without_history, encoding="utf-8")
    # Feast refuses the source when the view that reads it is built.
    line = without_history.splitlines().index("card_transaction_stats = StreamFeatureView(") + 1

    applied = fraud_repo.sluice("apply")

    assert applied.returncode == 1
    assert (
        f"Error: {fraud_repo.definitions}:{line}: ValueError: "
        "A batch_source needs to be specified for stream source `transactions`"
    ) in applied.stderr.splitlines()
    assert "Traceback" not in applied.stderr
