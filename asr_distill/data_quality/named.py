"""The named values a YAML check may reference as ``{{ name }}``, each read from where the code defines it.

A check file writes ``min_value: "{{ sample_rate_min }}"`` or
``expression: "list_has_all({{ quarantine_reasons }}, reasons)"``; the spec loader replaces each
placeholder by the value's SQL literal (a number, a quoted string, or a list ``['a', 'b']``), and a
value alone in a numeric argument stays a number. An unknown name is an error of the check file.
"""

from __future__ import annotations

from collections.abc import Mapping

from asr_distill.stages.clean.schema import REASONS
from asr_distill.stages.index.schema import CHANNELS, PROBE_ERRORS, SAMPLE_RATE_HZ, SIDECAR_ERRORS
from asr_distill.stages.segment.plan import SegmentConfig
from asr_distill.stages.segment.schema import SEGMENT_REASONS, STATUSES

NamedValue = int | float | str | tuple[str, ...]

CHECK_VALUES: Mapping[str, NamedValue] = {
    # audio_index: plausibility of a probed row's header (stages/index/schema.py)
    "sample_rate_min": SAMPLE_RATE_HZ.min,
    "sample_rate_max": SAMPLE_RATE_HZ.max,
    "channels_min": CHANNELS.min,
    "channels_max": CHANNELS.max,
    "probe_errors": tuple(PROBE_ERRORS),
    "sidecar_errors": tuple(SIDECAR_ERRORS),
    # clean: the quarantine reason codes, in funnel order (stages/clean/schema.py)
    "quarantine_reasons": tuple(REASONS),
    # segment: recording statuses and segment quarantine reasons (stages/segment/schema.py)
    "segment_statuses": tuple(STATUSES),
    "segment_reasons": tuple(SEGMENT_REASONS),
    "max_segment_samples": SegmentConfig.samples(SegmentConfig().max_segment_s),  # the teacher's window
}
