"""Build the ``audio_index`` table of one raw prefix: stream the listing, probe in parallel, write Parquet.

Probing runs in a process pool for a local store and in a thread pool for a remote one (see
:class:`IndexOptions`); rows come back in listing order, so the file is byte-identical either way.

Memory stays bounded whatever the prefix size: the listing is consumed as a stream, sidecars are
matched to their audio with a small window (keys sharing the stem ``a/b.`` are contiguous in a
sorted listing), at most ``max_in_flight`` probes run at once and rows are written in batches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill import lake as lake_layout
from asr_distill.stages._procpool import OrderedPool, default_workers
from asr_distill.stages._raypool import RayTasks, is_ray
from asr_distill.stages.index.probe import Probe, probe_audio
from asr_distill.stages.index.schema import (
    AUDIO_EXTENSIONS,
    AUDIO_INDEX_SCHEMA,
    SIDECAR_EXTENSIONS,
    SIDECAR_MAX_BYTES,
)
from asr_distill.stages.leftovers import sweep_stage_folder
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.storage import InvalidKeyError, ObjectInfo, ObjectNotFoundError, Storage, StorageError

log = logging.getLogger(__name__)

INDEX_VERSION = "2"  # bump when probing logic changes what a row holds
FINGERPRINT_META = b"asr_distill.listing_fingerprint"
DURATION_BINS_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, float("inf"))


IndexExecutor = Literal["auto", "process", "thread", "inline", "ray"] | RayTasks


@dataclass(frozen=True)
class IndexOptions:
    """How :func:`build_index` probes.

    ``executor="auto"``: a local store is probed by a process pool (probing is short C calls between
    Python code, so threads mostly wait for the GIL; processes use every core), fed chunks of
    ``chunk_objects`` audio objects; a listing of fewer than ``pool_min_objects`` audio objects is
    probed inline instead (starting the pool would cost more than it saves). A remote store is probed
    by a thread pool (requests wait on the network). ``"process"``, ``"thread"`` and ``"inline"`` force
    one way; ``"ray"`` (or :class:`~asr_distill.stages._raypool.RayTasks`) probes the chunks as Ray
    tasks on the connected cluster (``workers``: its CPUs by default). The output is byte-identical
    whichever is used.
    """

    # Probe processes (local) or threads (remote). None: one process per core locally; for a remote
    # store its ``io_concurrency`` threads (OSS: 64 by default), each waiting on its own request.
    workers: int | None = None
    max_in_flight: int = 256  # objects being probed at once (bounds memory)
    batch_rows: int = 2048
    progress_every_s: float = 10.0
    executor: IndexExecutor = "auto"
    chunk_objects: int = 64
    pool_min_objects: int = 512


@dataclass
class Group:
    """One stem (``dir/name``) with its audio objects and sidecars."""

    stem: str
    audio: list[ObjectInfo] = field(default_factory=list)
    txt: ObjectInfo | None = None
    json: ObjectInfo | None = None


@dataclass
class IndexSummary:
    rows: int = 0
    ok_rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    probe_errors: Counter[str] = field(default_factory=Counter)
    sidecar_errors: Counter[str] = field(default_factory=Counter)
    with_text: int = 0
    truncated: int = 0
    format_rate: Counter[tuple[str, int]] = field(default_factory=Counter)
    duration_hist: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BINS_S) - 1))
    ignored_objects: int = 0
    ignored_reasons: Counter[str] = field(default_factory=Counter)  # IGNORED_REASONS code -> objects
    ignored_sample: list[str] = field(default_factory=list)  # "<reason>: <key>", up to 10
    orphan_sidecars: int = 0
    elapsed_s: float = 0.0
    skipped: bool = False  # the listing was unchanged: the existing index was reused
    fingerprint: str = ""
    swept_temporaries: int = 0  # stale .asrd-tmp-* leftovers of killed writes removed from the folder

    @property
    def error_rows(self) -> int:
        return self.rows - self.ok_rows

    @property
    def error_rate(self) -> float:
        return self.error_rows / self.rows if self.rows else 0.0

    @property
    def objects_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.bytes += row["size"]
        if row["probe_error"]:
            self.probe_errors[row["probe_error"]] += 1
        else:
            self.ok_rows += 1
            dur = row["duration_s"] or 0.0
            self.seconds += dur
            self.format_rate[(row["container"] or "?", row["sample_rate"] or 0)] += 1
            for i in range(len(DURATION_BINS_S) - 1):
                if DURATION_BINS_S[i] <= dur < DURATION_BINS_S[i + 1]:
                    self.duration_hist[i] += 1
                    break
            if row["header_duration_s"] is not None:
                self.truncated += 1
        if row["sidecar_error"]:
            self.sidecar_errors[row["sidecar_error"]] += 1
        if row["text"] is not None:
            self.with_text += 1


def _ext(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""


def _stem(key: str) -> str:
    head, _, name = key.rpartition("/")
    base = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}/{base}" if head else base


def group_listing(
    objects: Iterable[ObjectInfo], on_ignored: Callable[[ObjectInfo, str], None] | None = None
) -> Iterator[Group]:
    """Group a key-sorted listing into stems; yields each group once all of its keys were seen.

    Objects that get no row are passed to ``on_ignored`` with an ``IGNORED_REASONS`` code.
    """
    pending: dict[str, Group] = {}

    def flush_before(key: str) -> Iterator[Group]:
        for stem in [s for s in pending if not key.startswith(s + ".")]:
            yield pending.pop(stem)

    for obj in objects:
        yield from flush_before(obj.key)
        ext = _ext(obj.key)
        if obj.key_error == "directory_marker":
            if on_ignored:
                on_ignored(obj, "directory_marker")
            continue
        if ext not in AUDIO_EXTENSIONS and ext not in SIDECAR_EXTENSIONS:
            if on_ignored:
                on_ignored(obj, "not_audio")
            continue
        stem = _stem(obj.key)
        group = pending.get(stem)
        if group is None:
            group = pending[stem] = Group(stem)
        if ext in AUDIO_EXTENSIONS:
            group.audio.append(obj)
        elif ext == "txt":
            group.txt = obj
        else:
            group.json = obj
    yield from pending.values()


def _read_sidecar(store: Storage, obj: ObjectInfo) -> bytes | str:
    """The sidecar's bytes (at most :data:`SIDECAR_MAX_BYTES`), or a ``SIDECAR_ERRORS`` code."""
    if obj.key_error:
        return "unaddressable_key"
    if obj.size > SIDECAR_MAX_BYTES:
        return "too_large"
    try:
        # Ask for the listed size plus one byte: a read buffer of the cap's size costs more than the
        # read itself. More than the listed size came back: the object grew since the listing, so read
        # again up to the cap (never past it).
        data = store.read_range(obj.key, 0, obj.size + 1)
        if len(data) > obj.size:
            data = store.read_range(obj.key, 0, SIDECAR_MAX_BYTES + 1)
    except InvalidKeyError:
        return "unaddressable_key"
    except ObjectNotFoundError:  # removed since the listing; access/network errors fail the step
        return "read_error"
    if len(data) > SIDECAR_MAX_BYTES:
        return "too_large"
    return data


