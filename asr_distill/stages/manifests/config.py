"""Settings of the training-manifests stage: label-quality drop rules, duration bounds and splits.

Drop rules, applied in this order; a sample is counted under the first rule that drops it
(:data:`DROP_RULES`):

====================  ===================================================================================
rule                  a sample is dropped when ...
====================  ===================================================================================
no_label              it is in a shard but the partition's current labels have no row for it
not_in_shards         a label row names a sample that no shard of the partition holds (stale labels)
duplicate_label       the labels hold several rows for it (every one of them is dropped)
no_clean_row          its source key has no row in the clean stage's kept table (no speaker, language)
fingerprint_mismatch  the label row was written by another teacher than the partition's current.json names
label_error           the label row is an error row (``status = "error"``, ``error_reason`` says why)
too_short / too_long  its duration is <= 0, below ``min_duration_s`` or above ``max_duration_s``
high_wer              a reference exists and the teacher's WER (CER for zh/ja/ko/yue) >= ``max_error_rate``
flag:<code>           no usable reference and the label carries a flag of ``drop_flags`` (first in the
                      order of ``QUALITY_FLAGS``)
empty_text            the kept text is empty (``drop_empty_text``)
====================  ===================================================================================

Defaults follow distil-whisper (``run_distillation.py`` keeps pseudo-labels whose normalised WER against
the reference is below ``--wer_threshold``, 10 % in its recipes): where a reference scores the label, the
WER alone decides (the quality flags do not, unless ``flags_with_reference``). Without a reference the
flags decide; :data:`DEFAULT_DROP_FLAGS` are the flags that mean the text is wrong, not merely unsure:

* ``empty_text``: nothing to learn from;
* ``high_compression``, ``low_unique_words``, ``repeated_ngram``: looping / repetitive output, Whisper's
  best-known hallucination (openai/whisper treats a gzip ratio > 2.4 as a failed decode);
* ``chars_per_second_high``: more text than the audio can hold (hallucinated text);
* ``chars_per_second_low``: far too little text for the audio (missed speech; the student would learn
  to drop words);
* ``no_speech``: Whisper's own silence rule (no-speech probability high and log-probability low);
* ``truncated``: decoding stopped at the token limit (the text is cut);
* ``language_mismatch``: the text is in another language than the one expected.

Not dropped by default, because they mark doubt rather than a wrong text: ``low_avg_logprob`` (small
teachers fall below -1.0 on much correct speech), ``low_language_prob``, ``all_caps`` (a style issue a
text normaliser fixes), ``long_word`` (long compounds and URLs are real words), ``high_wer`` (only set
with a reference, where ``max_error_rate`` decides anyway).

Splits: each sample gets ``u = sha256(split_salt, group) / 2**256`` in [0, 1): ``test`` when
``u < test_fraction``, ``dev`` when ``u < test_fraction + dev_fraction``, else ``train``. The group is the
speaker when known (so splits are speaker-disjoint), else the sample's source key. A segment of a long
recording has the recording as its source key and the recording's speaker, so every segment of one
recording lands in the same split. A sample's split never depends on the other samples: adding data later
moves nothing that was already assigned.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from asr_distill.stages.configbase import StageConfig
from asr_distill.stages.labels.quality import QUALITY_FLAGS

# Bumped whenever the bytes this stage writes change for the same inputs and settings.
# 2: segment provenance (segment_key, segment_index, offset_s) in every format; shard paths relative to
#    the lake root (a copied lake keeps working).
# 3: whole-file checksums of inputs and written files are BLAKE3 (``blake3`` / ``*_blake3`` keys).
FORMAT_VERSION = "3"

SPLITS = ("train", "dev", "test")

DEFAULT_DROP_FLAGS = (
    "empty_text",
    "high_compression",
    "low_unique_words",
    "repeated_ngram",
    "chars_per_second_low",
    "chars_per_second_high",
    "no_speech",
    "truncated",
    "language_mismatch",
)

DROP_RULES: dict[str, str] = {
    "no_label": "in a shard, but the current labels have no row for it",
    "not_in_shards": "a label row for a sample no shard of the partition holds",
    "duplicate_label": "several label rows for one sample",
    "no_clean_row": "its source key is not in the clean stage's kept table",
    "fingerprint_mismatch": "label written by another teacher than current.json names",
    "label_error": "the label is an error row (the teacher or the reader failed)",
    "too_short": "duration <= 0 or below min_duration_s",
    "too_long": "duration above max_duration_s",
    "high_wer": "reference exists and teacher WER (CER for zh/ja/ko/yue) >= max_error_rate",
    **{
        f"flag:{code}": f"no usable reference and flagged {code}: {text}"
        for code, text in QUALITY_FLAGS.items()
    },
    "empty_text": "the label text is empty",
}


def drop_rule_order() -> list[str]:
    return list(DROP_RULES)


@dataclass(frozen=True)
class ManifestConfig(StageConfig):
    """What the manifests keep and how they split it (see the module docstring for every rule)."""

    max_error_rate: float = 0.10
    drop_flags: tuple[str, ...] = DEFAULT_DROP_FLAGS
    flags_with_reference: bool = False
    drop_empty_text: bool = True
    min_duration_s: float = 0.0
    max_duration_s: float = 30.0
    dev_fraction: float = 0.05
    test_fraction: float = 0.05
    split_salt: str = "asr_distill-splits-v1"
    speaker_scope: Literal["global", "partition"] = "global"
    # Lhotse recordings read their bytes from the shard with this shell command (AudioSource type
    # "command"). Placeholders: {path} (the tar's path below the lake root, resolved when the command
    # runs: ``"${ASR_DISTILL_LAKE:-data/lake}"/<key>``, so a moved or copied lake only needs that
    # variable), {url} (the tar's URL when the manifest was written), {key} (its lake key, shell-quoted),
    # {offset}, {size}, {end} (offset + size - 1).
    lhotse_command: str = (
        "dd if={path} iflag=skip_bytes,count_bytes skip={offset} count={size} bs=1M status=none"
    )
    # Blocking check: the tar header of at most this many rows is read back (all rows are checked
    # against index.parquet); 0 = every row.
    max_header_reads: int = 20_000

    _COERCE: ClassVar[dict[str, Any]] = {"drop_flags": tuple}

    def __post_init__(self) -> None:
        if isinstance(self.drop_flags, str):
            raise ValueError("drop_flags must be a list of flag codes, not a string")
        unknown = set(self.drop_flags) - set(QUALITY_FLAGS)
        if unknown:
            raise ValueError(f"unknown drop_flags {sorted(unknown)}; known: {', '.join(QUALITY_FLAGS)}")
        order = list(QUALITY_FLAGS)
        object.__setattr__(self, "drop_flags", tuple(sorted(set(self.drop_flags), key=order.index)))
        if not (0.0 < self.max_error_rate <= 10.0) or not math.isfinite(self.max_error_rate):
            raise ValueError("max_error_rate must be in (0, 10]")
        if not (math.isfinite(self.min_duration_s) and math.isfinite(self.max_duration_s)):
            raise ValueError("duration bounds must be finite")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            raise ValueError("need 0 <= min_duration_s < max_duration_s")
        for name in ("dev_fraction", "test_fraction"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise ValueError(f"{name} must be in [0, 1)")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("dev_fraction + test_fraction must leave something for train")
        if self.speaker_scope not in ("global", "partition"):
            raise ValueError("speaker_scope must be 'global' or 'partition'")
        if "{path}" not in self.lhotse_command and "{url}" not in self.lhotse_command:
            raise ValueError("lhotse_command must contain {path} or {url}")
        if self.max_header_reads < 0:
            raise ValueError("max_header_reads must be >= 0")

    def fingerprint_payload(self) -> dict[str, Any]:
        """The settings and :data:`FORMAT_VERSION` (the check budget aside)."""
        d = self.to_dict()
        d.pop("max_header_reads")
        d["format_version"] = FORMAT_VERSION
        return d

    def split_of(self, group: str) -> str:
        """The split of a split group (``spk:<speaker>`` or ``src:<source key>``)."""
        digest = hashlib.sha256(f"{self.split_salt}\x00{group}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.dev_fraction:
            return "dev"
        return "train"
