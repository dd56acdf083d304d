"""Checks on a partition's labels (plain Python): coverage, flag rates, teacher error rate vs references.

Each function returns a list of problem rows (empty = pass) or plain numbers; the Dagster checks wrap them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jiwer
import pyarrow as pa

from asr_distill.language import CHAR_LANGUAGES, primary_language
from asr_distill.stages.labels.quality import QUALITY_FLAGS, normalize_cjk, normalize_text
from asr_distill.stages.labels.schema import ERROR_REASONS

# Flags that mean the teacher output is broken (hallucination, looping, nothing): a partition where
# many labels carry one of them points at a wrong teacher setting or bad audio, not at a few bad clips.
DEFAULT_MAX_FLAG_RATES: dict[str, float] = {
    "empty_text": 0.2,
    "high_compression": 0.2,
    "repeated_ngram": 0.2,
    "low_unique_words": 0.2,
    "long_word": 0.2,
    "truncated": 0.1,
    "all_caps": 0.2,
}
WER_TIERS = (0.0, 0.10, 0.25, 0.50, 0.75)  # NeMo Curator's tiers: 0-10 / 10-25 / 25-50 / 50-75 / 75+ %


def coverage_problems(index: pa.Table, labels: pa.Table) -> list[dict[str, Any]]:
    """Every shard sample has exactly one labels row (a label, or an error row with a known reason)."""
    expected = Counter(
        zip(index.column("shard_key").to_pylist(), index.column("sample_key").to_pylist(), strict=True)
    )
    got = Counter(
        zip(labels.column("shard_id").to_pylist(), labels.column("sample_key").to_pylist(), strict=True)
    )
    problems: list[dict[str, Any]] = []
    for shard, key in sorted(expected - got):
        problems.append({"shard": shard, "sample_key": key, "problem": "no labels row"})
    for (shard, key), n in sorted(got.items()):
        if (shard, key) not in expected:
            problems.append({"shard": shard, "sample_key": key, "problem": "not a sample of the shards"})
        elif n > 1:
            problems.append({"shard": shard, "sample_key": key, "problem": f"{n} labels rows"})
    d = labels.select(["shard_id", "sample_key", "status", "error_reason", "text"]).to_pydict()
    for shard, key, status, reason, text in zip(*d.values(), strict=True):
        if status == "error" and reason not in ERROR_REASONS:
            problems.append(
                {"shard": shard, "sample_key": key, "problem": f"error row, unknown reason {reason!r}"}
            )
        elif status == "ok" and text is None:
            problems.append({"shard": shard, "sample_key": key, "problem": "ok row without text"})
        elif status not in ("ok", "error"):
            problems.append({"shard": shard, "sample_key": key, "problem": f"status {status!r}"})
    return problems


@dataclass(frozen=True)
class LabelCounts:
    rows: int
    labelled: int
    errors: int
    flagged: int  # ok rows with at least one flag
    flags: dict[str, int]  # per flag, over ok rows
    error_reasons: dict[str, int]
    audio_s: float
    decode_s: float

    def flag_rate(self, flag: str) -> float:
        return self.flags.get(flag, 0) / self.labelled if self.labelled else 0.0

    @property
    def error_row_rate(self) -> float:
        return self.errors / self.rows if self.rows else 0.0


def count_labels(labels: pa.Table) -> LabelCounts:
    d = labels.select(["status", "error_reason", "flags", "audio_duration_s", "decode_time_s"]).to_pydict()
    flags: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    labelled = flagged = 0
    for status, reason, row_flags in zip(d["status"], d["error_reason"], d["flags"], strict=True):
        if status == "ok":
            labelled += 1
            flagged += bool(row_flags)
            flags.update(row_flags)
        else:
            reasons[reason or "unknown"] += 1
    return LabelCounts(
        rows=labels.num_rows,
        labelled=labelled,
        errors=labels.num_rows - labelled,
        flagged=flagged,
        flags=dict(flags),
        error_reasons=dict(reasons),
        audio_s=float(sum(x for x in d["audio_duration_s"] if x is not None)),
        decode_s=float(sum(x for x in d["decode_time_s"] if x is not None)),
    )


def flag_rate_problems(
    counts: LabelCounts, max_flag_rates: Mapping[str, float], max_error_row_rate: float
) -> list[dict[str, Any]]:
    """Flags (and error rows) whose rate is above its configured maximum."""
    unknown = sorted(set(max_flag_rates) - set(QUALITY_FLAGS))
    if unknown:
        raise ValueError(
            f"unknown quality flags in max_flag_rates: {unknown}; known: {sorted(QUALITY_FLAGS)}"
        )
    problems = []
    for flag, limit in sorted(max_flag_rates.items()):
        rate = counts.flag_rate(flag)
        if rate > limit:
            problems.append(
                {"flag": flag, "count": counts.flags.get(flag, 0), "rate": round(rate, 4), "max_rate": limit}
            )
    if counts.error_row_rate > max_error_row_rate:
        problems.append(
            {
                "flag": "error rows",
                "count": counts.errors,
                "rate": round(counts.error_row_rate, 4),
                "max_rate": max_error_row_rate,
            }
        )
    return problems


@dataclass(frozen=True)
class CorpusErrorRate:
    metric: str  # "wer" | "cer"
    rate: float  # total edits / total reference words (characters for cer)
    samples: int
    reference_units: int


def _scored_pairs(
    labels: pa.Table,
    references: Mapping[str, tuple[str, str | None]],
    cer_languages: frozenset[str],
) -> list[tuple[str, str, list[str], list[str]]]:
    """(language, metric, reference units, hypothesis units) per sample with a non-empty reference.

    The language is the clip's declared one (shard metadata, else the reference's), else the one the
    text was decoded in (identified). Units are words after Whisper's normalisation, or characters after
    :func:`~asr_distill.stages.labels.quality.normalize_cjk` for character languages; an error row
    counts as an empty hypothesis.
    """
    out = []
    d = labels.select(["sample_key", "status", "text", "language", "expected_language"]).to_pydict()
    for key, status, text, lang, expected in zip(*d.values(), strict=True):
        if key not in references:
            continue
        ref_text, ref_lang = references[key]
        language = primary_language(expected or ref_lang or lang) or "und"
        hyp_text = (text or "") if status == "ok" else ""
        if language in cer_languages:
            metric, ref, hyp = "cer", list(normalize_cjk(ref_text)), list(normalize_cjk(hyp_text))
        else:
            metric = "wer"
            ref = normalize_text(ref_text, language).split()
            hyp = normalize_text(hyp_text, language).split()
        if ref:
            out.append((language, metric, ref, hyp))
    return out


def _edits(ref: list[str], hyp: list[str]) -> int:
    if not hyp:
        return len(ref)
    m = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return m.substitutions + m.deletions + m.insertions


def corpus_error_rates(
    labels: pa.Table,
    references: Mapping[str, tuple[str, str | None]],
    cer_languages: frozenset[str] = CHAR_LANGUAGES,
) -> list[CorpusErrorRate]:
    """Corpus-level WER (CER for character languages) of the teacher against the references.

    ``references``: sample key -> (reference text, declared language or None). Normalisation first
    (:func:`_scored_pairs`); a sample whose reference normalises to nothing is left out; an error row
    counts as an empty hypothesis (every reference word deleted).
    """
    totals: dict[str, list[int]] = {}
    for _, metric, ref, hyp in _scored_pairs(labels, references, cer_languages):
        t = totals.setdefault(metric, [0, 0, 0])  # samples, units, edits
        t[0] += 1
        t[1] += len(ref)
        t[2] += _edits(ref, hyp)
    return [CorpusErrorRate(m, t[2] / t[1], t[0], t[1]) for m, t in sorted(totals.items(), reverse=True)]


@dataclass(frozen=True)
class LanguageStats:
    """One language of a partition's labels: what was declared, what identification said, error rate."""

    language: str  # declared, else identified, else the decoding language; "und" when none
    samples: int  # labels rows (error rows included)
    declared: int  # rows whose clip declared a language
    identified: int  # rows where the teacher's language identification ran
    agree: int  # declared and identified, the same language
    disagree: int  # declared and identified, another language (``language_mismatch``)
    mean_probability: float | None  # of the identified language
    metric: str | None  # "wer" | "cer" against references, when any
    error_rate: float | None
    samples_with_reference: int
    confusions: dict[str, int]  # identified language -> rows, where it differs from the declared one

    @property
    def agreement(self) -> float | None:
        both = self.agree + self.disagree
        return self.agree / both if both else None