def read_sidecars(store: Storage, group: Group) -> dict[str, Any]:
    """Text, language and speaker from a group's sidecars, with an error code when one is bad.

    Never raises for a bad sidecar (malformed, too deep, too large, unaddressable): the code goes to
    ``sidecar_error`` and the audio row stays.
    """
    out: dict[str, Any] = {
        "text": None,
        "language": None,
        "speaker": None,
        "sidecar_key": None,
        "sidecar_error": None,
    }
    txt_text = None
    if group.txt is not None:
        out["sidecar_key"] = group.txt.key
        data = _read_sidecar(store, group.txt)
        if isinstance(data, str):
            out["sidecar_error"] = data
        else:
            try:
                txt_text = data.decode("utf-8").strip()
                out["text"] = txt_text
            except UnicodeDecodeError:
                out["sidecar_error"] = "not_utf8"
    if group.json is not None:
        out["sidecar_key"] = group.json.key
        data = _read_sidecar(store, group.json)
        if isinstance(data, str):
            out["sidecar_error"] = data
            return out
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            out["sidecar_error"] = "not_utf8"
            return out
        except RecursionError:
            out["sidecar_error"] = "too_deep"
            return out
        except ValueError:
            out["sidecar_error"] = "invalid_json"
            return out
        if not isinstance(doc, dict):
            out["sidecar_error"] = "invalid_json"
            return out
        fields = {f: doc.get(f) for f in ("text", "language", "speaker")}
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            out["sidecar_error"] = "bad_field"
            fields = {f: (v if isinstance(v, str) else None) for f, v in fields.items()}
        if fields["text"] is not None:
            json_text = fields["text"].strip()
            if txt_text is not None and txt_text != json_text:
                out["sidecar_error"] = "conflicting_sidecars"
            out["text"] = json_text
        out["language"] = fields["language"]
        out["speaker"] = fields["speaker"]
    return out


