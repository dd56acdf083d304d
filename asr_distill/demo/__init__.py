"""Synthetic English speech corpus with known text, for ``make demo`` and tests of every stage."""

from __future__ import annotations

from asr_distill.demo.corpus import (
    BROKEN_KINDS,
    FORMATS,
    SIDECAR_OUTCOMES,
    CorpusReport,
    generate_corpus,
)

__all__ = [
    "BROKEN_KINDS",
    "FORMATS",
    "SIDECAR_OUTCOMES",
    "CorpusReport",
    "generate_corpus",
]
