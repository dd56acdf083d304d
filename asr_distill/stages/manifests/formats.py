"""Writers of the three manifest formats (Parquet, NeMo tarred JSONL, Lhotse cuts), all atomic.

* **Parquet** (``manifest.parquet``): one row per sample, :data:`~.schema.MANIFEST_SCHEMA`.
* **NeMo tarred dataset**: per split, ``tarred_audio_manifest.jsonl`` (one JSON object per line:
  ``audio_filepath`` = the member's name in its tar, ``duration``, ``text``, ``shard_id``, ``lang``, and
  the provenance ``source_key``, ``source_offset_s``, ``segment_index``; never ``offset``: NeMo applies
  an ``offset`` inside the member, and a segment's member already starts at its offset) and
  ``tarred_audio_filepaths.txt`` (the ordered tar list: line ``i`` is the tar of ``shard_id == i``, as a
  path relative to the lake root, i.e. the shard's lake key, so a moved or copied lake keeps working;
  :func:`asr_distill.student.loader.nemo_tarred_filepaths` resolves them against a lake).
  NeMo's ``tarred_audio_filepaths`` takes that list (a YAML list; a brace pattern like
  ``shard-{000000..000003}.tar`` cannot name tars spread over buckets and partitions). The same files per
  duration bucket below ``<split>/<bucket>/`` feed NeMo's bucketing (a list of lists).
* **Lhotse**: per split ``cuts.jsonl.gz``, a :class:`lhotse.CutSet` JSONL: one ``MonoCut`` per sample with
  its ``Recording`` and one ``SupervisionSegment`` (text, language, speaker). The recording's
  ``AudioSource`` is of type ``command``: a shell command that prints the member's bytes (a byte-range
  read of the shard, its path resolved below ``$ASR_DISTILL_LAKE`` when the command runs), so
  ``CutSet.from_jsonl_lazy`` + ``cut.load_audio()`` read it with no glue code.
  The cut's ``start`` is 0 (the member is the sample); a segment's place in its long recording is in
  ``custom`` (``source_key``, ``segment_key``, ``segment_index``, ``source_offset_s``).
  Lhotse Shar does not fit: Shar tars pair each data member with a ``.json`` *Lhotse manifest* and must
  match the cuts file one to one in order, while our shards' ``.json`` members hold our metadata and keep
  the samples the manifests drop (``lhotse.shar.readers.tar.TarIterator`` fails on them).

Every text output is written with sorted keys and no timestamps (gzip ``mtime=0``): same inputs, same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import shlex
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from asr_distill import settings
from asr_distill.hashing import bytes_hex
from asr_distill.lake import ManifestLayout
from asr_distill.stages.manifests.config import SPLITS, ManifestConfig
from asr_distill.storage import Storage
from asr_distill.tableio import write_table

Row = dict[str, Any]


def _json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# Where the Lhotse command finds the lake when it runs: the pipeline's own lake variable and default.
LAKE_ROOT_SHELL = f'"${{{settings.LAKE.name}:-{settings.LAKE.default}}}"'


def tar_location(key: str) -> str:
    """How a manifest names a shard: its path relative to the lake root (the lake key itself).

    No absolute path and no URL: the lake can be moved or copied, and the manifest version (a hash of
    the inputs' content) names the same bytes wherever the lake lives.
    """
    return key


def lake_shell_path(key: str) -> str:
    """A shell word for the shard's path below ``$ASR_DISTILL_LAKE`` (resolved when the command runs)."""
    return f"{LAKE_ROOT_SHELL}/{shlex.quote(key)}"


def write_parquet(lake: Storage, key: str, table: pa.Table) -> dict[str, Any]:
    write_table(lake, key, table)
    return _file_info(lake, key)


def write_text(lake: Storage, key: str, text: str, *, gz: bool = False) -> dict[str, Any]:
    data = text.encode("utf-8")
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as fh:
            fh.write(data)
        data = buf.getvalue()
    lake.write_bytes(key, data)
    return {"key": key, "size": len(data), "blake3": bytes_hex(data)}


def _file_info(lake: Storage, key: str) -> dict[str, Any]:
    data = lake.read_bytes(key)
    return {"key": key, "size": len(data), "blake3": bytes_hex(data)}


# -- NeMo ---------------------------------------------------------------------------------------------
def nemo_entries(rows: Iterable[Row]) -> tuple[list[Row], list[str]]:
    """(JSONL entries, ordered shard keys): ``shard_id`` is the index of the row's tar in that list."""
    tars: dict[str, int] = {}
    entries = []
    for r in rows:
        sid = tars.setdefault(r["shard_key"], len(tars))
        entries.append(
            {
                "audio_filepath": r["audio_member"],
                "duration": r["duration_s"],
                "text": r["text"],
                "shard_id": sid,
                "lang": r["language"],
                "source_key": r["source_key"],
                "source_offset_s": r["offset_s"],
                "segment_index": r["segment_index"],
            }
        )
    return entries, list(tars)


def write_nemo(lake: Storage, layout: ManifestLayout, rows: list[Row]) -> list[dict[str, Any]]:
    """Per split (and per split and bucket): the tarred manifest and its ordered tar list."""
    files = []
    for split in SPLITS:
        split_rows = [r for r in rows if r["split"] == split]
        groups: list[tuple[str | None, list[Row]]] = [(None, split_rows)]
        for bucket in sorted({r["bucket"] for r in split_rows}):
            groups.append((bucket, [r for r in split_rows if r["bucket"] == bucket]))
        for bucket, group in groups:
            entries, tars = nemo_entries(group)
            files.append(
                write_text(
                    lake,
                    layout.nemo_manifest_key(split, bucket),
                    "".join(_json_line(e) + "\n" for e in entries),
                )
            )
            files.append(
                write_text(
                    lake,
                    layout.nemo_tars_key(split, bucket),
                    "".join(tar_location(k) + "\n" for k in tars),
                )
            )
    return files


# -- Lhotse -------------------------------------------------------------------------------------------
def lhotse_command(lake: Storage, cfg: ManifestConfig, row: Row) -> str:
    """The shell command that prints the row's audio member (see ``ManifestConfig.lhotse_command``)."""
    offset, size = int(row["audio_offset"]), int(row["audio_size"])
    return cfg.lhotse_command.format(
        path=lake_shell_path(row["shard_key"]),
        url=shlex.quote(lake.url(row["shard_key"])),
        key=shlex.quote(row["shard_key"]),
        offset=offset,
        size=size,
        end=offset + size - 1,
    )


def lhotse_cut(lake: Storage, cfg: ManifestConfig, row: Row) -> Row:
    """A ``MonoCut`` dict as ``MonoCut.to_dict()`` writes it (``lhotse.serialization.deserialize_item``)."""
    key, dur = row["sample_key"], row["duration_s"]
    supervision: Row = {
        "id": key,
        "recording_id": key,
        "start": 0.0,
        "duration": dur,
        "channel": 0,
        "text": row["text"],
        "language": row["language"],
    }
    if row.get("speaker"):
        supervision["speaker"] = row["speaker"]
    return {
        "id": key,
        "start": 0.0,
        "duration": dur,
        "channel": 0,
        "supervisions": [supervision],
        "recording": {
            "id": key,
            "sources": [{"type": "command", "channels": [0], "source": lhotse_command(lake, cfg, row)}],
            "sampling_rate": int(row["sample_rate"]),
            "num_samples": int(row["num_samples"]),
            "duration": dur,
            "channel_ids": [0],
        },
        "custom": {
            "split": row["split"],
            "partition": row["partition"],
            "shard_key": row["shard_key"],
            "bucket": row["bucket"],
            "source_key": row["source_key"],
            "segment_key": row["segment_key"],
            "segment_index": row["segment_index"],
            "source_offset_s": row["offset_s"],
            "teacher_fingerprint": row["teacher_fingerprint"],
        },
        "type": "MonoCut",
    }


def write_lhotse(
    lake: Storage, layout: ManifestLayout, rows: list[Row], cfg: ManifestConfig
) -> list[dict[str, Any]]:
    files = []
    for split in SPLITS:
        text = "".join(_json_line(lhotse_cut(lake, cfg, r)) + "\n" for r in rows if r["split"] == split)
        files.append(write_text(lake, layout.lhotse_cuts_key(split), text, gz=True))
    return files


def read_jsonl(lake: Storage, key: str) -> list[Row]:
    """Lines of a (possibly gzipped) JSONL object."""
    data = lake.read_bytes(key)
    if key.endswith(".gz"):
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
