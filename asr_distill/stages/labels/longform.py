"""The teacher against whole-recording transcripts: labels of a recording's segments, joined, vs its reference.

A long recording is cut into segments (the ``segmented_audio`` stage) and each kept segment is a shard
sample with its own label. When the recording's transcript sidecar covers the whole recording, no
segment has an aligned reference (they are flagged ``no_aligned_reference``), so per-sample WER is
impossible; the reference stays on the recording's row of ``segmented_audio/<p>/recordings.parquet``.
:func:`longform_error_rates` joins the labels of a recording's kept segments in segment order
(``segment_index``), concatenates their texts and scores them against that reference: WER, or CER for
character-counted languages (:data:`asr_distill.language.CHAR_LANGUAGES`), after the same normalisation
as per-sample scoring (:func:`~asr_distill.stages.labels.quality.error_rate`).

Quarantined segments have no label, so their speech counts as deleted words: the rate measures what
the training data of the recording holds, not the teacher alone. An error row (no label) counts as an
empty text. Recordings with a reference but no labelled segment (decode failed, every segment
quarantined) are counted, not scored. Pure functions over tables, plus :func:`partition_longform_rates`,
which reads them from the lake (and reads nothing more when the partition has no segmented recording).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from asr_distill import lake as layout
from asr_distill.language import CHAR_LANGUAGES, primary_language
from asr_distill.stages.labels.quality import error_rate, normalize_text
from asr_distill.storage import Storage
from asr_distill.tableio import read_table


@dataclass(frozen=True)
class RecordingErrorRate:
    """One recording with a whole-recording reference, scored on its segments' joined labels."""

    source_key: str
    segments: int  # kept segments with a labels row, joined in segment order
    error_segments: int  # of those, labels error rows (no text)
    kept_s: float  # audio seconds of those segments
    words: int  # reference units after normalisation: words, or characters for cer
    metric: str  # "wer" | "cer"
    rate: float | None  # None when the reference normalises to nothing


@dataclass(frozen=True)
class LongformErrorRates:
    """Per-recording rates and the corpus rate per metric (total edits / total reference units)."""

    recordings: list[RecordingErrorRate]
    corpus: dict[str, float]  # metric -> rate, over recordings with a rate
    unscored: int  # recordings with a reference but no labelled segment

    @property
    def empty(self) -> bool:
        return not self.recordings and not self.unscored


def _units(reference: str, language: str | None, metric: str) -> int:
    ref = normalize_text(reference, language)
    return len(ref.replace(" ", "")) if metric == "cer" else len(ref.split())


def longform_error_rates(
    labels: pa.Table,
    index: pa.Table,
    recordings: pa.Table,
    cer_languages: frozenset[str] = CHAR_LANGUAGES,
) -> LongformErrorRates:
    """Score each recording's reference against the concatenated labels of its kept segments.

    ``labels``: labels rows (``sample_key``, ``status``, ``text``, ``language``, ``expected_language``);
    ``index``: the shards' sample index (``sample_key``, ``source_key``, ``segment_key``,
    ``segment_index``, ``duration_s``); ``recordings``: ``source_key``, ``reference_text``, ``language``.
    Only recordings with a non-blank reference are reported, sorted by ``source_key``.
    """
    refs = {
        key: (text, lang)
        for key, text, lang in zip(
            *recordings.select(["source_key", "reference_text", "language"]).to_pydict().values(), strict=True
        )
        if text is not None and text.strip()
    }
    if not refs:
        return LongformErrorRates([], {}, 0)
    lab = labels.select(["sample_key", "status", "text", "language", "expected_language"]).to_pydict()
    by_sample = {
        k: (status, text, lang or expected)
        for k, status, text, lang, expected in zip(*lab.values(), strict=True)
    }
    idx = index.select(["sample_key", "source_key", "segment_key", "segment_index", "duration_s"]).to_pydict()
    # recording -> [(segment_index, text or None for an error row, duration, teacher language)]
    parts: dict[str, list[tuple[int, str | None, float, str | None]]] = defaultdict(list)
    for sample, source, segment, seg_index, duration in zip(*idx.values(), strict=True):
        if segment is None or source not in refs or sample not in by_sample:
            continue
        status, text, lang = by_sample[sample]
        parts[source].append(
            (int(seg_index), (text or "") if status == "ok" else None, float(duration), lang)
        )
    rows: list[RecordingErrorRate] = []
    edits: dict[str, float] = defaultdict(float)
    units: dict[str, int] = defaultdict(int)
    for source in sorted(refs):
        segs = sorted(parts.get(source, []), key=lambda p: p[0])
        if not segs:
            continue
        reference, ref_lang = refs[source]
        language = primary_language(ref_lang) or next((primary_language(p[3]) for p in segs if p[3]), None)
        hypothesis = " ".join(t.strip() for _, t, _, _ in segs if t and t.strip())
        rate, metric = error_rate(hypothesis, reference, language, cer_languages)
        n = _units(reference, language, metric)
        if rate is not None and n:
            edits[metric] += rate * n
            units[metric] += n
        rows.append(
            RecordingErrorRate(
                source_key=source,
                segments=len(segs),
                error_segments=sum(1 for p in segs if p[1] is None),
                kept_s=sum(p[2] for p in segs),
                words=n,
                metric=metric,
                rate=rate,
            )
        )
    corpus = {m: edits[m] / units[m] for m in sorted(units) if units[m]}
    return LongformErrorRates(rows, corpus, unscored=len(refs) - len(rows))


def partition_longform_rates(
    lake: Storage,
    partition: str,
    labels_keys: Iterable[str],
    cer_languages: frozenset[str] = CHAR_LANGUAGES,
) -> LongformErrorRates | None:
    """:func:`longform_error_rates` of a partition from the lake; None (nothing read but one small
    table, at most) when it has no segmented recording with a reference."""
    key = layout.segmented_recordings_key(partition)
    if not lake.exists(key):
        return None
    recordings = read_table(lake, key, columns=["source_key", "reference_text", "language"])
    texts = recordings.column("reference_text").to_pylist()
    if not any(t is not None and t.strip() for t in texts):
        return None
    index = read_table(
        lake,
        layout.shard_layout(partition).index_key,
        columns=["sample_key", "source_key", "segment_key", "segment_index", "duration_s"],
    )
    cols = ["sample_key", "status", "text", "language", "expected_language"]
    tables = [read_table(lake, k, columns=cols) for k in labels_keys]
    labels = pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.string()) for c in cols})
    return longform_error_rates(labels, index, recordings, cer_languages)


__all__ = [
    "LongformErrorRates",
    "RecordingErrorRate",
    "longform_error_rates",
    "partition_longform_rates",
]
