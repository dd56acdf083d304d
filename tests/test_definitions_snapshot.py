"""The code location's shape, compared with a committed snapshot so that a rename fails loudly.

Asset keys (group, partitions, upstream assets), asset checks (blocking or not), job selections, sensors,
schedules, partitions definitions and resource keys, all sorted, must equal
``tests/snapshots/definitions.json``. After an intended change, regenerate the file and commit it::

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from asr_distill.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
UPDATE_ENV = "UPDATE_SNAPSHOTS"


def _key(key: dg.AssetKey) -> str:
    return key.to_user_string()


def definitions_snapshot(defs: dg.Definitions) -> dict[str, Any]:
    """Everything a user or a sensor refers to by name, sorted (no Dagster-internal jobs)."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=_key):
        node = graph.get(key)
        assets[_key(key)] = {
            "group": node.group_name,
            "partitions": getattr(node.partitions_def, "name", None) if node.partitions_def else None,
            "kind": "materializable" if node.is_materializable else "observable",
            "upstream": sorted(_key(k) for k in node.parent_keys),
        }
    checks: dict[str, dict[str, str]] = {}
    for check_key in graph.asset_check_keys:
        blocking = graph.get(check_key).blocking
        checks.setdefault(_key(check_key.asset_key), {})[check_key.name] = (
            "blocking" if blocking else "non-blocking"
        )
    jobs: dict[str, Any] = {}
    for job in repo.get_all_jobs():
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        selected = sorted(_key(k) for k in job.asset_layer.selected_asset_keys)
        jobs[job.name] = (
            {"assets": selected} if selected else {"ops": sorted(n.name for n in job.graph.node_defs)}
        )
    sensors = {
        s.name: {
            "jobs": sorted(j.name for j in s.jobs) if s.has_jobs else [],
            "default_status": s.default_status.value,
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        for s in repo.sensor_defs
    }
    schedules = {s.name: {"cron": s.cron_schedule, "job": s.job_name} for s in repo.schedule_defs}
    partitions = sorted(
        {
            n.partitions_def.name
            for n in (graph.get(k) for k in graph.get_all_asset_keys())
            if n.partitions_def
        }
    )
    return {
        "assets": assets,
        "asset_checks": {a: dict(sorted(c.items())) for a, c in sorted(checks.items())},
        "jobs": dict(sorted(jobs.items())),
        "sensors": dict(sorted(sensors.items())),
        "schedules": dict(sorted(schedules.items())),
        "partitions_definitions": partitions,
        "resources": sorted(defs.resources or {}),
    }


def test_definitions_match_the_committed_snapshot(tmp_path: Path) -> None:
    defs = build_definitions(raw=str(tmp_path / "raw"), lake=str(tmp_path / "lake"))
    dg.Definitions.validate_loadable(defs)
    found = definitions_snapshot(defs)
    text = json.dumps(found, indent=2, sort_keys=False) + "\n"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.exists(), f"no snapshot yet: run with {UPDATE_ENV}=1 and commit {SNAPSHOT}"
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert found == expected, (
        f"the definitions differ from {SNAPSHOT.name}; if the change is intended, regenerate it with "
        f"{UPDATE_ENV}=1 .venv/bin/python -m pytest tests/{Path(__file__).name} and commit it"
    )


def test_every_check_attaches_to_a_lineage_asset_and_groups_read_as_the_pipeline() -> None:
    snap = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert set(snap["asset_checks"]) <= set(snap["assets"])
    groups: dict[str, list[str]] = {}
    for key, asset in snap["assets"].items():
        groups.setdefault(asset["group"], []).append(key)
    # Two groups in lineage order: the global graph shows ingest -> distill, not one box per asset.
    assert groups == {
        "ingest": ["audio_index", "cleaned_audio", "raw_audio", "segmented_audio", "webdataset_shards"],
        "distill": ["teacher_labels", "training_manifests"],
    }
