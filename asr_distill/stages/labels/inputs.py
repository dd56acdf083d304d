"""What the labelling core consumes: :class:`LabelInput` samples, yielded per shard by a reader.

A *shard reader* is any picklable callable ``reader(shard_id) -> Iterable[LabelInput]``; it runs inside
the Ray actor that labels the shard, so audio never travels through the driver.
:class:`WebDatasetShardReader` reads the project's WebDataset shards (``<key>.flac`` 16 kHz mono +
``<key>.json``) from any store URI.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_distill.teachers.base import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class LabelInput:
    """One sample to label. ``audio`` is float32 16 kHz mono; None when ``error`` says why."""

    key: str
    audio: np.ndarray | None
    reference_text: str | None = None
    expected_language: str | None = None
    error: str | None = None  # reader-side failure: a key of schema.INPUT_ERRORS
    error_detail: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.audio is None else len(self.audio) / SAMPLE_RATE


ShardReader = Callable[[str], Iterable[LabelInput]]

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "m4a")


def split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: ``dir/key.ext.more`` -> (``dir/key``, ``ext.more``) split at the first dot."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext.lower() if dot else "")


class WebDatasetShardReader:
    """Read one WebDataset tar from a store; ``shard_id`` is the tar's key in that store.

    Members are grouped by key in tar order (WebDataset semantics). Per sample: the first audio member
    (``flac``, ``wav``, ...) is decoded to 16 kHz mono float32 by the project's decoder; ``<key>.json``
    gives the reference text (``text_field``) and expected language (``language_field``), both optional.
    A sample whose audio cannot be decoded or has NaN/Inf samples still yields a :class:`LabelInput`
    with an error, so it gets its error row.
    """

    def __init__(
        self,
        storage_uri: str,
        *,
        text_field: str = "text",
        language_field: str = "language",
        audio_extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
        store: Any = None,
    ) -> None:
        """``store``: ship this opened store (settings and credentials included) to the actors instead
        of reopening ``storage_uri`` from their environment. Only for clusters on the same machine."""
        self.storage_uri = storage_uri
        self.text_field = text_field
        self.language_field = language_field
        self.audio_extensions = audio_extensions
        self._ship = store is not None
        self._store: Any = store

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not self._ship:
            state["_store"] = None  # reopened where it runs, from the worker's own environment
        return state

    def _storage(self) -> Any:
        if self._store is None:
            from asr_distill.storage import open_storage

            self._store = open_storage(self.storage_uri)
        return self._store

    def __call__(self, shard_id: str) -> Iterator[LabelInput]:
        with self._storage().open_read(shard_id) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            key: str | None = None
            members: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                mkey, ext = split_member(member.name)
                if key is not None and mkey != key:
                    yield self._sample(key, members)
                    members = {}
                key = mkey
                data = tar.extractfile(member)
                members[ext] = data.read() if data is not None else b""
            if key is not None:
                yield self._sample(key, members)

    def _sample(self, key: str, members: dict[str, bytes]) -> LabelInput:
        from asr_distill.audio import DecodeError, decode

        ref = lang = None
        if "json" in members:
            try:
                meta = json.loads(members["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                return LabelInput(key, None, error="bad_metadata", error_detail=str(exc)[:500])
            ref = _opt_str(meta.get(self.text_field))
            lang = _opt_str(meta.get(self.language_field))
        ext = next((e for e in self.audio_extensions if e in members), None)
        if ext is None:
            return LabelInput(
                key, None, ref, lang, error="missing_audio", error_detail=f"members: {sorted(members)}"
            )
        try:
            decoded = decode(members[ext], format_hint=ext)
        except DecodeError as exc:
            return LabelInput(key, None, ref, lang, error="decode_error", error_detail=str(exc)[:500])
        if decoded.non_finite_samples:
            # the decoder zeroes them; the teacher must never see such a clip
            return LabelInput(
                key,
                None,
                ref,
                lang,
                error="non_finite_audio",
                error_detail=f"{decoded.non_finite_samples} NaN/Inf samples",
            )
        return LabelInput(key, decoded.samples.astype(np.float32, copy=False), ref, lang)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None
