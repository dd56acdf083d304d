"""Segment one long recording (runs in a worker process): decode once, VAD, plan, cut, measure, encode.

The recording is decoded once by :func:`~asr_distill.audio.vad.vad_file`; its ``on_block`` spills the
int16 16 kHz signal to a local temporary file (never the whole recording in memory) and hashes it (the
clean stage's ``pcm_blake3``: the same int16 values, see :func:`asr_distill.stages.clean.metrics.pcm16`).
The planner then works on the probabilities alone; each planned segment's samples are read back from
the spill file, measured with the clean stage's :class:`~asr_distill.stages.clean.metrics.SignalAnalyzer`
(its content hash is the segment's ``pcm_blake3``), checked against the segment-level audio rules and,
when kept, encoded as a FLAC member of the recording's tar.

Segment metrics are measured on the stored 16 kHz mono int16 signal: a segment has no source-rate
samples of its own (short clips measure peak and clipping on the source samples instead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from asr_distill import hashing
from asr_distill.audio.decode import DecodeError
from asr_distill.audio.vad import SileroVad, VadModelError, vad_file
from asr_distill.hashing import HashingReader, PcmHasher
from asr_distill.stages.clean.core import _format_hint
from asr_distill.stages.clean.metrics import SignalAnalyzer
from asr_distill.stages.segment import layout
from asr_distill.stages.segment.config import Fingerprint, SegmentStageConfig
from asr_distill.stages.segment.plan import PlannedSegment, account, plan_segments
from asr_distill.stages.segment.schema import RECORDING_COLUMNS, SEGMENT_REASONS
from asr_distill.stages.shards.encode import encode_audio
from asr_distill.stages.shards.tar import TarWriter
from asr_distill.storage import Storage

Row = dict[str, Any]
_REASON_ORDER = {r: i for i, r in enumerate(SEGMENT_REASONS)}
REUSABLE_STATUSES = ("ok", "no_speech")


@dataclass(frozen=True, slots=True)
class RecordingTask:
    """One recording to segment. ``reuse_tar``: the driver found this recording's previous rows reusable
    provided their tar still exists with ``reuse_tar_bytes`` bytes (None key: previous rows had no tar)."""

    row: Row
    reuse: bool = False
    reuse_tar: str | None = None
    reuse_tar_bytes: int | None = None


@dataclass(slots=True)
class RecordingResult:
    """The rows of one recording, or ``reused=True`` (the driver takes the previous rows)."""

    source_key: str
    recording: Row | None = None
    segments: list[Row] = field(default_factory=list)
    reused: bool = False
    audio_s: float = 0.0  # seconds of audio decoded
    vad_s: float = 0.0  # worker seconds spent in decode + resample + VAD (+ spill)
    work_s: float = 0.0  # worker seconds for the whole recording


# -- the VAD session of this worker (one per process or thread; one onnxruntime thread each) ----------
_LOCAL = threading.local()


def worker_vad() -> SileroVad:
    vad = getattr(_LOCAL, "vad", None)
    if vad is None:
        vad = _LOCAL.vad = SileroVad()
    return vad


def reference_text(row: Mapping[str, Any]) -> str | None:
    """The whole recording's transcript: the clean stage's ``reference_text`` (null when its sidecar
    was bad), or the index ``text`` for rows that do not carry the clean columns."""
    return row["reference_text"] if "reference_text" in row else row.get("text")


def base_recording_row(row: Mapping[str, Any], partition: str, fp: Fingerprint) -> Row:
    out: Row = dict.fromkeys(RECORDING_COLUMNS)
    out.update(
        partition=partition,
        source_key=str(row["key"]),
        fingerprint=fp.value,
        vad_model_sha256=fp.model_sha256,
        onnxruntime_version=fp.onnxruntime_version,
        segment_config_fingerprint=fp.segment_config,
        reference_text=reference_text(row),
        language=row.get("language"),
        speaker=row.get("speaker"),
        kept_segments=0,
        quarantined_segments=0,
        forced_cuts=0,
    )
    return out


def failed_result(
    row: Mapping[str, Any], partition: str, fp: Fingerprint, status: str, code: str | None, detail: str
) -> RecordingResult:
    rec = base_recording_row(row, partition, fp)
    rec.update(status=status, decode_error=code, detail=detail)
    return RecordingResult(str(row["key"]), rec)


# -- one segment --------------------------------------------------------------------------------------
def _read_pcm(fh: BinaryIO, start: int, end: int) -> np.ndarray:
    fh.seek(2 * start)
    data = fh.read(2 * (end - start))
    if len(data) != 2 * (end - start):
        raise RuntimeError(f"the spill file ends before sample {end}")
    return np.frombuffer(data, dtype="<i2")


def _measure(pcm: np.ndarray, cfg: SegmentStageConfig) -> tuple[dict[str, Any], bool]:
    """The clean stage's metrics of one segment's int16 samples; whether every sample is 0."""
    x = pcm.astype(np.float32) * np.float32(1.0 / 32768.0)  # exact: pcm16(x) gives pcm back
    analyzer = SignalAnalyzer(cfg.clean, channels=1, full_scale=1.0)
    analyzer.add_source(x.reshape(-1, 1))
    analyzer.add_mono(x)
    return analyzer.result(cfg.clean.target_rate), analyzer.peak == 0.0


def _audio_reasons(metrics: Mapping[str, Any], all_zero: bool, cfg: SegmentStageConfig) -> list[str]:
    """The clean stage's audio rules that apply to a segment (duration rules are the planner's)."""
    reasons = []
    if all_zero:
        reasons.append("silent")
    elif metrics["rms_dbfs"] < cfg.clean.min_rms_dbfs:
        reasons.append("too_quiet")
    if metrics["clipped_fraction"] > cfg.clean.max_clipped_fraction:
        reasons.append("clipped")
    return reasons


def _segment_row(
    seg: PlannedSegment, rec: Row, metrics: Mapping[str, Any], reasons: list[str], has_text: bool
) -> Row:
    flags = []
    if seg.forced_cut:
        flags.append("forced_cut")
    if seg.split:
        flags.append("split_at_pause")
    if has_text:
        flags.append("no_aligned_reference")
    return {
        "partition": rec["partition"],
        "segment_key": layout.segment_key(rec["source_key"], seg.index),
        "source_key": rec["source_key"],
        "segment_index": seg.index,
        "keep": not reasons,
        "reasons": sorted(reasons, key=_REASON_ORDER.__getitem__),
        "flags": flags,
        "speech_start_sample": seg.start,
        "speech_end_sample": seg.end,
        "start_sample": seg.pad_start,
        "end_sample": seg.pad_end,
        "offset_s": seg.offset_s,
        "duration_s": seg.duration_s,
        "num_samples": seg.samples,
        "speech_samples": seg.speech_samples,
        "pieces": seg.pieces,
        "forced_cut": seg.forced_cut,
        "has_aligned_reference": False,
        "pcm_blake3": metrics["pcm_blake3"],
        "rms_dbfs": metrics["rms_dbfs"],
        "peak_dbfs": metrics["peak_dbfs"],
        "clipped_fraction": metrics["clipped_fraction"],
        "clipped_samples": metrics["clipped_samples"],
        "leading_silence_s": metrics["leading_silence_s"],
        "trailing_silence_s": metrics["trailing_silence_s"],
        "tar_key": None,
        "member_name": None,
        "member_offset": None,
        "member_size": None,
        "source_blake3": rec["source_blake3"],
        "fingerprint": rec["fingerprint"],
        "language": rec["language"],
        "speaker": rec["speaker"],
    }


# -- one recording ------------------------------------------------------------------------------------
def _decode_and_vad(
    source: BinaryIO, row: Mapping[str, Any], cfg: SegmentStageConfig, spill: Path
) -> tuple[Any, str]:
    pcm_hash = PcmHasher()
    with open(spill, "wb") as fh:

        def on_block(block: np.ndarray) -> None:
            b = np.ascontiguousarray(block, dtype="<i2")
            fh.write(memoryview(b).cast("B"))
            pcm_hash.update(b)

        fv = vad_file(
            source,
            worker_vad(),
            format_hint=_format_hint(row),
            quality=cfg.clean.resample_quality,
            block_samples=cfg.block_samples,
            on_block=on_block,
        )
    return fv, pcm_hash.hexdigest()


def _cut(
    plan: list[PlannedSegment], rec: Row, spill: Path, lake: Storage, cfg: SegmentStageConfig, has_text: bool
) -> tuple[list[Row], list[PlannedSegment]]:
    """Measure, judge and encode every planned segment; kept ones go into the recording's tar.

    Returns the segment rows and the plan with the final keep decisions (for the accounting)."""
    shard_cfg = cfg.shard_config()
    tar_key = layout.tar_key(rec["partition"], rec["source_key"])
    rows: list[Row] = []
    final: list[PlannedSegment] = []
    with contextlib.ExitStack() as stack:
        tar: TarWriter | None = None
        tar_hash = hashing.new()
        src = stack.enter_context(open(spill, "rb"))
        for seg in plan:
            pcm = _read_pcm(src, seg.pad_start, seg.pad_end)
            metrics, all_zero = _measure(pcm, cfg)
            reasons = ([seg.reason] if seg.reason else []) + _audio_reasons(metrics, all_zero, cfg)
            audio: bytes | None = None
            if not reasons:
                try:
                    audio = encode_audio(pcm, shard_cfg)
                except Exception:  # libsndfile refusing is one segment's problem, not the run's
                    reasons.append("encode_failed")
            row = _segment_row(seg, rec, metrics, reasons, has_text)
            if audio is not None:
                if tar is None:
                    fh = stack.enter_context(lake.open_write(tar_key, suffix=".tar"))
                    tar = TarWriter(fh, hasher=tar_hash)
                name = layout.member_name(seg.index)
                _, data_offset = tar.add(name, audio)
                row.update(
                    tar_key=tar_key, member_name=name, member_offset=data_offset, member_size=len(audio)
                )
            rows.append(row)
            first = row["reasons"][0] if row["reasons"] else None
            final.append(dataclasses.replace(seg, kept=row["keep"], reason=first))
        if tar is not None:
            rec["tar_bytes"] = tar.close()
            rec["tar_key"] = tar_key
            rec["tar_blake3"] = tar_hash.hexdigest()
    return rows, final


def segment_recording(
    task: RecordingTask, raw: Storage, lake: Storage, partition: str, cfg: SegmentStageConfig, fp: Fingerprint
) -> RecordingResult:
    """Everything about one recording. Never raises for a bad recording: the status says what happened."""
    row = task.row
    key = str(row["key"])
    if task.reuse:
        if task.reuse_tar is None:
            return RecordingResult(key, reused=True)
        with contextlib.suppress(Exception):
            if lake.stat(task.reuse_tar).size == task.reuse_tar_bytes:
                return RecordingResult(key, reused=True)
    t0 = time.perf_counter()
    rec = base_recording_row(row, partition, fp)
    result = RecordingResult(key, rec)
    try:
        with (
            raw.local_copy(key, suffix=Path(key).suffix) as path,
            open(path, "rb", buffering=0) as fh,
            tempfile.TemporaryDirectory(prefix="asrd-segment-") as tmp,
        ):
            # The source hash comes from the decoder's own read of the file (no second read).
            source = HashingReader(fh)
            spill = Path(tmp) / "pcm.s16le"
            t_vad = time.perf_counter()
            failed: DecodeError | None = None
            try:
                fv, pcm_hash = _decode_and_vad(source.buffered(), row, cfg, spill)
            except DecodeError as exc:
                failed = exc
            rec["source_blake3"] = source.finish()
            result.vad_s = time.perf_counter() - t_vad
            expected = row.get("source_blake3")
            if expected and rec["source_blake3"] != expected:
                rec.update(status="content_changed", detail="source_blake3 differs from the clean table")
                return result
            if failed is not None:
                raise failed
            n = fv.n_samples
            result.audio_s = n / cfg.clean.target_rate
            rec.update(pcm_blake3=pcm_hash, n_samples=n, duration_s=n / cfg.clean.target_rate)
            if row.get("num_samples") is not None and int(row["num_samples"]) != n:
                rec.update(
                    status="content_changed",
                    detail=f"{n} samples decoded, the clean table says {row['num_samples']}",
                )
                return result
            if row.get("pcm_blake3") and row["pcm_blake3"] != pcm_hash:
                rec.update(status="content_changed", detail="pcm_blake3 differs from the clean table")
                return result
            plan = plan_segments(fv.probabilities, n, cfg.segment)
            has_text = rec["reference_text"] is not None
            rows, final = _cut(plan, rec, spill, lake, cfg, has_text)
        acc = account(final, n, cfg.segment.max_segment_s)
        rec.update(
            status="ok" if plan else "no_speech",
            kept_samples=acc.kept_samples,
            quarantined_samples=acc.quarantined_samples,
            non_speech_samples=acc.non_speech_samples,
            kept_segments=acc.kept_segments,
            quarantined_segments=acc.quarantined_segments,
            forced_cuts=acc.forced_cuts,
            quarantined_samples_by_reason=dict(sorted(acc.quarantined_by_reason.items())),
        )
        result.segments = rows
    except VadModelError:
        raise  # a setup problem: every recording would fail the same way
    except DecodeError as exc:
        _fail(rec, exc.reason_code, exc.detail)
        result.segments = []
    except Exception as exc:  # storage failures, or a bug: one row with a reason, never a crashed run
        code = "internal_error" if rec["source_blake3"] else "read_error"
        _fail(rec, code, f"{type(exc).__name__}: {exc}")
        result.segments = []
    finally:
        result.work_s = time.perf_counter() - t0
    return result


def _fail(rec: Row, code: str, detail: str) -> None:
    keep = ("partition", "source_key", "fingerprint", "vad_model_sha256", "onnxruntime_version")
    keep += ("segment_config_fingerprint", "reference_text", "language", "speaker", "source_blake3")
    for name in RECORDING_COLUMNS:
        if name not in keep:
            rec[name] = None
    rec.update(status="decode_failed", decode_error=code, detail=detail)
    rec.update(kept_segments=0, quarantined_segments=0, forced_cuts=0)


def segment_chunk(
    tasks: list[RecordingTask],
    raw: Storage,
    lake: Storage,
    partition: str,
    cfg: SegmentStageConfig,
    fp: Fingerprint,
) -> list[RecordingResult]:
    """The pool's chunk function."""
    return [segment_recording(t, raw, lake, partition, cfg, fp) for t in tasks]
