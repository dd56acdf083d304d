"""Segmentation stage core (no Dagster): cut long recordings into <= 30 s speech segments.

* :mod:`.plan`: the pure planner (probabilities -> segments, exact sample accounting);
  the VAD itself lives in :mod:`asr_distill.audio.vad`.
* :mod:`.core`: :func:`~.core.run_segment`, the stage's entry point, and :class:`~.core.SegmentSummary`.
* :mod:`.recording`: the work on one recording (runs in the process pool's workers).
* :mod:`.config`: :class:`~.config.SegmentStageConfig` and the segmentation fingerprint.
* :mod:`.layout`: names inside the outputs (segment keys, recording names, member names); every
  lake key is :mod:`asr_distill.lake`'s.
* :mod:`.schema`, :mod:`.tables`: the two tables' columns and their I/O.
* progress events are :mod:`asr_distill.stages.progress`'s; :mod:`.verify`: the blocking checks.
"""

from asr_distill.stages.segment.config import SegmentStageConfig
from asr_distill.stages.segment.core import SegmentSummary, read_long_form_rows, run_segment

__all__ = ["SegmentStageConfig", "SegmentSummary", "read_long_form_rows", "run_segment"]
