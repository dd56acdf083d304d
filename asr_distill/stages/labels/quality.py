"""Quality signals for teacher labels: flags with reasons, never a drop.

Each flag is a short code (:data:`QUALITY_FLAGS`); a label may carry several. Downstream manifests
decide what to keep (the distil-whisper recipe keeps WER < 10 % against a reference). Defaults come
from public recipes:

=====================  =========================================  ==========================================
flag                   rule (default)                             source
=====================  =========================================  ==========================================
empty_text             no text after stripping                    Granary, distil-whisper
high_compression       gzip ratio > 2.4                           openai/whisper ``transcribe.py``
low_unique_words       unique/total words <= 0.4 (>= 10 words)    NeMo Curator / SDP hallucination checks
repeated_ngram         a word 5-gram occurs >= 3 times            SDP hallucination checks
long_word              a "word" of >= 25 characters               SDP hallucination checks
chars_per_second_low   < 1.0 characters per second of audio       NeMo SDP configs
chars_per_second_high  > 21.0 characters per second               NeMo SDP configs (> 40 = hallucination)
low_avg_logprob        average log-probability < -1.0             openai/whisper
no_speech              no-speech probability > 0.6 and logprob    openai/whisper's silence rule
                       < -1.0
truncated              decoding hit the token limit               (a looping decoder)
all_caps               >= 10 letters, all upper case              Granary (a large-v3 failure mode)
language_mismatch      teacher language != expected language      Granary, Emilia
low_language_prob      detected language probability < 0.7        Granary (Emilia, Data-Juicer use 0.8)
high_wer               WER (CER for zh/ja/ko/yue) > 0.10          distil-whisper ``run_distillation.py``
=====================  =========================================  ==========================================

WER is computed after Whisper's normalisation of both sides (``EnglishTextNormalizer`` for English,
which also maps spelled numbers to digits, so "fifty" vs "50" is no error; ``BasicTextNormalizer``
otherwise), with jiwer. Character languages (``cer_languages``: zh, yue, ja, ko, ...) are scored by CER
after :func:`normalize_cjk` on both sides:

1. NFKC: full-width Latin letters and digits become half-width (``ＡＢ１２`` -> ``ab12``), half-width
   katakana become full-width (``ｶﾀｶﾅ`` -> ``カタカナ``); then case-folded;
2. punctuation, symbols and marks (Unicode categories P*, S*, M*: ``。、「」・！？～`` and their ASCII
   forms) and all whitespace are removed;
3. CJK numerals become Arabic digits (:func:`cjk_numerals_to_digits`), because Whisper writes ``10時``
   where a reference says ``十時``: a run of numeral characters is read as one number, positional
   (``二〇二六`` -> ``2026``) or with units (``十`` 10, ``百`` 100, ``千`` 1000, ``万``/``萬`` 10^4,
   ``億`` 10^8: ``二十五`` -> ``25``, ``一万二千`` -> ``12000``). Both sides get the same rule, so a numeral
   inside a word (``一緒`` -> ``1緒``) changes both alike and costs nothing.

Tested on Japanese speech (Kokoro) end to end; Chinese, Cantonese and Korean only on text (no TTS voice
available offline is intelligible to Whisper).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import jiwer

from asr_distill.language import CHAR_LANGUAGES, primary_language
from asr_distill.stages.configbase import StageConfig
from asr_distill.teachers.base import compression_ratio

QUALITY_FLAGS: dict[str, str] = {
    "empty_text": "the teacher produced no text",
    "high_compression": "gzip compression ratio above the limit (repetitive output)",
    "low_unique_words": "too few distinct words (repetitive output)",
    "repeated_ngram": "a word n-gram repeats too often (looping output)",
    "long_word": "a 'word' is implausibly long",
    "chars_per_second_low": "too few characters for the audio duration (missed speech)",
    "chars_per_second_high": "too many characters for the audio duration (hallucination)",
    "low_avg_logprob": "average token log-probability below the limit (low confidence)",
    "no_speech": "the teacher thinks there is no speech and is not confident in its text",
    "truncated": "decoding stopped at the token limit",
    "all_caps": "the text is entirely upper case",
    "language_mismatch": "the teacher's language differs from the expected language",
    "low_language_prob": "the detected language has a low probability",
    "high_wer": "error rate against the reference text above the limit",
}
_FLAG_ORDER = {f: i for i, f in enumerate(QUALITY_FLAGS)}


@dataclass(frozen=True)
class QualityConfig(StageConfig):
    """Thresholds of the quality flags (see the module docstring for the sources)."""

    max_compression_ratio: float = 2.4
    max_unique_word_ratio: float = 0.4  # flag when unique/total <= this ...
    unique_ratio_min_words: int = 10  # ... over at least this many words
    ngram_size: int = 5
    max_ngram_count: int = 2  # flag when one n-gram occurs more often than this
    long_word_chars: int = 25
    min_chars_per_second: float = 1.0
    max_chars_per_second: float = 21.0
    min_avg_logprob: float = -1.0
    no_speech_prob: float = 0.6
    all_caps_min_letters: int = 10
    min_language_probability: float = 0.7
    max_error_rate: float = 0.10
    cer_languages: frozenset[str] = field(default_factory=lambda: CHAR_LANGUAGES)

    _COERCE: ClassVar[dict[str, Any]] = {"cer_languages": frozenset}


@dataclass(frozen=True, slots=True)
class QualityResult:
    flags: tuple[str, ...]
    error_rate: float | None = None  # WER or CER against the reference, when one exists
    error_metric: str | None = None  # "wer" | "cer"
    chars_per_second: float | None = None


@lru_cache(maxsize=2)
def _normalizer(english: bool) -> Any:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_text(text: str, language: str | None) -> str:
    """Whisper-style normalisation used before scoring (English rules only for English)."""
    out = _normalizer(primary_language(language) in (None, "en"))(text)
    return re.sub(r"\s+", " ", out).strip()


_CJK_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6}
_CJK_DIGITS.update({"七": 7, "八": 8, "九": 9})
_CJK_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_CJK_LARGE_UNITS = {"万": 10**4, "萬": 10**4, "億": 10**8, "亿": 10**8}
_CJK_NUMERAL_RUN = re.compile("[" + "".join([*_CJK_DIGITS, *_CJK_SMALL_UNITS, *_CJK_LARGE_UNITS]) + "]+")


def _cjk_number(run: str) -> str:
    """One run of CJK numeral characters as Arabic digits (see :func:`cjk_numerals_to_digits`)."""
    if all(c in _CJK_DIGITS for c in run):  # positional: 二〇二六 -> 2026
        return "".join(str(_CJK_DIGITS[c]) for c in run)
    total = section = digit = 0
    for c in run:
        if c in _CJK_DIGITS:
            digit = _CJK_DIGITS[c]
        elif c in _CJK_SMALL_UNITS:
            section += (digit or 1) * _CJK_SMALL_UNITS[c]
            digit = 0
        else:
            total += (section + digit or 1) * _CJK_LARGE_UNITS[c]
            section = digit = 0
    return str(total + section + digit)


def cjk_numerals_to_digits(text: str) -> str:
    """Runs of CJK numerals as Arabic digits: ``十時`` -> ``10時``, ``二十五`` -> ``25``, ``三千`` -> ``3000``,
    ``一万二千`` -> ``12000``, ``二〇二六年`` -> ``2026年``. Simple numbers only: no fractions, no ordinals
    beyond what the characters say, no readings (``一人`` -> ``1人`` either way)."""
    return _CJK_NUMERAL_RUN.sub(lambda m: _cjk_number(m.group(0)), text)


def normalize_cjk(text: str) -> str:
    """Scoring form of a character-language text (module docstring): NFKC, case-folded, no punctuation,
    symbols, marks or whitespace, CJK numerals as digits."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(c for c in folded if not c.isspace() and unicodedata.category(c)[0] not in "PSMZC")
    return cjk_numerals_to_digits(kept)


