"""The clean-and-filter core on crafted audio in a real LocalStorage (no Dagster)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from blake3 import blake3

from asr_distill.audio import decode
from asr_distill.stages.clean import (
    CLEAN_SCHEMA,
    FLAGS,
    REASONS,
    CleanConfig,
    analyze_clip,
    clean_partition,
    clean_to_tables,
    load_known_hashes,
    pcm16,
    read_index_rows,
    subsampled_frames,
    text_stats,
)
from asr_distill.stages.clean.metrics import SignalAnalyzer
from asr_distill.stages.index.schema import AUDIO_INDEX_SCHEMA
from asr_distill.storage import LocalStorage, ObjectInfo

ESPEAK = "/usr/bin/espeak-ng"
CFG = CleanConfig()


# -- fixtures -------------------------------------------------------------------------------
def _synthetic_speech(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Voiced-speech-like signal: harmonics of a gliding pitch under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    x = 0.08 * voiced * envelope + 0.003 * rng.standard_normal(len(t))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """About 3 s of speech at 22.05 kHz: espeak-ng when installed, else a synthetic speech-like signal."""
    if os.path.exists(ESPEAK):
        wav = subprocess.run(
            [ESPEAK, "--stdout", "The quick brown fox jumps over the lazy dog near the bank."],
            check=True,
            capture_output=True,
        ).stdout
        import io

        x, rate = sf.read(io.BytesIO(wav), dtype="float32")
        return x, rate
    return _synthetic_speech(3.0, 22_050, 0), 22_050


def _row(key: str, partition: str = "p", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(AUDIO_INDEX_SCHEMA.names)
    row.update(partition=partition, key=key, size=0, extension=Path(key).suffix.lstrip("."))
    row.update(extra)
    return row


@pytest.fixture()
def raw(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "raw")


def _put(store: LocalStorage, key: str, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return key


def _write_m4a(path: Path, x: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _clean_one(store: LocalStorage, row: dict[str, Any], cfg: CleanConfig = CFG) -> dict[str, Any]:
    [batch] = list(clean_partition([row], store, cfg, executor="inline"))
    [out] = batch
    return out


# -- speech passes --------------------------------------------------------------------------
def test_clean_speech_is_kept_with_sane_metrics(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _put(raw, "ok.wav", x, rate)
    out = _clean_one(raw, _row("ok.wav", text="The quick brown fox jumps over the lazy dog near the bank."))
    assert out["keep"] is True, out["reasons"]
    assert out["reasons"] == [] and out["flags"] == []
    assert out["decoder"] == "soundfile" and out["decode_error"] is None
    assert out["decoded_duration_s"] == pytest.approx(len(x) / rate)
    assert abs(out["num_samples"] - len(x) * 16_000 / rate) <= 1
    assert -40 < out["rms_dbfs"] < -10
    assert out["peak_dbfs"] < 0
    assert out["clipped_fraction"] == 0.0 and out["non_finite_samples"] == 0
    assert 1 < out["chars_per_second"] < 25
    assert out["ctc_frames"] > out["label_tokens"] + out["label_repeats"]
    assert out["source_blake3"] == blake3((raw.root / "ok.wav").read_bytes()).hexdigest()
    expected = blake3(pcm16(decode(raw.root / "ok.wav").samples).tobytes()).hexdigest()
    assert out["pcm_blake3"] == expected
    # a 16-bit 16 kHz mono source hashes exactly its own PCM samples
    pcm = (np.clip(x[:16_000], -1, 1) * 32767).astype(np.int16)
    _put(raw, "pcm16k.wav", pcm, 16_000)
    direct = blake3(pcm.astype("<i2").tobytes()).hexdigest()
    assert _clean_one(raw, _row("pcm16k.wav"))["pcm_blake3"] == direct


def test_silence_metrics_measure_padding(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    padded = np.concatenate([np.zeros(rate, np.float32), x, np.zeros(rate // 2, np.float32)])
    _put(raw, "pad.flac", padded, rate)
    ref = _clean_one(raw, _row("pad.flac"))
    _put(raw, "tight.flac", x, rate)
    tight = _clean_one(raw, _row("tight.flac"))
    assert ref["leading_silence_s"] - tight["leading_silence_s"] == pytest.approx(1.0, abs=0.02)
    assert ref["trailing_silence_s"] - tight["trailing_silence_s"] == pytest.approx(0.5, abs=0.02)
    assert ref["keep"] and ref["flags"] == ["no_reference_text"]


# -- each audio rule fires ------------------------------------------------------------------
def test_silent_and_too_quiet(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _put(raw, "zero.wav", np.zeros(rate * 2, np.float32), rate)
    _put(raw, "quiet.wav", x * 1e-3, rate, subtype="FLOAT")  # ~ -80 dBFS
    zero = _clean_one(raw, _row("zero.wav"))
    quiet = _clean_one(raw, _row("quiet.wav"))
    assert zero["reasons"] == ["silent"] and zero["rms_dbfs"] == -200.0
    assert quiet["reasons"] == ["too_quiet"] and quiet["rms_dbfs"] < -60


def test_clipped_needs_runs_above_the_fraction(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    hot = np.clip(x * 20, -1, 1)
    _put(raw, "hot.wav", hot, rate)
    out = _clean_one(raw, _row("hot.wav"))
    assert "clipped" in out["reasons"] and out["clipped_fraction"] > 0.01
    # isolated full-scale samples (runs of 1 and 2) are peaks, not clipping
    peaks = x.copy()
    peaks[1000:1900:3] = 1.0
    peaks[3000:3600:4] = -1.0
    peaks[3001:3600:4] = -1.0
    _put(raw, "peaks.wav", peaks, rate, subtype="FLOAT")
    out = _clean_one(raw, _row("peaks.wav"))
    assert out["clipped_samples"] == 0 and "clipped" not in out["reasons"]


def test_clip_runs_are_counted_across_block_boundaries() -> None:
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal((10_000, 2))).astype(np.float32)
    x[100:105, 0] = 1.0  # run of 5 in channel 0
    x[4094:4100, 1] = -1.0  # run of 6 in channel 1, across a 4096 boundary
    x[5000:5002, 0] = 1.0  # run of 2: not clipping
    x[9997:, 0] = 1.0  # run of 3 at the very end
    counts = set()
    for block in (1, 7, 4096, 10_000):
        a = SignalAnalyzer(CFG, channels=2)
        for i in range(0, len(x), block):
            a.add_source(x[i : i + block])
        res = a.result(16_000)
        counts.add((res["clipped_samples"], a.clip_runs))
    assert counts == {(5 + 6 + 3, 3)}


def test_mono_metrics_do_not_depend_on_block_size(speech: tuple[np.ndarray, int]) -> None:
    x, _ = speech
    y = np.concatenate([np.zeros(8000, np.float32), x[:40_000], np.zeros(1234, np.float32)])
    results = []
    for block in (1, 100, 160, 333, 4096, len(y)):
        a = SignalAnalyzer(CFG, 1)
        for i in range(0, len(y), block):
            a.add_mono(y[i : i + block])
        results.append(a.result(16_000))
    first = results[0]
    assert first["pcm_blake3"] == blake3(pcm16(y).tobytes()).hexdigest()
    assert first["leading_silence_s"] >= 0.5 and first["trailing_silence_s"] >= 1234 / 16_000
    for r in results[1:]:
        assert {k: v for k, v in r.items() if k != "rms_dbfs"} == {
            k: v for k, v in first.items() if k != "rms_dbfs"
        }
        assert r["rms_dbfs"] == pytest.approx(first["rms_dbfs"], abs=1e-4)


def test_non_finite(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    bad = x.copy()
    bad[500:510] = np.nan
    bad[2000] = np.inf
    _put(raw, "nan.wav", bad, rate, subtype="FLOAT")
    out = _clean_one(raw, _row("nan.wav"))
    assert out["reasons"] == ["non_finite"]
    assert out["non_finite_samples"] == 11
    assert np.isfinite(out["rms_dbfs"])


def test_too_short_and_too_long(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _put(raw, "short.wav", x[: int(0.3 * rate)], rate)
    long_x = np.tile(x, int(31 * rate / len(x)) + 1)[: 31 * rate]
    _put(raw, "long.flac", long_x, rate)
    assert _clean_one(raw, _row("short.wav"))["reasons"] == ["too_short"]
    # 31 s: a long-form recording (no reason; the driver routes it to long_form.parquet) ...
    long_row = _clean_one(raw, _row("long.flac"))
    assert long_row["reasons"] == [] and long_row["decoded_duration_s"] > 30
    assert not long_row["keep"] and "long_form" in long_row["flags"]
    # ... unless it is longer than max_recording_s
    capped = CleanConfig(max_duration_s=10, max_recording_s=20)
    assert _clean_one(raw, _row("long.flac"), capped)["reasons"] == ["too_long"]
    relaxed = CleanConfig(min_duration_s=0.1, max_duration_s=40)
    assert _clean_one(raw, _row("short.wav"), relaxed)["keep"]
    assert _clean_one(raw, _row("long.flac"), relaxed)["keep"]


def test_truncated_from_the_header_and_from_the_index(
    raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    x, rate = speech
    _put(raw, "full.wav", x, rate)
    data = (raw.root / "full.wav").read_bytes()
    (raw.root / "cut.wav").write_bytes(data[: 44 + 2 * int(len(x) * 0.6)])
    out = _clean_one(raw, _row("cut.wav"))  # the decoder reads the data chunk's claim itself
    assert out["reasons"] == ["truncated"]
    assert out["claimed_duration_s"] == pytest.approx(len(x) / rate)
    assert out["decoded_duration_s"] == pytest.approx(0.6 * len(x) / rate, rel=0.01)
    # a claim only the index knows (e.g. an MP3 whose header the index read) also counts
    out = _clean_one(raw, _row("full.wav", header_duration_s=10.0))
    assert out["reasons"] == ["truncated"] and out["claimed_duration_s"] == 10.0
    # a small shortfall is within the ratio
    assert _clean_one(raw, _row("full.wav", header_duration_s=len(x) / rate * 1.05))["keep"]


def test_truncated_mp3(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    (raw.root).mkdir(parents=True, exist_ok=True)
    sf.write(raw.root / "full.mp3", np.tile(x, 2), rate)
    data = (raw.root / "full.mp3").read_bytes()
    (raw.root / "cut.mp3").write_bytes(data[: len(data) // 4])
    assert _clean_one(raw, _row("full.mp3"))["keep"]
    out = _clean_one(raw, _row("cut.mp3"))
    assert "truncated" in out["reasons"]


def test_decode_failed_and_probe_failed(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    raw.write_bytes("text.wav", b"not audio, just words\n" * 10)
    out = _clean_one(raw, _row("text.wav"))
    assert out["reasons"] == ["decode_failed"] and out["decode_error"] == "unrecognised_format"
    assert out["pcm_blake3"] is None and out["source_blake3"] is not None
    missing = _clean_one(raw, _row("gone.wav"))
    assert missing["reasons"] == ["decode_failed"] and missing["decode_error"] == "read_error"
    # probe failures are not decoded again
    x, rate = speech
    _put(raw, "ok.wav", x, rate)
    probed = _clean_one(raw, _row("ok.wav", probe_error="malformed_header"))
    assert probed["reasons"] == ["probe_failed"] and probed["decoder"] is None
    assert probed["source_blake3"] is not None


def test_m4a_is_cleaned_through_pyav(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _write_m4a(raw.root / "a.m4a", x, rate)
    out = _clean_one(raw, _row("a.m4a", container="MP4", text="the quick brown fox jumps over the lazy dog"))
    assert out["keep"], out["reasons"]
    assert out["decoder"] == "pyav"
    assert out["decoded_duration_s"] == pytest.approx(len(x) / rate, abs=0.1)


# -- text rules -----------------------------------------------------------------------------
def test_empty_text_and_chars_per_second(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _put(raw, "s.wav", x, rate)
    assert _clean_one(raw, _row("s.wav", text="   "))["reasons"] == ["empty_text"]
    assert _clean_one(raw, _row("s.wav", text=" ... ?", language="ja"))["reasons"] == ["empty_text"]
    fast = _clean_one(raw, _row("s.wav", text="alpha beta " * 20))  # ~220 chars in ~3.4 s
    assert fast["reasons"] == ["chars_per_second"] and fast["chars_per_second"] > 25
    slow = _clean_one(raw, _row("s.wav", text="ok"))
    assert slow["reasons"] == ["chars_per_second"] and slow["chars_per_second"] < 1


def test_text_stats_counts_cjk_characters_and_english_tokens() -> None:
    zh = text_stats("今天 天气很好，我们去公园。", "zh", CFG)
    assert (zh.tokens, zh.repeats) == (11, 1)  # punctuation and spaces are not labels; 天天 repeats
    ja = text_stats("こんにちは、せかい", "ja", CFG)
    assert (ja.tokens, ja.repeats) == (8, 0)
    en = text_stats("Hello,   hello world!", "en", CFG)
    # words: hello hello world -> max(3, ceil(len("hello hello world") / 4) = 5); "hello hello" repeats
    assert (en.chars, en.tokens, en.repeats) == (len("Hello, hello world!"), 5, 1)
    assert text_stats("a b c d e", "en", CFG).tokens == 5  # at least one token per word
    mislabelled = text_stats("我们去公园", "en", CFG)  # CJK counted per character whatever the language says
    assert mislabelled.tokens == 5


def test_ctc_feasibility_counts_repeats(raw: LocalStorage) -> None:
    # 2.0 s at 16 kHz -> 200 frames at 100 fps -> T = ((200 - 7) // 2 + 1) // 2 = 48
    assert subsampled_frames(200) == 48
    x = _synthetic_speech(2.0, 16_000, 5)
    _put(raw, "two.wav", x, 16_000)
    distinct = "".join(chr(0x4E00 + 7 * i) for i in range(48))
    fits = _clean_one(raw, _row("two.wav", text=distinct, language="zh-CN"))
    assert fits["ctc_frames"] == 48 and fits["label_tokens"] == 48 and fits["label_repeats"] == 0
    assert fits["keep"], fits["reasons"]
    one_repeat = distinct[:47] + distinct[46]  # 48 tokens, the last two equal -> needs 49 frames
    out = _clean_one(raw, _row("two.wav", text=one_repeat, language="zh"))
    assert out["reasons"] == ["ctc_infeasible"] and out["label_repeats"] == 1
    shorter = distinct[:46] + distinct[45]  # 47 tokens + 1 repeat = 48: fits
    assert _clean_one(raw, _row("two.wav", text=shorter, language="yue"))["keep"]
    # the same text as "English" would be counted per character too (no spaces to split on)
    assert _clean_one(raw, _row("two.wav", text=one_repeat))["reasons"] == ["ctc_infeasible"]


def test_bad_sidecar_drops_text_or_quarantines(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    _put(raw, "s.wav", x, rate)
    row = _row("s.wav", text="x", sidecar_error="conflicting_sidecars")  # "x" would fail chars/s
    dropped = _clean_one(raw, row)
    assert dropped["keep"] and dropped["flags"] == ["bad_sidecar", "no_reference_text"]
    assert dropped["reference_text"] is None and dropped["text"] == "x"
    strict = _clean_one(raw, row, CleanConfig(bad_sidecar="quarantine"))
    assert strict["reasons"] == ["bad_sidecar", "chars_per_second"]


def test_multiple_reasons_on_one_clip(raw: LocalStorage, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    clip = np.clip(x[: int(0.4 * rate)] * 50, -1, 1)
    clip[100:110] = np.nan
    _put(raw, "bad.wav", clip, rate, subtype="FLOAT")
    out = _clean_one(raw, _row("bad.wav", text=""))
    assert out["reasons"] == ["non_finite", "clipped", "too_short", "empty_text"]
    assert out["keep"] is False


# -- duplicates -----------------------------------------------------------------------------
def test_duplicates_within_a_partition_keep_the_first_passing_clip(
    raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    x, rate = speech
    _put(raw, "p/a.wav", x, rate)
    pcm, _ = sf.read(raw.root / "p/a.wav", dtype="int16")
    _put(raw, "p/b.flac", pcm, rate)  # same samples, another container
    _put(raw, "p/c.wav", pcm, rate)
    _put(raw, "p/d.wav", x * 0.5, rate)  # different content
    rows = [
        _row("p/a.wav", text=""),  # first in key order, but quarantined: it claims nothing
        _row("p/b.flac"),
        _row("p/c.wav"),
        _row("p/d.wav"),
    ]
    out = {r["key"]: r for b in clean_partition(rows, raw, CFG, executor="inline") for r in b}
    assert out["p/a.wav"]["pcm_blake3"] == out["p/b.flac"]["pcm_blake3"] == out["p/c.wav"]["pcm_blake3"]
    assert out["p/a.wav"]["reasons"] == ["empty_text"] and out["p/a.wav"]["duplicate_of"] is None
    assert out["p/b.flac"]["keep"]
    assert out["p/c.wav"]["reasons"] == ["duplicate"]
    assert (out["p/c.wav"]["duplicate_of_partition"], out["p/c.wav"]["duplicate_of"]) == ("p", "p/b.flac")
    assert out["p/d.wav"]["keep"]
    no_dedup = [
        r for b in clean_partition(rows[1:], raw, CleanConfig(dedup=False), executor="inline") for r in b
    ]
    assert all(r["keep"] for r in no_dedup)


def test_duplicates_across_partitions(
    tmp_path: Path, raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    x, rate = speech
    lake = LocalStorage(tmp_path / "lake")
    _put(raw, "p1/x.wav", x, rate)
    _put(raw, "p2/copy.wav", x, rate)
    _put(raw, "p2/other.wav", x * 0.7, rate)
    s1 = clean_to_tables(
        [_row("p1/x.wav", "p1")],
        raw,
        lake,
        kept_key="c/p1/kept.parquet",
        quarantine_key="c/p1/q.parquet",
        executor="inline",
    )
    assert s1.kept == 1
    known = load_known_hashes(lake, ["c/p1/kept.parquet"])
    assert list(known.values()) == [("p1", "p1/x.wav")]
    rows = [_row("p2/copy.wav", "p2"), _row("p2/other.wav", "p2")]
    out = [r for b in clean_partition(rows, raw, CFG, known_hashes=known, executor="inline") for r in b]
    assert out[0]["reasons"] == ["duplicate"]
    assert (out[0]["duplicate_of_partition"], out[0]["duplicate_of"]) == ("p1", "p1/x.wav")
    assert out[1]["keep"]
    # re-cleaning p1 with its own previous output as "known" must not flag it against itself
    rerun = clean_partition([_row("p1/x.wav", "p1")], raw, CFG, known_hashes=known, executor="inline")
    again = [r for b in rerun for r in b]
    assert again[0]["keep"]


def test_long_form_table_accounting_reuse_and_cross_partition_duplicates(
    tmp_path: Path, raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    """Readable recordings over max_duration_s go to long_form.parquet: kept + long_form + quarantined =
    input; reuse covers the third table; a long recording another partition passed is a duplicate."""
    from asr_distill import lake as L
    from asr_distill.stages.clean import run_clean

    x, rate = speech
    long_x = np.tile(x, int(35 * rate / len(x)) + 1)[: 35 * rate]
    lake = LocalStorage(tmp_path / "lake")
    _put(raw, "p1/short.wav", x, rate)
    _put(raw, "p1/long.flac", long_x, rate)
    _put(raw, "p1/long_silent.wav", np.zeros(35 * rate, np.float32), rate)
    _put(raw, "p2/long_copy.flac", long_x, rate)
    tables = {}
    for p, keys in (("p1", ["short.wav", "long.flac", "long_silent.wav"]), ("p2", ["long_copy.flac"])):
        rows = pa_table([_row(f"{p}/{k}", p) for k in keys])
        with lake.staged_file(L.audio_index_key(p), suffix=".parquet") as path:
            pq.write_table(rows, path)
        s = run_clean(raw, lake, p, CFG, executor="inline")
        assert s.kept + s.long_form + s.quarantined == s.total == len(keys)
        tables[p] = {
            name: pq.read_table(lake.local_path(key)).to_pylist()
            for name, key in (
                ("kept", L.cleaned_kept_key(p)),
                ("long_form", L.cleaned_long_form_key(p)),
                ("quarantine", L.cleaned_quarantine_key(p)),
            )
        }
        tables[p]["summary"] = s
    p1 = tables["p1"]
    assert [r["key"] for r in p1["kept"]] == ["p1/short.wav"]
    assert [r["key"] for r in p1["long_form"]] == ["p1/long.flac"]
    assert p1["long_form"][0]["flags"] == ["no_reference_text", "long_form"]
    assert [(r["key"], r["reasons"]) for r in p1["quarantine"]] == [("p1/long_silent.wav", ["silent"])]
    assert p1["summary"].long_form == 1 and p1["summary"].long_form_hours > 0
    # the same long recording in p2: a duplicate of p1's long-form recording
    assert tables["p2"]["long_form"] == [] and tables["p2"]["kept"] == []
    [dup] = tables["p2"]["quarantine"]
    assert dup["reasons"] == ["duplicate"] and dup["duplicate_of"] == "p1/long.flac"
    # reuse: same inputs -> reused; the long-form table missing -> cleaned again
    assert run_clean(raw, lake, "p1", CFG, executor="inline").reused
    lake.delete(L.cleaned_long_form_key("p1"))
    again = run_clean(raw, lake, "p1", CFG, executor="inline")
    assert not again.reused and again.long_form == 1 and lake.exists(L.cleaned_long_form_key("p1"))
    # a changed max_recording_s is another rule set: cleaned again, now too_long
    capped = run_clean(raw, lake, "p1", CleanConfig(max_recording_s=31.0), executor="inline")
    assert not capped.reused and capped.long_form == 0 and capped.funnel["too_long"] == 1


def pa_table(rows: list[dict[str, Any]]) -> Any:
    full = [{name: r.get(name) for name in AUDIO_INDEX_SCHEMA.names} for r in rows]
    import pyarrow as pa

    return pa.Table.from_pylist(full, schema=AUDIO_INDEX_SCHEMA)


def test_rows_must_be_sorted(raw: LocalStorage) -> None:
    with pytest.raises(ValueError, match="sorted"):
        list(clean_partition([_row("b.wav"), _row("a.wav")], raw, CFG, executor="inline"))


# -- whole partition: tables, summary, determinism -------------------------------------------
def _mixed_partition(raw: LocalStorage, x: np.ndarray, rate: int) -> list[dict[str, Any]]:
    _put(raw, "m/00_ok.wav", x, rate)
    _put(raw, "m/01_ok44.flac", np.stack([x, 0.5 * x], axis=1), rate)
    _put(raw, "m/02_dup.wav", x, rate)
    _put(raw, "m/03_zero.wav", np.zeros(2 * rate, np.float32), rate)
    _put(raw, "m/04_short.wav", x[: rate // 5], rate)
    raw.write_bytes("m/05_text.wav", b"hello")
    _write_m4a(raw.root / "m/06_ok.m4a", x, rate)
    return [
        _row("m/00_ok.wav", "m", text="the quick brown fox jumps over the lazy dog"),
        _row("m/01_ok44.flac", "m"),
        _row("m/02_dup.wav", "m"),
        _row("m/03_zero.wav", "m", text="x"),  # 0.5 chars/s
        _row("m/04_short.wav", "m"),
        _row("m/05_text.wav", "m", probe_error="unrecognised_format"),
        _row("m/06_ok.m4a", "m", text="", sidecar_error="invalid_json"),
    ]


def test_run_clean_tables_partition_the_input(
    tmp_path: Path, raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    x, rate = speech
    rows = _mixed_partition(raw, x, rate)
    lake = LocalStorage(tmp_path / "lake")
    seen = []
    summary = clean_to_tables(
        rows,
        raw,
        lake,
        kept_key="clean/m/kept.parquet",
        quarantine_key="clean/m/quarantine.parquet",
        workers=2,
        executor="process",
        progress=seen.append,
    )
    kept = pq.read_table(lake.root / "clean/m/kept.parquet")
    quar = pq.read_table(lake.root / "clean/m/quarantine.parquet")
    assert kept.schema.remove_metadata() == CLEAN_SCHEMA and quar.schema.remove_metadata() == CLEAN_SCHEMA
    assert b"asr_distill.clean.config" in kept.schema.metadata
    k_keys, q_keys = kept.column("key").to_pylist(), quar.column("key").to_pylist()
    assert sorted(k_keys + q_keys) == [r["key"] for r in rows]
    assert k_keys == sorted(k_keys) and q_keys == sorted(q_keys)
    assert set(k_keys) == {"m/00_ok.wav", "m/01_ok44.flac", "m/06_ok.m4a"}
    reasons = dict(zip(q_keys, quar.column("reasons").to_pylist(), strict=True))
    assert reasons == {
        "m/02_dup.wav": ["duplicate"],
        "m/03_zero.wav": ["silent", "chars_per_second"],
        "m/04_short.wav": ["too_short"],
        "m/05_text.wav": ["probe_failed"],
    }
    assert all(kept.column("keep").to_pylist()) and not any(quar.column("keep").to_pylist())
    # summary: counts, funnel, hours, histograms
    assert (summary.total, summary.kept, summary.quarantined) == (7, 3, 4)
    assert summary.funnel["duplicate"] == 1 and summary.funnel["silent"] == 1
    assert summary.reason_counts["chars_per_second"] == 1 and summary.funnel["chars_per_second"] == 0
    assert sum(summary.funnel.values()) == summary.quarantined
    assert summary.flag_counts["bad_sidecar"] == 1
    assert set(summary.reason_counts) == set(REASONS) and set(summary.flag_counts) == set(FLAGS)
    meta = summary.to_dict()
    assert sum(meta["duration_hist"]["kept"]) == 3 and sum(meta["duration_hist"]["quarantined"]) == 3
    assert len(meta["rms_hist"]["labels"]) == len(meta["rms_hist"]["kept"])
    assert meta["kept_hours"] == pytest.approx(sum(kept.column("decoded_duration_s").to_pylist()) / 3600)
    assert "kept 3" in summary.funnel_text()
    assert seen and seen[-1].done == 7 and seen[-1].kept == 3


def test_outputs_are_deterministic_across_executors(
    tmp_path: Path, raw: LocalStorage, speech: tuple[np.ndarray, int]
) -> None:
    x, rate = speech
    rows = _mixed_partition(raw, x, rate)
    lake = LocalStorage(tmp_path / "lake")
    digests = set()
    for i, (executor, workers) in enumerate([("inline", 1), ("thread", 2), ("process", 2)]):
        keys = {"kept_key": f"r{i}/k.parquet", "quarantine_key": f"r{i}/q.parquet"}
        clean_to_tables(rows, raw, lake, **keys, executor=executor, workers=workers)
        digests.add(
            tuple(hashlib.sha256((lake.root / f"r{i}/{n}.parquet").read_bytes()).hexdigest() for n in "kq")
        )
    assert len(digests) == 1
    # and the content hash does not depend on the block size the decoder used
    a = SignalAnalyzer(CFG, 1)
    y = decode(raw.root / "m/00_ok.wav").samples
    for i in range(0, len(y), 777):
        a.add_mono(y[i : i + 777])
    k = pq.read_table(lake.root / "r0/k.parquet").to_pylist()[0]
    assert a.result(16_000)["pcm_blake3"] == k["pcm_blake3"]


def test_failed_run_writes_nothing(tmp_path: Path, raw: LocalStorage) -> None:
    lake = LocalStorage(tmp_path / "lake")
    with pytest.raises(ValueError):
        keys = {"kept_key": "c/k.parquet", "quarantine_key": "c/q.parquet"}
        clean_to_tables([_row("b.wav"), _row("a.wav")], raw, lake, **keys, executor="inline")
    assert not lake.root.exists() or list(lake.iter_objects()) == []


def test_empty_partition_writes_empty_tables(tmp_path: Path, raw: LocalStorage) -> None:
    lake = LocalStorage(tmp_path / "lake")
    s = clean_to_tables(
        [], raw, lake, kept_key="c/k.parquet", quarantine_key="c/q.parquet", executor="inline"
    )
    assert s.total == 0
    assert pq.read_table(lake.root / "c/k.parquet").num_rows == 0
    assert pq.read_table(lake.root / "c/q.parquet").schema.remove_metadata() == CLEAN_SCHEMA


class CrashingStorage(LocalStorage):
    """A store whose reads kill the worker process for one key (a stand-in for a native decoder crash)."""

    @contextmanager
    def versioned_copy(self, key: str, suffix: str = "") -> Iterator[tuple[Path, ObjectInfo]]:
        if key.endswith("crash.wav"):
            os._exit(17)
        with super().versioned_copy(key, suffix) as path:
            yield path


def test_a_crashing_worker_costs_one_row_not_the_run(tmp_path: Path, speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    store = CrashingStorage(tmp_path / "raw")
    keys = [f"k{i:02d}.wav" for i in range(6)]
    for k in keys:
        _put(store, k, x * (0.1 + 0.1 * int(k[1:3])), rate)
    rows = [_row(k) for k in sorted([*keys, "k03_crash.wav"])]
    _put(store, "k03_crash.wav", x, rate)
    out = [r for b in clean_partition(rows, store, CFG, workers=2, chunk_size=2) for r in b]
    assert [r["key"] for r in out] == [r["key"] for r in rows]
    crashed = [r for r in out if r["decode_error"] == "worker_crashed"]
    assert [r["key"] for r in crashed] == ["k03_crash.wav"] and crashed[0]["reasons"] == ["decode_failed"]
    assert all(r["keep"] for r in out if r["key"] != "k03_crash.wav")


def test_read_index_rows_sorts(tmp_path: Path) -> None:
    import pyarrow as pa

    lake = LocalStorage(tmp_path / "lake")
    rows = [_row("b.wav"), _row("a.wav"), _row("c.wav")]
    with lake.staged_file("idx.parquet") as p:
        pq.write_table(pa.Table.from_pylist(rows, schema=AUDIO_INDEX_SCHEMA), p)
    assert [r["key"] for r in read_index_rows(lake, "idx.parquet")] == ["a.wav", "b.wav", "c.wav"]


def test_config_validates_and_round_trips() -> None:
    with pytest.raises(ValueError):
        CleanConfig(min_duration_s=5, max_duration_s=1)
    with pytest.raises(ValueError):
        CleanConfig(resample_quality="best")
    with pytest.raises(ValueError):
        CleanConfig(bad_sidecar="ignore")  # type: ignore[arg-type]
    cfg = CleanConfig(max_duration_s=20, char_languages=frozenset({"ZH", "th"}))
    assert CleanConfig.from_dict(cfg.to_dict()) == cfg
    assert "th" in cfg.char_languages
    with pytest.raises(ValueError):
        CleanConfig.from_dict({"nope": 1})


def test_analyze_clip_never_raises_on_garbage(raw: LocalStorage) -> None:
    raw.write_bytes("junk.flac", os.urandom(5000))
    out = analyze_clip(_row("junk.flac"), raw, CFG)
    assert out["decode_error"] in ("unrecognised_format", "malformed_header", "decode_error", "no_audio_data")
    assert out["reasons"] == ["decode_failed"]


def test_demo_corpus_broken_clips_get_the_expected_reasons(demo_corpus: Any) -> None:
    """Real index rows (the index core over the demo corpus) through the clean core."""
    from asr_distill.stages.index.build import IndexOptions, IndexSummary, iter_index_rows

    store, report = demo_corpus
    expected = {
        "empty_file": {"probe_failed"},
        "not_audio": {"probe_failed"},
        "header_cut": {"probe_failed"},
        "zero_channels": {"probe_failed"},
        "data_cut_short": {"truncated"},
        "header_overclaims": {"truncated"},
        "digital_silence": {"silent"},
        "non_finite": {"non_finite"},
        "truncated_mp3": {"truncated"},
        "too_long": set(),  # 45 s: long-form, no reason
    }
    by_key = report.by_key()
    checked = 0
    for prefix in report.prefixes():
        rows = iter_index_rows(store, prefix, f"{prefix}/", IndexOptions(), IndexSummary())
        for batch in clean_partition(sorted(rows, key=lambda r: r["key"]), store, CFG, workers=2):
            for out in batch:
                entry = by_key[out["key"]]
                if entry.outcome == "too_long":
                    assert not out["keep"] and not out["reasons"] and "long_form" in out["flags"], out
                elif entry.outcome == "ok":
                    assert out["keep"], (out["key"], out["reasons"], out["decode_detail"])
                else:
                    assert expected[entry.outcome] <= set(out["reasons"]), (entry.outcome, out["reasons"])
                checked += 1
    assert checked == len(report.audio())


# -- the shared ordered process pool (asr_distill.stages._procpool) ------------------------------


class OddError(Exception):
    """An exception that cannot be unpickled (its __init__ takes two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"odd {a} {b}")