# What read_sidecars returns for a group without sidecars (make_row copies the values out of it).
_NO_SIDECARS: dict[str, Any] = {
    "text": None,
    "language": None,
    "speaker": None,
    "sidecar_key": None,
    "sidecar_error": None,
}


def probe_object(store: Storage, obj: ObjectInfo) -> Probe:
    """Probe one object from any store: by path when local, by bytes otherwise."""
    if obj.key_error:
        return Probe(error="unaddressable_key", detail=f"{obj.key_error}: {obj.key!r}"[:300])
    if obj.size == 0:
        return Probe(error="empty_object", detail="0 bytes")
    try:
        path = store.local_path(obj.key)
        source: Any = path if path is not None else store.read_bytes(obj.key)
    except ObjectNotFoundError as exc:
        # Removed since the listing: a row. Access denied or an outage outlasting the backend's
        # retries raise, so the step fails (and is retried) instead of writing rows that would be
        # reused as if final.
        return Probe(error="read_error", detail=str(exc)[:300])
    try:
        return probe_audio(source, size=obj.size)
    except OSError as exc:
        return Probe(error="read_error", detail=f"{type(exc).__name__}: {exc}"[:300])


def storable_key(key: str) -> str:
    """``key`` as Parquet can store it: a name that is not UTF-8 (a local file name's undecodable bytes,
    held as lone surrogates) keeps its bytes as ``\\xNN`` escapes."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return key


def make_row(partition: str, obj: ObjectInfo, probe: Probe, side: dict[str, Any]) -> dict[str, Any]:
    return {
        "partition": partition,
        "key": storable_key(obj.key),
        "size": obj.size,
        "etag": obj.etag,
        "mtime": datetime.fromtimestamp(obj.mtime, UTC) if obj.mtime is not None else None,
        "extension": _ext(obj.key),
        "container": probe.container,
        "codec": probe.codec,
        "sample_rate": probe.sample_rate,
        "channels": probe.channels,
        "frames": probe.frames,
        "duration_s": probe.duration_s,
        "header_duration_s": probe.header_duration_s,
        "text": side["text"],
        "language": side["language"],
        "speaker": side["speaker"],
        "sidecar_key": side["sidecar_key"],
        "sidecar_error": side["sidecar_error"],
        "probe_error": probe.error,
        "probe_detail": probe.detail,
    }


@dataclass(frozen=True)
class ListingFingerprint:
    digest: str
    objects: int
    bytes: int


class Fingerprinter:
    """Accumulates the listing fingerprint: sha256 over (key, version) of every object, plus the index version."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(f"asr_distill.audio_index/{INDEX_VERSION}\n".encode())
        self.objects = 0
        self.bytes = 0

    def watch(self, objects: Iterable[ObjectInfo]) -> Iterator[ObjectInfo]:
        for obj in objects:
            self._h.update(f"{obj.key}\t{obj.version_tag}\n".encode("utf-8", "surrogateescape"))
            self.objects += 1
            self.bytes += obj.size
            yield obj

    def result(self) -> ListingFingerprint:
        return ListingFingerprint(self._h.hexdigest(), self.objects, self.bytes)


def listing_fingerprint(store: Storage, prefix: str) -> ListingFingerprint:
    """The fingerprint of everything listed under ``prefix`` (changes when any object changes)."""
    fp = Fingerprinter()
    for _ in fp.watch(store.iter_objects(prefix, include_unaddressable=True)):
        pass
    return fp.result()


def existing_fingerprint(lake: Storage, key: str) -> str | None:
    """The listing fingerprint recorded in an existing index file, if any."""
    if not lake.exists(key):
        return None
    try:
        with lake.local_copy(key, suffix=".parquet") as path:
            meta = pq.read_metadata(path).metadata or {}
    except Exception:  # an unreadable old index is simply rebuilt
        return None
    value = meta.get(FINGERPRINT_META)
    return value.decode() if value else None


