"""The clean stage as a Dagster asset: reconciliation, reasons per broken kind, blocking checks."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import CleanedAudioConfig, cleaned_audio
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions, stage_resources

# What each broken kind of the demo corpus must be quarantined for (at least).
EXPECTED_REASON = {
    "empty_file": "probe_failed",
    "not_audio": "probe_failed",
    "header_cut": "probe_failed",
    "zero_channels": "probe_failed",
    "data_cut_short": "truncated",
    "header_overclaims": "truncated",
    "truncated_mp3": "truncated",
    "non_finite": "non_finite",
    "digital_silence": "silent",
}
# Clips the clean stage routes to long_form.parquet (readable, over 30 s, at most 12 h).
LONG_FORM = {"too_long"}


def _run(
    instance, raw: LocalStorage, lake: LocalStorage, partition: str, *, checks: bool = True, **kw
) -> dg.ExecuteInProcessResult:
    selection = dg.AssetSelection.assets(audio_index, cleaned_audio)
    return dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection if checks else selection.without_checks(),
        partition_key=partition,
        instance=instance,
        resources=stage_resources(raw.uri, lake.uri),
        **kw,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_clean_broken_partition_accounts_for_every_row(demo_corpus, lake, instance):
    store, report = demo_corpus
    register_partitions(instance, ["broken"])
    result = _run(instance, store, lake, "broken")
    assert result.success
    checks = _checks(result)
    blocking_clean = [n for n in checks if n.startswith(("cleaned__", "quarantine__"))]
    assert len(blocking_clean) >= 8 and all(checks[n] for n in blocking_clean), checks
    kept = pq.read_table(lake.local_path(layout.cleaned_kept_key("broken"))).to_pylist()
    quarantined = pq.read_table(lake.local_path(layout.cleaned_quarantine_key("broken"))).to_pylist()
    long_form = pq.read_table(lake.local_path(layout.cleaned_long_form_key("broken"))).to_pylist()
    index_rows = pq.read_metadata(lake.local_path(layout.audio_index_key("broken"))).num_rows
    assert len(kept) + len(long_form) + len(quarantined) == index_rows
    assert long_form and all(r["flags"][-1] == "long_form" and not r["reasons"] for r in long_form)
    assert not {r["key"] for r in kept} & {r["key"] for r in quarantined}
    reasons = {r["key"]: r["reasons"] for r in quarantined}
    for entry in report.entries:
        if entry.prefix != "broken" or entry.kind != "audio":
            continue
        if entry.outcome in LONG_FORM:
            assert entry.key in {r["key"] for r in long_form}, (entry.key, reasons.get(entry.key))
        elif entry.outcome in EXPECTED_REASON:
            assert EXPECTED_REASON[entry.outcome] in reasons.get(entry.key, []), (
                entry.key,
                entry.outcome,
                reasons.get(entry.key),
            )
        else:
            assert entry.key in {r["key"] for r in kept}, (entry.key, entry.outcome, reasons.get(entry.key))
    md = result.asset_materializations_for_node("cleaned_audio")[0].metadata
    assert md["kept"].value == len(kept) and md["quarantined"].value == len(quarantined)
    assert md["long_form"].value == len(long_form)
    assert "truncated" in md["drop_funnel"].value
    assert md["reused_previous_clean"].value is False

    # Finished work is not redone: same index, rules and duplicates -> the tables are reused as they are.
    keys = (
        layout.cleaned_kept_key("broken"),
        layout.cleaned_quarantine_key("broken"),
        layout.cleaned_long_form_key("broken"),
    )
    before = {k: lake.read_bytes(k) for k in keys}
    again = _run(instance, store, lake, "broken", checks=False)
    md_again = again.asset_materializations_for_node("cleaned_audio")[0].metadata
    assert md_again["reused_previous_clean"].value is True
    assert {k: lake.read_bytes(k) for k in keys} == before
    for name in ("kept", "long_form", "quarantined", "drop_funnel", "duration_histogram", "rms_histogram"):
        assert md_again[name] == md[name], name
    # Other rules -> cleaned again.
    stricter = dg.RunConfig(ops={"cleaned_audio": CleanedAudioConfig(rules={"min_duration_s": 1.5})})
    changed = _run(instance, store, lake, "broken", checks=False, run_config=stricter)
    assert (
        changed.asset_materializations_for_node("cleaned_audio")[0].metadata["reused_previous_clean"].value
        is False
    )


def test_clean_speech_partition_keeps_speech_and_dedups_across_partitions(demo_corpus, tmp_path, instance):
    store, report = demo_corpus
    lake = LocalStorage(tmp_path / "lake")
    raw = LocalStorage(tmp_path / "raw")
    # Partition "copy" holds byte-identical copies of three en_read clips.
    originals = [e.key for e in report.entries if e.prefix == "en_read" and e.kind == "audio"][:3]
    for key in [e.key for e in report.entries if e.prefix == "en_read"]:
        raw.write_bytes(key, store.read_bytes(key))
    for key in originals:
        raw.write_bytes("copy/" + key.split("/", 1)[1], store.read_bytes(key))
    register_partitions(instance, ["en_read", "copy"])
    assert _run(instance, raw, lake, "en_read").success
    kept = pq.read_table(lake.local_path(layout.cleaned_kept_key("en_read"))).to_pylist()
    assert len(kept) == sum(1 for e in report.entries if e.prefix == "en_read" and e.kind == "audio")
    assert _run(instance, raw, lake, "copy").success
    q = pq.read_table(lake.local_path(layout.cleaned_quarantine_key("copy"))).to_pylist()
    assert sorted(r["duplicate_of"] for r in q) == sorted(originals)
    assert all(r["reasons"] == ["duplicate"] and r["duplicate_of_partition"] == "en_read" for r in q)

    def reused(result: dg.ExecuteInProcessResult) -> bool:
        return (
            result.asset_materializations_for_node("cleaned_audio")[0].metadata["reused_previous_clean"].value
        )

    # A re-run reuses both partitions (en_read's dependency on "copy" is nil: copy kept nothing of it).
    assert reused(_run(instance, raw, lake, "copy", checks=False))
    assert reused(_run(instance, raw, lake, "en_read", checks=False))
    # The clips "copy" duplicated are gone from the lake: "copy" is cleaned again and keeps them.
    lake.delete(layout.cleaned_kept_key("en_read"))
    lake.delete(layout.cleaned_long_form_key("en_read"))
    lake.delete(layout.cleaned_quarantine_key("en_read"))
    assert not reused(again := _run(instance, raw, lake, "copy", checks=False))
    assert again.asset_materializations_for_node("cleaned_audio")[0].metadata["kept"].value == len(originals)


def test_blocking_index_check_stops_clean_in_the_same_run(tmp_path, instance):
    raw, lake = LocalStorage(tmp_path / "raw"), LocalStorage(tmp_path / "lake")
    for i in range(3):
        raw.write_bytes(f"bad/not_audio_{i}.wav", b"this is text, not audio")
    register_partitions(instance, ["bad"])
    result = _run(instance, raw, lake, "bad", raise_on_error=False)
    assert not result.success
    assert _checks(result)["audio_index__probe_error_rate"] is False
    assert result.asset_materializations_for_node("audio_index")
    assert not result.asset_materializations_for_node("cleaned_audio")
    assert not lake.exists(layout.cleaned_kept_key("bad"))