def _pool_task(chunk: list[int], scale: int) -> list[int]:
    if 13 in chunk:
        raise OddError(1, 2)
    if 99 in chunk:
        os._exit(5)
    return [x * scale for x in chunk]


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_ordered_pool_keeps_order_and_survives_a_dying_worker(executor: str) -> None:
    from asr_distill.stages._procpool import OrderedPool, chunked

    items = [x for x in range(40) if x != 13]
    if executor == "process":
        items.insert(17, 99)
    pool = OrderedPool(_pool_task, (3,), on_crash=lambda x, d: -x, executor=executor, workers=2, name="t")
    out = [y for chunk in pool.map(chunked(items, 3), in_flight=2) for y in chunk]
    assert out == [-x if x == 99 else 3 * x for x in items]
    assert pool.restarts == (2 if executor == "process" else 0) and pool.pool is None


def test_ordered_pool_passes_worker_errors_on() -> None:
    from asr_distill.stages._procpool import OrderedPool, PoolStartError

    pool = OrderedPool(_pool_task, (1,), on_crash=lambda x, d: x, executor="process", workers=1, name="t")
    with pytest.raises(RuntimeError, match="OddError: odd 1 2"):  # not a broken pool
        list(pool.map([[1], [13], [2]], in_flight=2))
    unpicklable = OrderedPool(
        _pool_task, (lambda: 1,), on_crash=lambda x, d: x, executor="process", workers=1, name="t"
    )
    with pytest.raises(PoolStartError, match="pickled"):
        list(unpicklable.map([[1]], in_flight=1))
    with pytest.raises(ValueError, match="unknown executor"):
        OrderedPool(_pool_task, (1,), on_crash=lambda x, d: x, executor="fork")  # type: ignore[arg-type]
