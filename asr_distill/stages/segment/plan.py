"""Plan the speech segments of a long recording from its per-frame VAD probabilities (pure, deterministic).

Input: one speech probability per 512-sample frame of the 16 kHz signal (32 ms; frame ``i`` covers
samples ``[512 i, min(512 (i + 1), n_samples))``, see :mod:`asr_distill.audio.vad`) and the recording's
length in samples. The audio itself is not needed. Everything is computed in integer samples, so the
accounting identity is exact.

Steps (defaults in :class:`SegmentConfig`):

1. **Hysteresis**: a speech region starts at a frame with probability ``>= threshold`` and lasts while
   the probability stays ``>= off_threshold``.
2. Regions separated by less than ``min_silence_s`` are joined (the gap becomes a *pause* inside the
   region); joined regions shorter than ``min_speech_s`` are dropped (non-speech).
3. **Budget split**: a region longer than ``max_segment_s - 2 * pad_s`` is cut into pieces. The window
   is the budget from the current piece's start; the cut is the longest pause whose start lies in the
   second half of the window (ties: the latest); the pause itself becomes a gap between the two
   pieces. With no pause there, the cut is at the start of the lowest-probability frame of that half
   (ties: the earliest) and both pieces are flagged ``forced_cut``.
4. **Packing**: consecutive pieces are joined into one segment while the gap to the next piece is
   ``<= pack_gap_s`` and the span plus the padding on both sides fits ``max_segment_s``.
5. **Padding**: each segment is widened by ``pad_s`` on both sides, never past the middle of the gap to
   its neighbour (a padded segment never overlaps another) nor past the recording's ends. Padded
   segments are therefore at most ``max_segment_s`` long.
6. Segments whose padded length is below ``min_segment_s`` are quarantined with reason ``too_short``.

Every sample of the recording is then in exactly one of: a kept segment (padded bounds), a
quarantined segment (padded bounds), or non-speech; :func:`account` checks that identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512  # one VAD probability per 32 ms (asr_distill.audio.vad.FRAME_SAMPLES)

SEGMENT_REASONS = {
    "too_short": "the padded segment is shorter than min_segment_s",
}


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Segmentation settings (seconds are converted to samples at 16 kHz, rounded to the nearest sample).

    * ``threshold=0.5``: Silero's own default for speech onset.
    * ``off_threshold=0.35``: hysteresis; speech continues while the probability stays above it
      (``threshold - 0.15``, Silero's default).
    * ``min_silence_s=0.2``: shorter gaps (pauses between words) do not end a region.
    * ``min_speech_s=0.25``: shorter regions (clicks, breaths) are not speech.
    * ``max_segment_s=30.0``: the teacher's window (Whisper pads every input to 30 s), padding included.
    * ``pad_s=0.2``: context kept on both sides of the speech; never crosses the middle of a gap.
    * ``pack_gap_s=1.0``: consecutive pieces are packed into one segment across gaps up to this long
      (packing saves teacher time and keeps context; longer gaps may hold music or noise).
    * ``min_segment_s=1.0``: padded segments shorter than this are quarantined (``too_short``).
    """

    threshold: float = 0.5
    off_threshold: float = 0.35
    min_silence_s: float = 0.2
    min_speech_s: float = 0.25
    max_segment_s: float = 30.0
    pad_s: float = 0.2
    pack_gap_s: float = 1.0
    min_segment_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.off_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < off_threshold <= threshold < 1")
        for name in ("min_silence_s", "min_speech_s", "pad_s", "pack_gap_s", "min_segment_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        budget = self.samples(self.max_segment_s) - 2 * self.samples(self.pad_s)
        if budget < 4 * FRAME_SAMPLES:
            raise ValueError("max_segment_s must exceed 2 * pad_s by at least 4 VAD frames (128 ms)")
        if self.min_segment_s > self.max_segment_s:
            raise ValueError("need min_segment_s <= max_segment_s")

    @staticmethod
    def samples(seconds: float) -> int:
        return int(round(seconds * SAMPLE_RATE))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A stable hash of the settings (part of the segmentation fingerprint)."""
        doc = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PlannedSegment:
    """One planned segment. Sample bounds are half-open ``[start, end)`` at 16 kHz.

    ``start``/``end``: the speech span (first piece's start, last piece's end); ``pad_start``/``pad_end``:
    the padded bounds, i.e. the audio a segment member holds. ``speech_samples``: samples of its pieces
    (the span minus the packed gaps). ``pieces``: how many pieces were packed. ``split``: it touches a
    cut at a pause of a region longer than the budget; ``forced_cut``: it touches a cut made where that
    region had no pause. ``kept`` is False for quarantined segments, with ``reason`` a key of
    :data:`SEGMENT_REASONS`.
    """

    index: int
    start: int
    end: int
    pad_start: int
    pad_end: int
    speech_samples: int
    pieces: int
    split: bool
    forced_cut: bool
    kept: bool
    reason: str | None

    @property
    def samples(self) -> int:
        """Length of the padded segment in samples."""
        return self.pad_end - self.pad_start

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def offset_s(self) -> float:
        return self.pad_start / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int  # samples
    end: int
    cut_before: str | None  # None, "pause" or "forced": how this piece's start was made
    cut_after: str | None


def _frame_sample(frame: int, n_samples: int) -> int:
    return min(frame * FRAME_SAMPLES, n_samples)


def _runs(mask: np.ndarray) -> np.ndarray:
    """``(k, 2)`` array of ``[start, end)`` frame runs where ``mask`` is True."""
    if not len(mask):
        return np.zeros((0, 2), dtype=np.int64)
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges.reshape(-1, 2).astype(np.int64)


def speech_mask(probs: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Per-frame speech decision by hysteresis: on at ``>= threshold``, off below ``off_threshold``.

    Equivalent to the frame-by-frame state machine: within each run of frames ``>= off_threshold``,
    speech goes from the run's first frame ``>= threshold`` to the run's end.
    """
    p = np.asarray(probs, dtype=np.float32)
    above_off = p >= np.float32(cfg.off_threshold)
    onset = p >= np.float32(cfg.threshold)  # implies above_off (off_threshold <= threshold)
    runs = _runs(above_off)
    if not len(runs):
        return np.zeros(len(p), dtype=bool)
    run_id = np.zeros(len(p), dtype=np.int64)
    run_id[runs[:, 0]] = 1
    run_id = np.cumsum(run_id) - 1  # index of the latest run started at or before each frame
    onset_frames = np.flatnonzero(onset)
    first = np.full(len(runs), len(p), dtype=np.int64)
    ids, at = np.unique(run_id[onset_frames], return_index=True)
    first[ids] = onset_frames[at]
    return above_off & (np.arange(len(p)) >= first[run_id])


def speech_regions(probs: np.ndarray, cfg: SegmentConfig) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Regions in frames after joining short gaps and dropping short regions: ``(start, end, pauses)``
    where ``pauses`` are the joined gaps ``[start, end)`` inside the region."""
    runs = _runs(speech_mask(probs, cfg))
    min_gap = cfg.samples(cfg.min_silence_s)
    min_len = cfg.samples(cfg.min_speech_s)
    regions: list[tuple[int, int, list[tuple[int, int]]]] = []
    cur: tuple[int, int, list[tuple[int, int]]] | None = None
    for s, e in runs.tolist():
        if cur is not None and (s - cur[1]) * FRAME_SAMPLES < min_gap:
            cur[2].append((cur[1], s))
            cur = (cur[0], e, cur[2])
            continue
        if cur is not None:
            regions.append(cur)
        cur = (s, e, [])
    if cur is not None:
        regions.append(cur)
    return [r for r in regions if (r[1] - r[0]) * FRAME_SAMPLES >= min_len]


def _split_region(
    start: int, end: int, pauses: list[tuple[int, int]], probs: np.ndarray, n_samples: int, budget: int
) -> list[_Piece]:
    """Cut a region (frames) into pieces of at most ``budget`` samples."""
    pieces: list[_Piece] = []
    fs = start
    before: str | None = None
    max_frames = budget // FRAME_SAMPLES
    p_start = np.fromiter((ps for ps, _ in pauses), dtype=np.int64, count=len(pauses))
    p_len = np.fromiter((pe - ps for ps, pe in pauses), dtype=np.int64, count=len(pauses))
    while _frame_sample(end, n_samples) - fs * FRAME_SAMPLES > budget:
        lo = fs + (max_frames + 1) // 2  # second half of the window: cut frame in [lo, hi]
        hi = fs + max_frames
        a = int(np.searchsorted(p_start, lo, side="left"))
        b = int(np.searchsorted(p_start, hi, side="right"))
        if b > a:
            lengths = p_len[a:b]
            k = a + (b - a - 1) - int(np.argmax(lengths[::-1]))  # longest; the latest among equals
            ps, pe = pauses[k]
            pieces.append(_Piece(fs * FRAME_SAMPLES, ps * FRAME_SAMPLES, before, "pause"))
            fs, before = pe, "pause"
        else:
            cut = lo + int(np.argmin(probs[lo:hi]))
            pieces.append(_Piece(fs * FRAME_SAMPLES, cut * FRAME_SAMPLES, before, "forced"))
            fs, before = cut, "forced"
    pieces.append(_Piece(fs * FRAME_SAMPLES, _frame_sample(end, n_samples), before, None))
    return pieces


def plan_segments(
    probs: np.ndarray, n_samples: int, cfg: SegmentConfig | None = None
) -> list[PlannedSegment]:
    """Plan the segments of a recording of ``n_samples`` 16 kHz samples from its VAD probabilities.

    ``probs`` must hold ``ceil(n_samples / 512)`` values. Returns kept and quarantined segments in time
    order, non-overlapping, with padded bounds inside ``[0, n_samples]``.
    """
    cfg = cfg or SegmentConfig()
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 1:
        raise ValueError("probs must be 1-D")
    n_samples = int(n_samples)
    if n_samples < 0 or len(p) != -(-n_samples // FRAME_SAMPLES):
        raise ValueError(
            f"{len(p)} probabilities do not match {n_samples} samples (need ceil(n / {FRAME_SAMPLES}))"
        )
    if len(p) and not np.isfinite(p).all():
        raise ValueError("probs hold NaN or Inf")
    pad = cfg.samples(cfg.pad_s)
    max_len = cfg.samples(cfg.max_segment_s)
    budget = max_len - 2 * pad
    pack_gap = cfg.samples(cfg.pack_gap_s)

    pieces: list[_Piece] = []
    for s, e, pauses in speech_regions(p, cfg):
        pieces.extend(_split_region(s, e, pauses, p, n_samples, budget))

    groups: list[list[_Piece]] = []
    for piece in pieces:
        if groups:
            g = groups[-1]
            if piece.start - g[-1].end <= pack_gap and piece.end - g[0].start + 2 * pad <= max_len:
                g.append(piece)
                continue
        groups.append([piece])

    min_len = cfg.samples(cfg.min_segment_s)
    out: list[PlannedSegment] = []
    for i, g in enumerate(groups):
        start, end = g[0].start, g[-1].end
        left = 0 if i == 0 else (groups[i - 1][-1].end + start) // 2
        right = n_samples if i == len(groups) - 1 else (end + groups[i + 1][0].start) // 2
        pad_start, pad_end = max(start - pad, left), min(end + pad, right)
        cuts = {c for pc in g for c in (pc.cut_before, pc.cut_after)}
        kept = pad_end - pad_start >= min_len
        out.append(
            PlannedSegment(
                index=i,
                start=start,
                end=end,
                pad_start=pad_start,
                pad_end=pad_end,
                speech_samples=sum(pc.end - pc.start for pc in g),
                pieces=len(g),
                split="pause" in cuts,
                forced_cut="forced" in cuts,
                kept=kept,
                reason=None if kept else "too_short",
            )
        )
    return out


class AccountingError(AssertionError):
    """The segments of a recording do not account for its samples exactly."""


@dataclass(frozen=True, slots=True)
class Accounting:
    """Per-recording sample accounting: ``kept + quarantined + non_speech == n_samples``."""

    n_samples: int
    kept_samples: int
    quarantined_samples: int
    non_speech_samples: int
    kept_segments: int
    quarantined_segments: int
    forced_cuts: int
    quarantined_by_reason: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def account(segments: list[PlannedSegment], n_samples: int, max_segment_s: float | None = 30.0) -> Accounting:
    """Check and sum a recording's segments; raise :class:`AccountingError` when they overlap, leave
    ``[0, n_samples]``, are out of order, exceed ``max_segment_s`` (padded) or do not add up.

    Non-speech samples are summed from the gaps between padded segments (head, gaps, tail), not derived
    from the other two, so the identity is a real check.
    """
    kept = quarantined = non_speech = forced = 0
    by_reason: dict[str, int] = {}
    cursor = 0
    max_len = None if max_segment_s is None else SegmentConfig.samples(max_segment_s)
    for seg in segments:
        if not (0 <= seg.pad_start <= seg.start <= seg.end <= seg.pad_end <= n_samples):
            raise AccountingError(f"segment {seg.index} has inconsistent bounds: {seg}")
        if seg.pad_start < cursor:
            raise AccountingError(f"segment {seg.index} overlaps or precedes the previous one")
        if seg.kept and max_len is not None and seg.samples > max_len:
            raise AccountingError(f"kept segment {seg.index} is {seg.samples} samples (> {max_len})")
        if seg.kept == (seg.reason is not None):
            raise AccountingError(f"segment {seg.index}: kept={seg.kept} with reason {seg.reason!r}")
        non_speech += seg.pad_start - cursor
        cursor = seg.pad_end
        if seg.kept:
            kept += seg.samples
        else:
            quarantined += seg.samples
            by_reason[str(seg.reason)] = by_reason.get(str(seg.reason), 0) + seg.samples
        forced += int(seg.forced_cut)
    if cursor > n_samples:
        raise AccountingError("segments end past the recording")
    non_speech += n_samples - cursor
    if kept + quarantined + non_speech != n_samples:
        raise AccountingError(
            f"kept {kept} + quarantined {quarantined} + non-speech {non_speech} != {n_samples} samples"
        )
    return Accounting(
        n_samples=n_samples,
        kept_samples=kept,
        quarantined_samples=quarantined,
        non_speech_samples=non_speech,
        kept_segments=sum(1 for s in segments if s.kept),
        quarantined_segments=sum(1 for s in segments if not s.kept),
        forced_cuts=forced,
        quarantined_by_reason=by_reason,
    )