def error_rate(
    hypothesis: str, reference: str, language: str | None, cer_languages: frozenset[str] = CHAR_LANGUAGES
) -> tuple[float | None, str]:
    """(WER or CER after normalisation, metric); None when the reference normalises to nothing."""
    lang = primary_language(language)
    metric = "cer" if lang in cer_languages else "wer"
    if metric == "cer":
        ref, hyp = normalize_cjk(reference), normalize_cjk(hypothesis)
    else:
        ref, hyp = normalize_text(reference, lang), normalize_text(hypothesis, lang)
    if not ref:
        return (0.0 if not hyp else None), metric
    if not hyp:
        return 1.0, metric
    return (float(jiwer.cer(ref, hyp)) if metric == "cer" else float(jiwer.wer(ref, hyp))), metric


_WORD = re.compile(r"\S+")


def text_flags(text: str, cfg: QualityConfig) -> list[str]:
    """Flags that depend on the text alone."""
    if not text.strip():
        return ["empty_text"]
    flags = []
    if compression_ratio(text) > cfg.max_compression_ratio:
        flags.append("high_compression")
    words = [w.strip(".,!?;:\"'()[]").lower() for w in _WORD.findall(text)]
    words = [w for w in words if w]
    if len(words) >= cfg.unique_ratio_min_words and len(set(words)) / len(words) <= cfg.max_unique_word_ratio:
        flags.append("low_unique_words")
    n = cfg.ngram_size
    if len(words) >= n:
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if max(grams.values()) > cfg.max_ngram_count:
            flags.append("repeated_ngram")
    if any(len(w) >= cfg.long_word_chars for w in _WORD.findall(text)):
        flags.append("long_word")
    letters = [c for c in text if c.isalpha()]
    if (
        len(letters) >= cfg.all_caps_min_letters
        and all(c.isupper() for c in letters if c.isupper() or c.islower())
        and any(c.isupper() for c in letters)
    ):
        flags.append("all_caps")
    return flags


