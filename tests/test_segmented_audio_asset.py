"""index -> clean -> segmented_audio as Dagster assets on a small long-form partition (real resources,
real VAD): kept + long_form + quarantined = indexed, sample accounting, blocking checks, re-run reuse,
re-segmenting on a changed segmentation config, and a partition without long recordings."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.segmented_audio import SegmentedAudioConfig, segmented_audio
from asr_distill.demo.longform import write_longform_partition
from asr_distill.stages.segment.tables import iter_segments, read_recordings
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions, stage_resources

PART, SHORT_ONLY = "lf", "short_only"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    """``lf/``: the long-form recordings (small), a 6 s clip of the monologue (a short clip, kept) and
    a 35 s all-zero recording (long, silent: quarantined by the clean stage). ``short_only/``: one short
    clip."""
    root = tmp_path_factory.mktemp("raw")
    truths = write_longform_partition(root / PART, seed=0, dialogue_s=45.0, monologue_s=35.0)
    mono = next(t for t in truths if t.kind == "monologue")
    x, rate = sf.read(mono.path, dtype="int16")
    sf.write(root / PART / "a_short.wav", x[: 6 * rate], rate, subtype="PCM_16")
    sf.write(root / PART / "silent_long.wav", np.zeros(35 * 16_000, np.int16), 16_000, subtype="PCM_16")
    (root / SHORT_ONLY).mkdir()
    sf.write(root / SHORT_ONLY / "clip.wav", x[rate : 5 * rate], rate, subtype="PCM_16")
    return LocalStorage(root)


def _run(
    instance, raw: LocalStorage, lake: LocalStorage, partition: str, *, checks: bool = True, assets=None, **kw
):
    selection = dg.AssetSelection.assets(*(assets or (audio_index, cleaned_audio, segmented_audio)))
    return dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection if checks else selection.without_checks(),
        partition_key=partition,
        instance=instance,
        resources=stage_resources(raw.uri, lake.uri),
        **kw,
    )


def _md(result: dg.ExecuteInProcessResult) -> dict:
    return {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node("segmented_audio")[0].metadata.items()
    }


def test_index_clean_segment_accounting_checks_and_reuse(raw, lake, instance) -> None:
    register_partitions(instance, [PART])
    result = _run(instance, raw, lake, PART)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    mine = [
        n for n in checks if n.startswith(("segments_", "segment_recordings__", "long_form__", "cleaned__"))
    ]
    assert {"segments_accounting", "segments_no_overlap_max_30s", "segments_members_match"} <= set(mine)
    assert "cleaned__kept_plus_long_form_plus_quarantined_equals_indexed" in mine
    assert "segment_recordings__one_row_per_long_form_recording" in mine
    assert all(checks[n] for n in mine), checks

    # clean: kept + long_form + quarantined = indexed
    def rows(key: str) -> list[dict]:
        return pq.read_table(lake.local_path(key)).to_pylist()

    kept, long_form = rows(layout.cleaned_kept_key(PART)), rows(layout.cleaned_long_form_key(PART))
    quarantined = rows(layout.cleaned_quarantine_key(PART))
    indexed = pq.read_metadata(lake.local_path(layout.audio_index_key(PART))).num_rows
    assert len(kept) + len(long_form) + len(quarantined) == indexed == 6
    assert [r["key"] for r in kept] == [f"{PART}/a_short.wav"]
    assert [(r["key"], r["reasons"]) for r in quarantined] == [(f"{PART}/silent_long.wav", ["silent"])]
    names = sorted(r["key"].rsplit("/", 1)[1] for r in long_form)
    assert names == ["dialogue.flac", "just_over_30s.flac", "monologue.wav", "noise_only.wav"]
    clean_md = result.asset_materializations_for_node("cleaned_audio")[0].metadata
    assert clean_md["long_form"].value == 4 and clean_md["kept"].value == 1

    # segmentation: one recording row per long-form row, exact sample accounting
    recs = read_recordings(lake, PART)
    assert [r["source_key"] for r in recs] == sorted(r["key"] for r in long_form)
    status = {r["source_key"].rsplit("/", 1)[1]: r["status"] for r in recs}
    assert status == {
        "dialogue.flac": "ok",
        "just_over_30s.flac": "ok",
        "monologue.wav": "ok",
        "noise_only.wav": "no_speech",
    }
    segs = list(iter_segments(lake, PART))
    for rec in recs:
        mine_segs = [s for s in segs if s["source_key"] == rec["source_key"]]
        kept_n = sum(s["num_samples"] for s in mine_segs if s["keep"])
        quar_n = sum(s["num_samples"] for s in mine_segs if not s["keep"])
        assert kept_n + quar_n + rec["non_speech_samples"] == rec["n_samples"]
        assert (kept_n, quar_n) == (rec["kept_samples"], rec["quarantined_samples"])
        assert all(s["num_samples"] <= 30 * 16_000 for s in mine_segs if s["keep"])
    md = _md(result)
    assert md["recordings"] == 4 and md["recordings_segmented"] == 4 and md["recordings_reused"] == 0
    assert md["kept_segments"] == sum(s["keep"] for s in segs) > 3
    assert md["vad_realtime_factor"] > 0 and md["hours_in"] > md["speech_hours_kept"] > 0
    assert "no_speech" in md["recordings_by_status"] and "forced_cuts" in md

    # re-run: nothing re-segmented, same bytes
    prefix = layout.segmented_prefix(PART)
    before = {o.key: lake.read_bytes(o.key) for o in lake.iter_objects(prefix)}
    again = _run(instance, raw, lake, PART, checks=False)
    md2 = _md(again)
    assert (
        md2["recordings_reused"] == 4 and md2["recordings_segmented"] == 0 and md2["vad_realtime_factor"] == 0
    )
    assert {o.key: lake.read_bytes(o.key) for o in lake.iter_objects(prefix)} == before
    assert again.asset_materializations_for_node("cleaned_audio")[0].metadata["reused_previous_clean"].value

    # a changed segmentation config re-segments (and the checks still pass)
    changed = dg.RunConfig(ops={"segmented_audio": SegmentedAudioConfig(segment={"pack_gap_s": 0.5})})
    third = _run(instance, raw, lake, PART, assets=(segmented_audio,), run_config=changed)
    assert third.success and _md(third)["recordings_segmented"] == 4 and _md(third)["recordings_reused"] == 0
    assert all(e.passed for e in third.get_asset_check_evaluations())


def test_partition_without_long_recordings_writes_empty_tables(raw, tmp_path: Path, instance) -> None:
    lake = LocalStorage(tmp_path / "lake2")
    register_partitions(instance, [SHORT_ONLY])
    result = _run(instance, raw, lake, SHORT_ONLY)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    assert read_recordings(lake, SHORT_ONLY) == [] and list(iter_segments(lake, SHORT_ONLY)) == []
    md = _md(result)
    assert md["recordings"] == 0 and md["kept_segments"] == 0 and md["vad_realtime_factor"] == 0
