"""Synthetic English speech corpus with known text, for ``make demo`` and tests of every stage."""

from __future__ import annotations

from asr_distill.demo.corpus import (
    BROKEN_KINDS,
    BROKEN_PREFIX,
    FORMATS,
    MARKER_NAME,
    SIDECAR_OUTCOMES,
    SIZES,
    AudioFormat,
    CorpusEntry,
    CorpusReport,
    generate_corpus,
    prefix_names,
)

__all__ = [
    "BROKEN_KINDS",
    "BROKEN_PREFIX",
    "FORMATS",
    "MARKER_NAME",
    "SIDECAR_OUTCOMES",
    "SIZES",
    "AudioFormat",
    "CorpusEntry",
    "CorpusReport",
    "generate_corpus",
    "prefix_names",
]
