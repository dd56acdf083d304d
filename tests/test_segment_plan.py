"""Invariants of the pure segment planner on synthetic VAD probability arrays (seeded, no audio)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from asr_distill.stages.segment.plan import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AccountingError,
    PlannedSegment,
    SegmentConfig,
    account,
    plan_segments,
    speech_mask,
    speech_regions,
)

CFG = SegmentConfig()
FPS = SAMPLE_RATE / FRAME_SAMPLES  # 31.25 frames per second


def frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def n_probs(n_samples: int) -> int:
    return -(-n_samples // FRAME_SAMPLES)


def random_probs(seed: int, seconds: float) -> tuple[np.ndarray, int]:
    """Speech-like probability tracks: bursts of high values (some very long, some with short dips
    below off_threshold), noisy silences with values around the thresholds, isolated blips."""
    rng = np.random.default_rng(seed)
    n_samples = int(seconds * SAMPLE_RATE) + int(rng.integers(0, FRAME_SAMPLES))
    n = n_probs(n_samples)
    p = rng.uniform(0.0, 0.3, n).astype(np.float32)
    i = int(rng.integers(0, 50))
    while i < n:
        kind = rng.random()
        if kind < 0.15:  # long monologue-like run, 30-120 s, with or without dips
            length = frames(rng.uniform(30, 120))
        elif kind < 0.25:  # a blip shorter than a second
            length = frames(rng.uniform(0.05, 0.9))
        else:  # a turn of 1-12 s
            length = frames(rng.uniform(1, 12))
        seg = rng.uniform(0.55, 1.0, length).astype(np.float32)
        if rng.random() < 0.6:  # short dips (pauses) inside
            for _ in range(int(rng.integers(1, 1 + max(1, length // 150)))):
                at = int(rng.integers(0, max(1, length - 6)))
                seg[at : at + int(rng.integers(1, 6))] = rng.uniform(0.0, 0.34)
        if rng.random() < 0.3:  # values between off and on thresholds
            k = int(rng.integers(0, max(1, length - 10)))
            seg[k : k + 10] = rng.uniform(0.36, 0.49)
        p[i : i + length] = seg[: max(0, min(length, n - i))]
        i += length + frames(rng.choice([rng.uniform(0.05, 1.0), rng.uniform(1.0, 6.0)]))
    return p, n_samples


def reference_mask(p: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """The hysteresis state machine, frame by frame."""
    out = np.zeros(len(p), dtype=bool)
    on = False
    for i, v in enumerate(p):
        if on and v < np.float32(cfg.off_threshold):
            on = False
        elif not on and v >= np.float32(cfg.threshold):
            on = True
        out[i] = on
    return out


def check_invariants(segs: list[PlannedSegment], p: np.ndarray, n_samples: int, cfg: SegmentConfig) -> None:
    max_len = cfg.samples(cfg.max_segment_s)
    pad = cfg.samples(cfg.pad_s)
    acc = account(segs, n_samples, cfg.max_segment_s)  # order, bounds, non-overlap, identity
    assert acc.kept_samples + acc.quarantined_samples + acc.non_speech_samples == n_samples
    assert [s.index for s in segs] == list(range(len(segs)))
    regions = speech_regions(p, cfg)
    region_gaps = [
        (min(a[1] * FRAME_SAMPLES, n_samples), b[0] * FRAME_SAMPLES)
        for a, b in zip(regions, regions[1:], strict=False)
    ]
    for k, s in enumerate(segs):
        assert isinstance(s.start, int) and isinstance(s.pad_end, int)
        assert 0 <= s.pad_start <= s.start < s.end <= s.pad_end <= n_samples
        assert s.start - s.pad_start <= pad and s.pad_end - s.end <= pad
        assert s.samples <= max_len  # kept or not, padding included
        assert s.speech_samples <= s.end - s.start
        too_short = s.samples < cfg.samples(cfg.min_segment_s)
        assert s.kept is (not too_short) and s.reason == ("too_short" if too_short else None)
        # padding never crosses the middle of a gap
        if k:
            prev = segs[k - 1]
            assert s.pad_start >= (prev.end + s.start) // 2 >= prev.pad_end
        # packing only across gaps <= pack_gap: every region gap inside a segment is short
        for ga, gb in region_gaps:
            if s.start <= ga and gb <= s.end:
                assert gb - ga <= cfg.samples(cfg.pack_gap_s)
    # packing is greedy: a short gap between two segments means the next piece did not fit
    for a, b in zip(segs, segs[1:], strict=False):
        if b.start - a.end <= cfg.samples(cfg.pack_gap_s) and b.pieces == 1:
            assert b.end - a.start + 2 * pad > max_len
    # every speech frame of a kept region is inside a segment (only pauses cut at may fall outside;
    # dropped short regions are not speech)
    covered = np.zeros(len(p), dtype=bool)
    for s in segs:
        covered[s.start // FRAME_SAMPLES : n_probs(s.end)] = True
    mask = speech_mask(p, cfg)
    for rs, re_, _ in regions:
        assert covered[rs:re_][mask[rs:re_]].all()


def check_forced_cuts(segs: list[PlannedSegment], p: np.ndarray, n_samples: int, cfg: SegmentConfig) -> int:
    """A forced cut (zero gap between segments) happens only where the window's second half holds no
    pause, and sits at the lowest-probability frame of that half. Returns how many were checked."""
    budget = cfg.samples(cfg.max_segment_s) - 2 * cfg.samples(cfg.pad_s)
    max_frames = budget // FRAME_SAMPLES
    pause_starts = sorted(ps for _, _, pauses in speech_regions(p, cfg) for ps, _ in pauses)
    checked = 0
    for a, b in zip(segs, segs[1:], strict=False):
        zero_gap = a.end == b.start
        assert zero_gap == (a.forced_cut and b.forced_cut and a.end == b.start)
        if zero_gap and a.pieces == 1:
            fs, cut = a.start // FRAME_SAMPLES, a.end // FRAME_SAMPLES
            lo, hi = fs + (max_frames + 1) // 2, fs + max_frames
            assert lo <= cut < hi
            assert not [ps for ps in pause_starts if lo <= ps <= hi]
            assert cut == lo + int(np.argmin(p[lo:hi]))
            checked += 1
    for s in segs:  # a forced-cut segment touches a zero-gap neighbour
        if s.forced_cut:
            i = s.index
            assert (i > 0 and segs[i - 1].end == s.start) or (
                i + 1 < len(segs) and segs[i + 1].start == s.end
            )
    return checked


@pytest.mark.parametrize("seed", range(12))
def test_invariants_on_random_tracks(seed: int) -> None:
    p, n_samples = random_probs(seed, seconds=600)
    segs = plan_segments(p, n_samples)
    check_invariants(segs, p, n_samples, CFG)
    check_forced_cuts(segs, p, n_samples, CFG)
    assert plan_segments(p.copy(), n_samples) == segs  # deterministic, input untouched


def test_random_tracks_exercise_every_path() -> None:
    """Over the seeds above: kept, quarantined, packed, split at a pause and forced cuts all occur."""
    seen = {"kept": 0, "quarantined": 0, "packed": 0, "split": 0, "forced": 0, "forced_checked": 0}
    for seed in range(12):
        p, n = random_probs(seed, seconds=600)
        segs = plan_segments(p, n)
        seen["kept"] += sum(s.kept for s in segs)
        seen["quarantined"] += sum(not s.kept for s in segs)
        seen["packed"] += sum(s.pieces > 1 for s in segs)
        seen["split"] += sum(s.split for s in segs)
        seen["forced"] += sum(s.forced_cut for s in segs)
        seen["forced_checked"] += check_forced_cuts(segs, p, n, CFG)
    assert all(v > 0 for v in seen.values()), seen


def test_other_configs_keep_the_invariants() -> None:
    cfgs = [
        SegmentConfig(max_segment_s=10.0, pad_s=0.3, pack_gap_s=0.5, min_segment_s=0.5),
        SegmentConfig(threshold=0.6, off_threshold=0.6, min_silence_s=0.1, min_speech_s=0.1, pad_s=0.0),
        SegmentConfig(min_silence_s=0.3, min_speech_s=0.3, pack_gap_s=0.0, min_segment_s=2.0),
    ]
    for k, cfg in enumerate(cfgs):
        p, n = random_probs(100 + k, seconds=300)
        segs = plan_segments(p, n, cfg)
        check_invariants(segs, p, n, cfg)
        check_forced_cuts(segs, p, n, cfg)


def test_hysteresis_matches_the_state_machine() -> None:
    for seed in range(5):
        p, _ = random_probs(seed, seconds=120)
        assert np.array_equal(speech_mask(p, CFG), reference_mask(p, CFG))
    p = np.array([0.4, 0.5, 0.4, 0.36, 0.34, 0.45, 0.49, 0.5, 0.35, 0.1], np.float32)
    assert speech_mask(p, CFG).tolist() == [False, True, True, True, False, False, False, True, True, False]


def test_long_region_split_at_the_longest_pause_then_forced() -> None:
    """67 s of speech (1-68 s): pauses at 10 s (in the first half: ignored), 18 s (1 frame) and 22 s (3 frames,
    the longest in the second half); the rest has no pause, so the next cut is forced at the
    lowest-probability frame of its second half (at 40 s)."""
    n_samples = 70 * SAMPLE_RATE
    p = np.zeros(n_probs(n_samples), np.float32)
    s, e = frames(1.0), frames(68.0)
    p[s:e] = 0.9
    p[frames(10.0) : frames(10.0) + 5] = 0.1
    p[frames(18.0)] = 0.1
    p[frames(22.0) : frames(22.0) + 3] = 0.1
    p[frames(40.0)] = 0.6
    segs = plan_segments(p, n_samples)
    check_invariants(segs, p, n_samples, CFG)
    assert [x.kept for x in segs] == [True, True, True]
    a, b, c = segs
    assert a.start == s * FRAME_SAMPLES and a.end == frames(22.0) * FRAME_SAMPLES
    assert b.start == (frames(22.0) + 3) * FRAME_SAMPLES
    assert a.split and not a.forced_cut
    assert b.split and b.forced_cut and b.end == frames(40.0) * FRAME_SAMPLES == c.start
    assert c.forced_cut and not c.split and c.end == e * FRAME_SAMPLES
    # padding: 0.2 s outside, half the 3-frame pause at the pause, nothing at the forced cut
    assert a.pad_start == a.start - 3200 and a.pad_end == (a.end + b.start) // 2 == b.pad_start
    assert b.pad_end == b.end == c.pad_start and c.pad_end == c.end + 3200
    assert check_forced_cuts(segs, p, n_samples, CFG) == 1


def test_packing_and_quarantine() -> None:
    n_samples = 60 * SAMPLE_RATE
    p = np.zeros(n_probs(n_samples), np.float32)

    def speech(t0: float, t1: float) -> None:
        p[frames(t0) : frames(t1)] = 0.95

    speech(1.0, 4.0)
    speech(4.9, 8.0)  # 0.9 s gap: packed
    speech(9.0, 12.0)  # 1.0 s gap: packed (<= pack_gap_s)
    speech(13.5, 16.0)  # 1.5 s gap: new segment
    speech(20.0, 20.4)  # isolated 0.4 s: padded to 0.8 s -> too_short
    speech(25.0, 45.0)  # 20 s
    speech(45.5, 56.0)  # 0.5 s gap, but 20 + 0.5 + 10.5 s does not fit 30 s
    segs = plan_segments(p, n_samples)
    check_invariants(segs, p, n_samples, CFG)
    assert [(x.pieces, x.kept, x.reason) for x in segs] == [
        (3, True, None),
        (1, True, None),
        (1, False, "too_short"),
        (1, True, None),
        (1, True, None),
    ]
    assert (
        segs[0].speech_samples
        == (frames(12.0) - frames(1.0)) * FRAME_SAMPLES
        - ((frames(4.9) - frames(4.0)) + (frames(9.0) - frames(8.0))) * FRAME_SAMPLES
    )
    acc = account(segs, n_samples)
    assert acc.quarantined_by_reason == {"too_short": segs[2].samples}
    assert acc.quarantined_segments == 1 and acc.kept_segments == 4


def test_short_gaps_join_and_short_regions_drop() -> None:
    n_samples = 10 * SAMPLE_RATE
    p = np.zeros(n_probs(n_samples), np.float32)
    p[frames(1.0) : frames(3.0)] = 0.9
    p[frames(3.0) + 4 : frames(5.0)] = 0.9  # 4-frame gap (128 ms < 0.2 s): a pause inside one region
    p[frames(7.0) : frames(7.0) + 6] = 0.9  # 192 ms < min_speech_s: not speech
    regions = speech_regions(p, CFG)
    assert regions == [(frames(1.0), frames(5.0), [(frames(3.0), frames(3.0) + 4)])]
    segs = plan_segments(p, n_samples)
    assert len(segs) == 1 and segs[0].pieces == 1 and segs[0].speech_samples == segs[0].end - segs[0].start


def test_edges_of_the_recording() -> None:
    # speech to the very last (partial) frame and from the very first: padding clipped to the recording
    n_samples = 5 * SAMPLE_RATE + 100
    p = np.full(n_probs(n_samples), 0.9, np.float32)
    segs = plan_segments(p, n_samples)
    assert len(segs) == 1
    s = segs[0]
    assert (s.pad_start, s.start, s.end, s.pad_end) == (0, 0, n_samples, n_samples)
    assert account(segs, n_samples).non_speech_samples == 0
    # no speech at all, and an empty recording: no segments, every sample non-speech
    assert plan_segments(np.zeros(n_probs(n_samples), np.float32), n_samples) == []
    acc = account([], n_samples)
    assert (acc.kept_samples, acc.quarantined_samples, acc.non_speech_samples) == (0, 0, n_samples)
    assert plan_segments(np.zeros(0, np.float32), 0) == []


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        plan_segments(np.zeros(10, np.float32), 16000)
    with pytest.raises(ValueError, match="NaN"):
        plan_segments(np.full(32, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="off_threshold"):
        SegmentConfig(off_threshold=0.6)
    with pytest.raises(ValueError, match="max_segment_s"):
        SegmentConfig(max_segment_s=0.4)


def test_accounting_rejects_overlap_and_oversize() -> None:
    a = PlannedSegment(0, 100, 200, 50, 250, 100, 1, False, False, True, None)
    b = dataclasses.replace(a, index=1, start=300, end=400, pad_start=240, pad_end=450)
    with pytest.raises(AccountingError, match="overlaps"):
        account([a, b], 1000)
    with pytest.raises(AccountingError, match="inconsistent"):
        account([dataclasses.replace(a, pad_end=2000, end=1500)], 1000)
    big = PlannedSegment(0, 0, 30 * SAMPLE_RATE + 1, 0, 30 * SAMPLE_RATE + 1, 1, 1, False, False, True, None)
    with pytest.raises(AccountingError, match="samples"):
        account([big], 31 * SAMPLE_RATE)
    with pytest.raises(AccountingError, match="kept=False with reason None"):
        account([dataclasses.replace(a, kept=False)], 1000)


def test_config_fingerprint_is_stable() -> None:
    assert SegmentConfig().fingerprint() == SegmentConfig().fingerprint()
    assert SegmentConfig(pad_s=0.25).fingerprint() != SegmentConfig().fingerprint()
    assert SegmentConfig().to_dict()["max_segment_s"] == 30.0
