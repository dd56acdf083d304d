"""Clean one partition: decode every clip, measure it, decide keep/quarantine with every reason.

``clean_partition`` streams result rows in input (key) order, in batches, decoding on all cores with a
bounded number of clips in flight. Per-clip work (:func:`analyze_clip`) is independent; the only
cross-clip decision (duplicates) is taken in the driver, in key order, so results are deterministic
whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from asr_distill.audio.decode import PYAV_FIRST, DecodeError, open_decoder
from asr_distill.hashing import HashingReader
from asr_distill.language import primary_language
from asr_distill.stages._procpool import ExecutorSpec, OrderedPool, check_executor, default_workers
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.metrics import SignalAnalyzer, feature_frames, subsampled_frames, text_stats
from asr_distill.stages.clean.schema import CLEAN_COLUMNS, INDEX_COLUMNS, REASONS, RECORDING_REASONS
from asr_distill.stages.readahead import Fetched, PrefetchedStore, ReadAhead, wants_read_ahead
from asr_distill.storage import ObjectChangedError, ObjectInfo, Storage
from asr_distill.tableio import read_table

Row = dict[str, Any]
# content hash -> (partition, key) of the clip kept with that content
KnownHashes = Mapping[str, tuple[str, str]]

_REASON_ORDER = {r: i for i, r in enumerate(REASONS)}


# -- one clip -------------------------------------------------------------------------------
def _format_hint(row: Mapping[str, Any]) -> str:
    for value in (row.get("container"), row.get("extension")):
        if value and str(value).lower() in PYAV_FIRST:
            return str(value).lower()
    return str(row.get("extension") or Path(str(row["key"])).suffix.lstrip(".")).lower()


def _measure(source: BinaryIO, row: Mapping[str, Any], cfg: CleanConfig, out: Row) -> bool:
    """Decode ``source`` and fill the audio metrics of ``out`` (raises DecodeError).

    Returns whether every decoded sample was exactly zero (digital silence).
    """
    with open_decoder(
        source, format_hint=_format_hint(row), target_rate=cfg.target_rate, quality=cfg.resample_quality
    ) as dec:
        out["decoder"] = dec.backend
        analyzer = SignalAnalyzer(cfg, dec.channels, dec.full_scale)
        for block in dec:
            analyzer.add_source(block.source, block.peak)
            analyzer.add_mono(block.mono)
        out.update(analyzer.result(cfg.target_rate))
        out["decoded_rate"] = dec.source_rate
        out["decoded_channels"] = dec.channels
        out["decoded_frames"] = dec.frames
        out["decoded_duration_s"] = dec.frames / dec.source_rate
        out["non_finite_samples"] = dec.non_finite_samples
        claims = [row.get("header_duration_s") or 0.0]
        if dec.header_frames:
            claims.append(dec.header_frames / dec.source_rate)
        out["claimed_duration_s"] = max(claims) or None
        return analyzer.peak == 0.0


def _norm_etag(etag: str | None) -> str | None:
    return etag.strip().strip('"').upper() if etag else None


def version_difference(row: Mapping[str, Any], info: ObjectInfo) -> str | None:
    """What differs between the version the index probed (``row``) and the one read now, or None.

    The version is the ETag when both sides have one (OSS), else size and mtime (local; the index
    stores mtime to the microsecond). A row that records no version (neither ETag nor mtime: not
    written by the index stage) is not compared.
    """
    if not row.get("etag") and row.get("mtime") is None:
        return None
    if row.get("size") is not None and int(row["size"]) != info.size:
        return f"size {info.size} != index {row['size']}"
    old_etag, new_etag = _norm_etag(row.get("etag")), _norm_etag(info.etag)
    if old_etag and new_etag:
        return None if old_etag == new_etag else f"etag {info.etag} != index {row.get('etag')}"
    old_mtime = row.get("mtime")
    if isinstance(old_mtime, datetime) and info.mtime is not None:
        old_us = round(old_mtime.timestamp() * 1_000_000)
        new_us = round(info.mtime * 1_000_000)
        if abs(old_us - new_us) > 1:
            return f"mtime {new_us / 1e6:.6f} != index {old_us / 1e6:.6f}"
    return None


def analyze_clip(row: Mapping[str, Any], store: Storage, cfg: CleanConfig) -> Row:
    """Everything about one clip except the duplicate decision. Never raises for bad audio."""
    out: Row = {name: row.get(name) for name in INDEX_COLUMNS}
    for name in CLEAN_COLUMNS[len(INDEX_COLUMNS) :]:
        out[name] = None
    reasons: list[str] = []
    flags: list[str] = []
    key = str(row["key"])
    probe_failed = bool(row.get("probe_error"))
    if probe_failed:
        reasons.append("probe_failed")
    all_zero = False
    changed: str | None = None
    try:
        if row.get("probe_error") == "unaddressable_key":
            raise DecodeError("read_error", "the object's name cannot be addressed (see probe_detail)")
        # The bytes measured and the version compared come from the same read (one request on OSS), and
        # the source hash is taken from the decoder's own read of the copy (no second read of the file).
        with store.versioned_copy(key, suffix=Path(key).suffix) as (path, info):
            changed = version_difference(row, info)
            if changed is None:
                with open(path, "rb", buffering=0) as raw:
                    source = HashingReader(raw)
                    try:
                        if not probe_failed:
                            all_zero = _measure(source.buffered(), row, cfg, out)
                    finally:
                        out["source_blake3"] = source.finish()
    except ObjectChangedError as exc:
        changed = str(exc)
    except DecodeError as exc:
        out["decode_error"], out["decode_detail"] = exc.reason_code, exc.detail
    except Exception as exc:  # storage failures, or a bug: one row with a reason, never a crashed run
        code = "internal_error" if out["source_blake3"] else "read_error"
        out["decode_error"], out["decode_detail"] = code, f"{type(exc).__name__}: {exc}"
    if changed is not None:
        # Never a row mixing the index's facts about one version with measurements of another.
        for name in CLEAN_COLUMNS[len(INDEX_COLUMNS) :]:
            out[name] = None
        out["decode_detail"] = f"changed since the index: {changed}"[:300]
        reasons.append("changed_since_index")
        all_zero = False
    if out["decode_error"] and not probe_failed:
        reasons.append("decode_failed")
    _audio_rules(out, cfg, reasons, all_zero)
    _text_rules(row, out, cfg, reasons, flags)
    if is_long_form(out, cfg):  # only the recording-level rules judge a recording to be segmented
        reasons = [r for r in reasons if r in RECORDING_REASONS]
    out["reasons"] = reasons
    out["flags"] = flags
    return out


def _audio_rules(out: Row, cfg: CleanConfig, reasons: list[str], all_zero: bool) -> None:
    dur = out["decoded_duration_s"]
    if dur is None:
        return
    claimed = out["claimed_duration_s"]
    if claimed and dur < cfg.truncation_ratio * claimed:
        reasons.append("truncated")
    if out["non_finite_samples"]:
        reasons.append("non_finite")
    if all_zero:
        reasons.append("silent")
    elif out["rms_dbfs"] < cfg.min_rms_dbfs:
        reasons.append("too_quiet")
    if out["clipped_fraction"] > cfg.max_clipped_fraction:
        reasons.append("clipped")
    if dur < cfg.min_duration_s:
        reasons.append("too_short")
    if dur > cfg.max_recording_s:
        reasons.append("too_long")


def is_long_form(out: Mapping[str, Any], cfg: CleanConfig) -> bool:
    """Whether a decoded clip is a long-form recording: longer than the teacher's window
    (``max_duration_s``), at most ``max_recording_s``."""
    dur = out.get("decoded_duration_s")
    return dur is not None and cfg.max_duration_s < dur <= cfg.max_recording_s


def _text_rules(
    row: Mapping[str, Any], out: Row, cfg: CleanConfig, reasons: list[str], flags: list[str]
) -> None:
    text = row.get("text")
    if row.get("sidecar_error"):
        if cfg.bad_sidecar == "quarantine":
            reasons.append("bad_sidecar")
        else:
            flags.append("bad_sidecar")
            text = None
    if text is None:
        flags.append("no_reference_text")
        return
    out["reference_text"] = text
    lang = primary_language(row.get("language"), cfg.default_language)
    stats = text_stats(text, lang, cfg)
    out["label_language"] = lang
    out["label_chars"], out["label_tokens"], out["label_repeats"] = stats.chars, stats.tokens, stats.repeats
    if stats.tokens == 0:  # empty, whitespace or punctuation only
        reasons.append("empty_text")
        return
    dur = out["decoded_duration_s"]
    if dur is None or out["num_samples"] is None:
        return
    if dur > 0:
        cps = stats.chars / dur
        out["chars_per_second"] = cps
        if not cfg.min_chars_per_second <= cps <= cfg.max_chars_per_second:
            reasons.append("chars_per_second")
    t = subsampled_frames(feature_frames(out["num_samples"], cfg.target_rate, cfg.feature_frame_rate))
    out["ctc_frames"] = t
    if t < stats.tokens + stats.repeats:
        reasons.append("ctc_infeasible")


def _analyze_rows(rows: list[Row], store: Storage, cfg: CleanConfig) -> list[Row]:
    out = []
    for r in rows:
        fetched = r.get(_FETCHED)  # read ahead by the driver (a remote store): no request here
        view: Any = PrefetchedStore(store, fetched) if fetched is not None else store
        out.append(analyze_clip(r, view, cfg))
    return out


_FETCHED = "_fetched"  # row field carrying the driver's read-ahead copy to the worker


def _with_read_ahead(rows: Iterable[Mapping[str, Any]], store: Storage, ra: ReadAhead[Any]) -> Iterator[Row]:
    """The rows, each with its object read ahead (in key order, ``ra.depth`` at once)."""

    def fetch(row: Mapping[str, Any], ra: ReadAhead[Any]) -> Fetched:
        key = str(row["key"])
        if row.get("probe_error") == "unaddressable_key":
            return Fetched(key)
        # The very read analyze_clip makes (versioned_copy: one GET on OSS, bytes and ETag together).
        return ra.copy(store, key, Path(key).suffix)

    for row, fetched in ra.map(rows, fetch, lambda r: int(r.get("size") or 0)):
        yield {**row, _FETCHED: fetched}


def _crashed_row(row: Mapping[str, Any], store: Storage, cfg: CleanConfig, detail: str) -> Row:
    """The row of a clip whose worker process died: decode_failed/worker_crashed, text rules still apply."""
    out: Row = {name: row.get(name) for name in INDEX_COLUMNS}
    for name in CLEAN_COLUMNS[len(INDEX_COLUMNS) :]:
        out[name] = None
    out["decode_error"], out["decode_detail"] = "worker_crashed", detail
    reasons = ["probe_failed"] if row.get("probe_error") else ["decode_failed"]
    flags: list[str] = []
    _text_rules(row, out, cfg, reasons, flags)
    out["reasons"], out["flags"] = reasons, flags
    return out


# -- progress -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CleanProgress:
    """Counts so far, for logs."""

    done: int
    kept: int
    quarantined: int
    audio_s: float  # decoded audio processed
    elapsed_s: float

    @property
    def clips_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.done} clips ({self.kept} kept, {self.quarantined} quarantined), "
            f"{self.audio_s / 3600:.2f} h in {self.elapsed_s:.1f} s: "
            f"{self.clips_per_s:.1f} clips/s, {self.realtime_factor:.0f}x real time"
        )


# -- the driver -----------------------------------------------------------------------------
def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    last: str | None = None
    for row in rows:
        key = row["key"]
        if last is not None and key <= last:
            raise ValueError(f"rows must be sorted by key without repeats: {key!r} after {last!r}")
        last = key
        chunk.append(dict(row))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def clean_partition(
    rows: Iterable[Mapping[str, Any]],
    store: Storage,
    config: CleanConfig | None = None,
    *,
    known_hashes: KnownHashes | None = None,
    workers: int | None = None,
    executor: ExecutorSpec = "process",
    batch_size: int = 1000,
    chunk_size: int = 8,
    progress: Callable[[CleanProgress], None] | None = None,
    progress_every_s: float = 10.0,
) -> Iterator[list[Row]]:
    """Clean the ``audio_index`` rows of one partition; yield batches of result rows in key order.

    ``rows`` must be sorted by ``key`` (as :func:`read_index_rows` yields them); a ValueError is raised
    otherwise. ``store`` is the raw store holding the audio (must be picklable for the process pool).
    ``known_hashes`` maps content hashes kept by partitions cleaned before to ``(partition, key)``;
    entries of the rows' own partition are ignored (a re-run must not find itself). ``workers`` defaults
    to the usable cores. ``executor="process"`` (default): a forkserver pool; a worker killed by a
    native decoder crash costs one ``worker_crashed`` row, not the run. ``"thread"``: no start-up cost
    and no pickling; on 2 cores it measured within noise of the process pool (libsndfile, soxr,
    hashlib and numpy release the GIL for the heavy parts), but a native crash takes the caller down.
    ``"inline"``: no pool (debugging). ``"ray"`` / :class:`~asr_distill.stages._raypool.RayTasks`: Ray
    tasks on the connected cluster (``workers`` defaults to its CPUs), same rows. At most
    ``4 * workers`` chunks of ``chunk_size`` clips are in flight, so memory stays bounded. On a store
    with latency to hide (``store.io_concurrency > 1``: OSS) and a local executor, the driver reads the
    objects ahead of the workers (:mod:`asr_distill.stages.readahead`: ``io_concurrency`` GETs in flight,
    the same one GET per clip, local copies removed as rows come back); the rows are the same either way.

    A clip is a ``duplicate`` when a clip earlier in key order in this partition that passed every
    other rule, or an entry of ``known_hashes``, has the same ``pcm_blake3``; the first stays kept.
    """
    cfg = config or CleanConfig()
    check_executor(executor)
    n_workers = workers or default_workers(executor)
    known = known_hashes or {}
    seen: dict[str, str] = {}  # content hash -> key of the first passing clip here
    runner: OrderedPool[Row, Row] = OrderedPool(
        _analyze_rows,
        (store, cfg),
        on_crash=lambda row, detail: _crashed_row(row, store, cfg, detail),
        executor=executor,
        workers=n_workers,
        name="clean",
    )
    stack = contextlib.ExitStack()
    source: Iterable[Mapping[str, Any]] = rows
    ra: ReadAhead[Any] | None = None
    if wants_read_ahead(store, executor):
        # A remote store: the driver reads objects ahead (io_concurrency at once) while workers decode.
        ra = stack.enter_context(ReadAhead(store.io_concurrency, name="clean-read"))
        source = _with_read_ahead(rows, store, ra)
    with stack:
        yield from _clean_results(
            runner,
            _chunks(source, chunk_size),
            n_workers,
            cfg,
            known,
            seen,
            ra,
            progress,
            progress_every_s,
            batch_size,
        )


def _clean_results(
    runner: OrderedPool[Row, Row],
    chunks: Iterator[list[Row]],
    n_workers: int,
    cfg: CleanConfig,
    known: KnownHashes,
    seen: dict[str, str],
    ra: ReadAhead[Any] | None,
    progress: Callable[[CleanProgress], None] | None,
    progress_every_s: float,
    batch_size: int,
) -> Iterator[list[Row]]:
    start = last_report = time.monotonic()
    done = kept = 0
    audio_s = 0.0
    batch: list[Row] = []
    for results in runner.map(chunks, in_flight=4 * n_workers):
        for out in results:
            if ra is not None:
                ra.release(str(out["key"]))
            _dedup(out, cfg, known, seen)
            out["keep"] = not out["reasons"]
            if out["keep"] and is_long_form(out, cfg):  # passed: to the segmentation stage
                out["keep"] = False
                out["flags"] = [*out["flags"], "long_form"]
            out["reasons"] = sorted(out["reasons"], key=_REASON_ORDER.__getitem__)
            done += 1
            kept += out["keep"] or "long_form" in out["flags"]
            audio_s += out["decoded_duration_s"] or 0.0
            batch.append(out)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        now = time.monotonic()
        if progress is not None and now - last_report >= progress_every_s:
            last_report = now
            progress(CleanProgress(done, kept, done - kept, audio_s, now - start))
    if batch:
        yield batch
    if progress is not None:
        progress(CleanProgress(done, kept, done - kept, audio_s, time.monotonic() - start))


def _dedup(out: Row, cfg: CleanConfig, known: KnownHashes, seen: dict[str, str]) -> None:
    digest = out["pcm_blake3"]
    if not cfg.dedup or not digest:
        return
    ref = known.get(digest)
    if ref is not None and ref[0] != out["partition"]:
        out["duplicate_of_partition"], out["duplicate_of"] = ref
    elif digest in seen:
        out["duplicate_of_partition"], out["duplicate_of"] = out["partition"], seen[digest]
    elif not out["reasons"]:
        seen[digest] = out["key"]
        return
    else:
        return
    out["reasons"].append("duplicate")


# -- reading inputs -------------------------------------------------------------------------
def read_index_rows(store: Storage, key: str, *, batch_rows: int = 10_000) -> Iterator[Row]:
    """Rows of an ``audio_index`` Parquet object, sorted by key (the order ``clean_partition`` needs).

    The index table (metadata only, ~200 bytes a row) is loaded to sort it; rows are then yielded.
    """
    yield from index_table_rows(read_table(store, key), batch_rows=batch_rows)


def index_table_rows(table: pa.Table, *, batch_rows: int = 10_000) -> Iterator[Row]:
    """Rows of an ``audio_index`` table, sorted by key."""
    for rb in table.sort_by("key").to_batches(max_chunksize=batch_rows):
        yield from rb.to_pylist()


def load_known_hashes(
    lake: Storage, kept_keys: Iterable[str], stale: list[str] | None = None
) -> dict[str, tuple[str, str]]:
    """``pcm_blake3 -> (partition, key)`` from kept tables of partitions cleaned before.

    Tables are read in the order given; within and across them the first (partition, key) in sorted
    order wins, so the result does not depend on the order of ``kept_keys``. A table written before
    content hashes became BLAKE3 (no ``pcm_blake3`` column: its sha256 hashes can never equal a BLAKE3
    one) is skipped and its key appended to ``stale``; cleaning that partition again makes it count.
    """
    out: dict[str, tuple[str, str]] = {}
    for table_key in kept_keys:
        try:
            table = read_table(lake, table_key, ["pcm_blake3", "partition", "key"])
        except (KeyError, pa.ArrowInvalid):
            if "pcm_blake3" in read_table(lake, table_key).schema.names:
                raise
            if stale is not None:
                stale.append(table_key)
            continue
        for digest, part, key in zip(
            table.column("pcm_blake3").to_pylist(),
            table.column("partition").to_pylist(),
            table.column("key").to_pylist(),
            strict=True,
        ):
            if digest is None:
                continue
            prev = out.get(digest)
            if prev is None or (part, key) < prev:
                out[digest] = (part, key)
    return out
