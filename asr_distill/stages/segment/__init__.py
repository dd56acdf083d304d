"""Segmentation stage core (no Dagster): cut long recordings into <= 30 s speech segments.

* :mod:`.plan`: the pure planner (probabilities -> segments, exact sample accounting);
  the VAD itself lives in :mod:`asr_distill.audio.vad`.
* :mod:`.core`: :func:`~.core.run_segment`, the stage's entry point, and :class:`~.core.SegmentSummary`.
* :mod:`.recording`: the work on one recording (runs in the process pool's workers).
* :mod:`.config`: :class:`~.config.SegmentStageConfig` and the segmentation fingerprint.
* :mod:`.layout`: every lake key and name (segment keys, tar keys, member names).
* :mod:`.schema`, :mod:`.tables`: the two tables' columns and their I/O.
* :mod:`.progress`: progress events; :mod:`.verify`: the blocking checks.
"""
