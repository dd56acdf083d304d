"""The index assets and jobs on a real Dagster instance with the real local store."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.definitions.observe import observe  # not re-exported by dagster 1.13

from asr_distill import lake as layout
from asr_distill.assets import raw_audio
from asr_distill.assets.audio_index import audio_index, audio_index_schema
from asr_distill.definitions import build_definitions
from asr_distill.jobs import discover_partitions
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions, stage_resources


def _resources(raw: LocalStorage, lake: LocalStorage) -> dict:
    return stage_resources(raw.uri, lake.uri)


def test_discover_partitions_registers_every_prefix_once(demo_corpus, lake, instance):
    store, report = demo_corpus
    expected = sorted({e.prefix for e in report.entries})
    result = discover_partitions.execute_in_process(instance=instance, resources=_resources(store, lake))
    assert result.success
    assert sorted(instance.get_dynamic_partitions(raw_prefix_partitions.name)) == expected
    assert sorted(result.output_for_node("register_raw_prefixes")) == expected
    again = discover_partitions.execute_in_process(instance=instance, resources=_resources(store, lake))
    assert again.output_for_node("register_raw_prefixes") == []


def test_discover_skips_prefixes_that_cannot_be_partitions(tmp_path, instance):
    raw = LocalStorage(tmp_path / "raw")
    for key in ["good/a.wav", ".hidden/a.wav", "bad,name/a.wav", "also good/x.wav"]:
        raw.write_bytes(key, b"x")
    result = discover_partitions.execute_in_process(
        instance=instance, resources=_resources(raw, LocalStorage(tmp_path / "l"))
    )
    assert sorted(instance.get_dynamic_partitions(raw_prefix_partitions.name)) == ["also good", "good"]
    assert result.success


def test_audio_index_materialises_with_checks_and_metadata(demo_corpus, lake, instance):
    store, report = demo_corpus
    register_partitions(instance, ["broken", "en_read"])
    for partition in ("broken", "en_read"):
        result = dg.materialize(
            [raw_audio, audio_index, audio_index_schema],
            selection=[audio_index, audio_index_schema],
            partition_key=partition,
            instance=instance,
            resources=_resources(store, lake),
        )
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert [(e.check_name, e.passed) for e in evaluations] == [("audio_index_schema", True)]
        md = result.asset_materializations_for_node("audio_index")[0].metadata
        n_audio = sum(1 for e in report.entries if e.prefix == partition and e.kind == "audio")
        assert md["rows"].value == n_audio == md["dagster/row_count"].value
        assert md["total_hours"].value > 0
        for key in ("format_x_sample_rate", "duration_histogram", "probe_errors"):
            assert isinstance(md[key], dg.MarkdownMetadataValue)
        table = pq.read_table(lake.local_path(layout.audio_index_key(partition)))
        assert table.num_rows == n_audio
    broken_md = instance.get_latest_materialization_event(audio_index.key).asset_materialization.metadata
    assert "empty_object" in broken_md["probe_errors"].value or broken_md["probe_error_rows"].value == 0


def test_schema_check_fails_on_a_corrupted_index(demo_corpus, lake, instance):
    store, _ = demo_corpus
    register_partitions(instance, ["en_mixed"])
    dg.materialize(
        [raw_audio, audio_index],
        selection=[audio_index],
        partition_key="en_mixed",
        instance=instance,
        resources=_resources(store, lake),
    )
    key = layout.audio_index_key("en_mixed")
    table = pq.read_table(lake.local_path(key))
    bad = table.set_column(
        table.schema.get_field_index("probe_error"),
        "probe_error",
        dg_col(["no_such_reason"] * table.num_rows),
    )
    # Keep the footer's listing fingerprint so the next run reuses (does not re-probe) the index.
    footer = {
        k: v for k, v in pq.read_metadata(lake.local_path(key)).metadata.items() if k != b"ARROW:schema"
    }
    pq.write_table(bad.replace_schema_metadata(footer), lake.local_path(key))
    result = dg.materialize(
        [raw_audio, audio_index, audio_index_schema],
        selection=[audio_index, audio_index_schema],
        partition_key="en_mixed",
        instance=instance,
        resources=_resources(store, lake),
        raise_on_error=False,
    )
    md = result.asset_materializations_for_node("audio_index")[0].metadata
    assert md["reused_previous_index"].value is True
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and not result.success
    assert evaluation.metadata["failure_cases"].value >= table.num_rows


def dg_col(values):
    import pyarrow as pa

    return pa.array(values, pa.string())


def test_raw_audio_observation_reports_counts_per_partition(demo_corpus, lake, instance):
    store, report = demo_corpus
    register_partitions(instance, ["en_read", "broken"])
    result = observe([raw_audio], instance=instance, resources=_resources(store, lake))
    assert result.success
    observations = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    # Dagster adds one data-version observation per partition; ours carry the counts.
    by_partition = {o.partition: o.metadata for o in observations if "objects" in o.metadata}
    for p in ("en_read", "broken"):
        n = sum(1 for e in report.entries if e.prefix == p)
        assert by_partition[p]["objects"].value == n


def test_definitions_load_and_validate():
    defs = build_definitions(raw="/nonexistent/raw", lake="/nonexistent/lake")
    repo = defs.get_repository_def()
    assert {"discover_partitions", "distill_job", "index_job"} <= {j.name for j in repo.get_all_jobs()}
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_audio", "audio_index"} <= keys
    dg.Definitions.validate_loadable(defs)


def test_executor_switch(monkeypatch):
    from dagster_k8s import k8s_job_executor

    from asr_distill.definitions import build_definitions as build
    from asr_distill.recovery import unwrap_executor

    for name, expected in (
        ("in_process", dg.in_process_executor),
        ("multiprocess", dg.multiprocess_executor),
        ("k8s", k8s_job_executor),
    ):
        monkeypatch.setenv("ASR_DISTILL_EXECUTOR", name)
        defs = build(raw="/nonexistent/raw", lake="/nonexistent/lake")
        assert unwrap_executor(defs.executor) is expected  # wrapped by asr_distill.recovery
    monkeypatch.setenv("ASR_DISTILL_EXECUTOR", "nonsense")
    import pytest

    with pytest.raises(ValueError, match="ASR_DISTILL_EXECUTOR"):
        build(raw="/x", lake="/y")
