"""Shared fixtures: one synthetic demo corpus per test session, isolated Dagster homes."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from asr_distill.demo.corpus import CorpusReport, generate_corpus
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.storage import LocalStorage

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, CorpusReport]:
    """The small demo corpus (3 speech prefixes + ``broken/``), generated once, read-only for tests."""
    root = tmp_path_factory.mktemp("raw")
    store = LocalStorage(root)
    report = generate_corpus(store, seed=0, size="small")
    return store, report


@pytest.fixture()
def lake(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "lake")


@pytest.fixture()
def instance(tmp_path: Path):
    """A real (SQLite) Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def register_partitions(instance: dg.DagsterInstance, names: list[str]) -> None:
    instance.add_dynamic_partitions(raw_prefix_partitions.name, names)