def chars_per_second(text: str, duration_s: float, language: str | None, cfg: QualityConfig) -> float | None:
    """Characters per second of audio (whitespace runs count as one; none for character languages)."""
    if duration_s <= 0:
        return None
    body = re.sub(r"\s+", " ", text.strip())
    if primary_language(language) in cfg.cer_languages:
        body = body.replace(" ", "")
    return len(body) / duration_s


def assess(
    text: str,
    *,
    duration_s: float,
    cfg: QualityConfig,
    avg_logprob: float | None = None,
    no_speech_prob: float | None = None,
    truncated: bool = False,
    language: str | None = None,
    language_probability: float | None = None,
    language_detected: bool = False,
    expected_language: str | None = None,
    reference_text: str | None = None,
) -> QualityResult:
    """All flags for one label (``language``: the teacher's, detected or forced)."""
    flags = text_flags(text, cfg)
    lang = primary_language(expected_language) or primary_language(language)
    cps = chars_per_second(text, duration_s, lang, cfg)
    if cps is not None and "empty_text" not in flags:
        if cps < cfg.min_chars_per_second:
            flags.append("chars_per_second_low")
        elif cps > cfg.max_chars_per_second:
            flags.append("chars_per_second_high")
    if avg_logprob is not None and avg_logprob < cfg.min_avg_logprob:
        flags.append("low_avg_logprob")
        if no_speech_prob is not None and no_speech_prob > cfg.no_speech_prob:
            flags.append("no_speech")
    if truncated:
        flags.append("truncated")
    got, want = primary_language(language), primary_language(expected_language)
    if got and want and got != want:
        flags.append("language_mismatch")
    if (
        language_detected
        and language_probability is not None
        and language_probability < cfg.min_language_probability
    ):
        flags.append("low_language_prob")
    rate, metric = None, None
    if reference_text is not None and reference_text.strip():
        rate, metric = error_rate(text, reference_text, lang, cfg.cer_languages)
        if rate is not None and rate > cfg.max_error_rate:
            flags.append("high_wer")
    ordered = tuple(sorted(set(flags), key=_FLAG_ORDER.__getitem__))
    return QualityResult(flags=ordered, error_rate=rate, error_metric=metric, chars_per_second=cps)