def _is_local(store: Storage) -> bool:
    try:
        return store.local_path("probe") is not None
    except StorageError:
        return False


def _default_workers(store: Storage) -> int:
    """Probe processes for a local store (one per core), threads for a remote one: the store's
    ``io_concurrency`` (requests in flight; a remote probe mostly waits on its GET)."""
    return default_workers() if _is_local(store) else max(1, store.io_concurrency)


def _group_rows(
    raw: Storage, partition: str, group: Group, sidecars: Future[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The rows of one group. ``sidecars``: its sidecars being read meanwhile on another thread (a
    remote store: the sidecar GET and the audio GET wait on the network together)."""
    if sidecars is not None:
        probes = [probe_object(raw, obj) for obj in group.audio]
        side = sidecars.result()
        return [make_row(partition, obj, probe, side) for obj, probe in zip(group.audio, probes, strict=True)]
    side = read_sidecars(raw, group) if (group.txt or group.json) else _NO_SIDECARS
    return [make_row(partition, obj, probe_object(raw, obj), side) for obj in group.audio]


def _probe_groups(groups: list[Group], raw: Storage, partition: str) -> list[list[dict[str, Any]]]:
    """The rows of each group of a chunk (inline)."""
    return [_group_rows(raw, partition, g) for g in groups]


# Process-pool tasks carry groups and rows as plain tuples: pickling dataclasses and dicts cost more
# than probing a WAV header.
PackedGroup = tuple[str, list[tuple[Any, ...]], tuple[Any, ...] | None, tuple[Any, ...] | None]
ROW_FIELDS = tuple(AUDIO_INDEX_SCHEMA.names)


def _pack(group: Group) -> PackedGroup:
    def obj(o: ObjectInfo) -> tuple[Any, ...]:
        return (o.key, o.size, o.etag, o.mtime, o.key_error)

    return (
        group.stem,
        [obj(o) for o in group.audio],
        obj(group.txt) if group.txt else None,
        obj(group.json) if group.json else None,
    )


def _unpack(packed: PackedGroup) -> Group:
    stem, audio, txt, js = packed
    return Group(
        stem,
        [ObjectInfo(*o) for o in audio],
        ObjectInfo(*txt) if txt else None,
        ObjectInfo(*js) if js else None,
    )


def _probe_packed(packed: list[PackedGroup], raw: Storage, partition: str) -> list[list[tuple[Any, ...]]]:
    """The rows (as tuples in :data:`ROW_FIELDS` order) of each group of a chunk (runs in a pool worker).

    On a store with request latency (``io_concurrency`` > 1: a Ray task reading OSS) the chunk's groups
    are probed by that many threads, in order; on a local store one after another."""

    def rows(p: PackedGroup) -> list[tuple[Any, ...]]:
        return [tuple(row.values()) for row in _group_rows(raw, partition, _unpack(p))]

    threads = min(len(packed), raw.io_concurrency)
    if threads <= 1:
        return [rows(p) for p in packed]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="probe") as pool:
        return list(pool.map(rows, packed))


def _crashed_rows(raw: Storage, partition: str, group: Group, detail: str) -> list[dict[str, Any]]:
    """Rows of a group whose probing process died (a native decoder crash): decode_error, sidecars kept."""
    side = read_sidecars(raw, group)
    probe = Probe(error="decode_error", detail=f"the probing process died: {detail}"[:300])
    return [make_row(partition, obj, probe, side) for obj in group.audio]


def _chunk_groups(groups: Iterable[Group], objects: int) -> Iterator[list[Group]]:
    """Lists of consecutive groups holding about ``objects`` audio objects each."""
    chunk: list[Group] = []
    n = 0
    for group in groups:
        chunk.append(group)
        n += len(group.audio)
        if n >= objects:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _choose_executor(
    raw: Storage, options: IndexOptions, groups: Iterator[Group]
) -> tuple[str, Iterator[Group]]:
    """The executor to use, and the groups (the first ones may have been read ahead to decide)."""
    if options.executor != "auto":
        return options.executor, groups
    if not _is_local(raw):
        return "thread", groups
    head: list[Group] = []
    n = 0
    for group in groups:  # small listings are probed inline: no pool start-up
        head.append(group)
        n += len(group.audio)
        if n >= options.pool_min_objects:
            return "process", itertools.chain(head, groups)
    return "inline", iter(head)


def iter_index_rows(
    raw: Storage,
    partition: str,
    prefix: str,
    options: IndexOptions,
    summary: IndexSummary,
    progress: Callable[[str], None] | None = None,
    fingerprinter: Fingerprinter | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of the index in a deterministic order (listing order), probing with a bounded pool.

    The order, the rows and the listing fingerprint do not depend on the executor or the workers.
    """

    def ignored(obj: ObjectInfo, reason: str) -> None:
        summary.ignored_objects += 1
        summary.ignored_reasons[reason] += 1
        if len(summary.ignored_sample) < 10:
            summary.ignored_sample.append(f"{reason}: {storable_key(obj.key)!r}")

    def audio_groups() -> Iterator[Group]:
        listing = raw.iter_objects(prefix, include_unaddressable=True)
        if fingerprinter is not None:
            listing = fingerprinter.watch(listing)
        for group in group_listing(listing, ignored):
            if group.audio:
                yield group
            else:
                summary.orphan_sidecars += int(group.txt is not None) + int(group.json is not None)

    started = last_report = time.monotonic()

    def emit(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal last_report
        for row in rows:
            summary.add(row)
            yield row
        now = time.monotonic()
        if progress and now - last_report >= options.progress_every_s:
            last_report = now
            rate = summary.rows / max(now - started, 1e-9)
            progress(f"indexed {summary.rows} objects of {prefix!r} ({rate:,.0f} objects/s)")

    executor, groups = _choose_executor(raw, options, audio_groups())
    if is_ray(executor):
        yield from _ray_rows(raw, partition, groups, options, executor, emit)
        return
    if executor == "thread":
        yield from _thread_rows(raw, partition, groups, options, emit)
        return
    if executor not in ("process", "inline"):
        raise ValueError(f"unknown executor {executor!r}")
    workers = options.workers or (default_workers() if executor == "process" else 1)
    chunk = max(1, options.chunk_objects)
    in_flight = max(2 * workers, -(-options.max_in_flight // chunk))
    if executor == "inline":
        for group_chunk in _chunk_groups(groups, chunk):
            for rows in _probe_groups(group_chunk, raw, partition):
                yield from emit(rows)
        return
    pool: OrderedPool[PackedGroup, list[tuple[Any, ...]]] = OrderedPool(
        _probe_packed,
        (raw, partition),
        on_crash=lambda packed, detail: [
            tuple(r.values()) for r in _crashed_rows(raw, partition, _unpack(packed), detail)
        ],
        executor="process",
        workers=workers,
        name="index",
    )
    chunks = ([_pack(g) for g in c] for c in _chunk_groups(groups, chunk))
    # The workers start in a background thread (a cold forkserver spends a while importing); with
    # executor="auto" the first chunks are probed here meanwhile (those are not crash-isolated).
    failed: list[BaseException] = []
    starter = threading.Thread(target=_start_pool, args=(pool, failed), name="index-pool-start", daemon=True)
    starter.start()
    try:
        while options.executor == "auto" and starter.is_alive():
            first = next(chunks, None)
            if first is None:
                break
            for rows in _probe_packed(first, raw, partition):
                yield from emit([dict(zip(ROW_FIELDS, r, strict=True)) for r in rows])
        starter.join()
        if failed:
            if options.executor != "auto":
                raise failed[0]
            # e.g. a script without a main guard: index anyway, on one core
            log.warning("probing inline: %s", failed[0])
            pool = OrderedPool(_probe_packed, (raw, partition), on_crash=pool.on_crash, executor="inline")
        for results in pool.map(chunks, in_flight=in_flight):
            for rows in results:
                yield from emit([dict(zip(ROW_FIELDS, r, strict=True)) for r in rows])
    finally:
        starter.join()
        pool.close()


def _ray_rows(
    raw: Storage,
    partition: str,
    groups: Iterator[Group],
    options: IndexOptions,
    executor: Any,
    emit: Callable[[list[dict[str, Any]]], Iterator[dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """Probe chunks of groups as Ray tasks (same chunks, order and crash rows as the process pool)."""
    pool: OrderedPool[PackedGroup, list[tuple[Any, ...]]] = OrderedPool(
        _probe_packed,
        (raw, partition),
        on_crash=lambda packed, detail: [
            tuple(r.values()) for r in _crashed_rows(raw, partition, _unpack(packed), detail)
        ],
        executor=executor,
        workers=options.workers,
        name="index",
    )
    chunk = max(1, options.chunk_objects)
    in_flight = max(2 * pool.workers, -(-options.max_in_flight // chunk))
    chunks = ([_pack(g) for g in c] for c in _chunk_groups(groups, chunk))
    try:
        for results in pool.map(chunks, in_flight=in_flight):
            for rows in results:
                yield from emit([dict(zip(ROW_FIELDS, r, strict=True)) for r in rows])
    finally:
        pool.close()


def _start_pool(pool: OrderedPool[Any, Any], failed: list[BaseException]) -> None:
    try:
        pool.start()
    except Exception as exc:  # PoolStartError, or arguments that cannot be pickled
        failed.append(exc)


def _thread_rows(
    raw: Storage,
    partition: str,
    groups: Iterator[Group],
    options: IndexOptions,
    emit: Callable[[list[dict[str, Any]]], Iterator[dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """Probe one group per task on a thread pool, at most ``max_in_flight`` at once (remote stores).

    A group's sidecars are read by a second pool (half as many threads) while its audio is read and
    probed, so a group waits one round trip, not two."""
    queue: deque[Future[list[dict[str, Any]]]] = deque()
    workers = options.workers or _default_workers(raw)
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool,
        ThreadPoolExecutor(max_workers=max(1, workers // 2), thread_name_prefix="sidecar") as side_pool,
    ):
        for group in groups:
            side = side_pool.submit(read_sidecars, raw, group) if (group.txt or group.json) else None
            queue.append(pool.submit(_group_rows, raw, partition, group, side))
            while len(queue) > options.max_in_flight:
                yield from emit(queue.popleft().result())
        while queue:
            yield from emit(queue.popleft().result())


def build_index(
    raw: Storage,
    lake: Storage,
    partition: str,
    prefix: str,
    out_key: str,
    options: IndexOptions | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IndexSummary:
    """Index every audio object under ``prefix`` into ``out_key`` (atomic), unless already up to date."""
    options = options or IndexOptions()
    started = time.monotonic()
    previous = None if force else existing_fingerprint(lake, out_key)
    if previous is not None:
        # A cheap listing pass decides whether anything changed since the last index.
        current = listing_fingerprint(raw, prefix).digest
        if current == previous:
            summary = IndexSummary(fingerprint=current, skipped=True)
            _summarise_existing(lake, out_key, summary)
            summary.elapsed_s = time.monotonic() - started
            return summary
    # One listing pass feeds the probes and the fingerprint, recorded in the file's footer.
    summary = IndexSummary()
    fp = Fingerprinter()
    schema = AUDIO_INDEX_SCHEMA
    with lake.staged_file(out_key, suffix=".parquet") as path:
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for row in iter_index_rows(raw, partition, prefix, options, summary, progress, fp):
                batch.append(row)
                if len(batch) >= options.batch_rows:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch.clear()
            if batch or summary.rows == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            summary.fingerprint = fp.result().digest
            writer.add_key_value_metadata({FINGERPRINT_META: summary.fingerprint.encode()})
    summary.elapsed_s = time.monotonic() - started
    return summary


def _summarise_existing(lake: Storage, key: str, summary: IndexSummary) -> None:
    with lake.local_copy(key, suffix=".parquet") as path:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                summary.add(row)


def run_index(
    raw: Storage,
    lake: Storage,
    partition: str,
    config: IndexOptions | None = None,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> IndexSummary:
    """The index stage's entry point: index the partition's raw prefix into its ``audio_index`` key.

    Reuses the existing index when the prefix listing is unchanged (unless ``force``).
    """
    say = Reporter("index", partition, progress)
    prefix, out_key = lake_layout.raw_prefix(partition), lake_layout.audio_index_key(partition)
    say(f"indexing {raw.url(prefix)} -> {lake.url(out_key)}")
    swept = sweep_stage_folder(lake, out_key.rpartition("/")[0] + "/", say)
    s = build_index(raw, lake, partition, prefix, out_key, config, force=force, progress=say)
    s.swept_temporaries = swept.removed
    if s.skipped:
        say(f"{partition}: listing unchanged since the last index ({s.rows} rows); not re-probed")
    else:
        say(f"{partition}: indexed {s.rows} audio objects in {s.elapsed_s:.1f}s ({s.objects_per_s:,.0f}/s)")
    return s