def language_stats(
    labels: pa.Table,
    references: Mapping[str, tuple[str, str | None]],
    cer_languages: frozenset[str] = CHAR_LANGUAGES,
) -> list[LanguageStats]:
    """Per language: declared vs identified, agreement, mean identification probability, WER/CER."""
    cols = ["sample_key", "language", "expected_language", "detected_language", "language_probability"]
    d = labels.select(cols).to_pydict()
    acc: dict[str, dict[str, Any]] = {}
    for _key, lang, expected, detected, prob in zip(*d.values(), strict=True):
        declared, ident = primary_language(expected), primary_language(detected)
        name = declared or ident or primary_language(lang) or "und"
        a = acc.setdefault(
            name, {"samples": 0, "declared": 0, "identified": 0, "agree": 0, "disagree": 0, "probs": []}
        )
        a.setdefault("confusions", Counter())
        a["samples"] += 1
        a["declared"] += declared is not None
        if ident is not None:
            a["identified"] += 1
            if prob is not None:
                a["probs"].append(float(prob))
            if declared is not None:
                if ident == declared:
                    a["agree"] += 1
                else:
                    a["disagree"] += 1
                    a["confusions"][ident] += 1
    scored: dict[str, list[Any]] = {}
    for language, metric, ref, hyp in _scored_pairs(labels, references, cer_languages):
        t = scored.setdefault(language, [metric, 0, 0, 0])
        t[1] += 1
        t[2] += len(ref)
        t[3] += _edits(ref, hyp)
    out = []
    for name in sorted(set(acc) | set(scored)):
        a = acc.get(name) or {"samples": 0, "declared": 0, "identified": 0, "agree": 0, "disagree": 0}
        probs = a.get("probs") or []
        metric, n_ref, units, edits = scored.get(name, [None, 0, 0, 0])
        out.append(
            LanguageStats(
                language=name,
                samples=a["samples"],
                declared=a["declared"],
                identified=a["identified"],
                agree=a["agree"],
                disagree=a["disagree"],
                mean_probability=sum(probs) / len(probs) if probs else None,
                metric=metric,
                error_rate=edits / units if units else None,
                samples_with_reference=n_ref,
                confusions=dict(sorted((a.get("confusions") or Counter()).items())),
            )
        )
    return out


def wer_tiers(labels: pa.Table) -> dict[str, int]:
    """Per-sample error rates binned into NeMo Curator's tiers (samples with a reference only)."""
    edges = [*WER_TIERS, float("inf")]
    names = [
        f"{lo:.0%}–{hi:.0%}" if hi != float("inf") else f"≥ {lo:.0%}"
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    tiers = dict.fromkeys(names, 0)
    for rate in labels.column("error_rate").to_pylist():
        if rate is None:
            continue
        for name, lo, hi in zip(names, edges[:-1], edges[1:], strict=True):
            if lo <= rate < hi:
                tiers[name] += 1
                break
    return tiers


__all__ = [
    "DEFAULT_MAX_FLAG_RATES",
    "CorpusErrorRate",
    "LabelCounts",
    "LanguageStats",
    "corpus_error_rates",
    "count_labels",
    "coverage_problems",
    "flag_rate_problems",
    "language_stats",
    "wer_tiers",
]
