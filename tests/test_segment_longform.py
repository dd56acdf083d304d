"""VAD + planner on generated long-form speech: boundaries fall in silences, every turn is covered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_distill.audio.vad import SileroVad, vad_file
from asr_distill.demo.longform import RecordingTruth, write_longform_partition
from asr_distill.stages.segment.plan import SAMPLE_RATE, PlannedSegment, SegmentConfig, account, plan_segments

CFG = SegmentConfig()


@pytest.fixture(scope="module")
def partition(tmp_path_factory: pytest.TempPathFactory) -> list[RecordingTruth]:
    return write_longform_partition(tmp_path_factory.mktemp("longform"), seed=0)


@pytest.fixture(scope="module")
def planned(partition: list[RecordingTruth]) -> dict[str, tuple[RecordingTruth, int, list[PlannedSegment]]]:
    vad = SileroVad()
    out = {}
    for truth in partition:
        res = vad_file(truth.path, vad)
        out[truth.kind] = (truth, res.n_samples, plan_segments(res.probabilities, res.n_samples, CFG))
    return out


def test_partition_matches_its_truth(partition: list[RecordingTruth]) -> None:
    kinds = {t.kind: t for t in partition}
    assert set(kinds) == {"dialogue", "monologue", "noise_only", "just_over_30s"}
    formats = {t.kind: (t.container, t.sample_rate, t.channels) for t in partition}
    assert formats == {
        "dialogue": ("FLAC", 44_100, 2),
        "monologue": ("WAV", 16_000, 1),
        "noise_only": ("WAV", 48_000, 2),
        "just_over_30s": ("FLAC", 16_000, 1),
    }
    for t in partition:
        info = sf.info(t.path)
        assert (info.samplerate, info.channels, info.frames) == (t.sample_rate, t.channels, t.n_frames)
        for a, b in zip(t.turns, t.turns[1:], strict=False):
            assert a.end < b.start  # turns are apart
        for turn in t.turns:
            assert 0 <= turn.start < turn.end <= t.n_frames and turn.text
            assert all(turn.start < s < e < turn.end for s, e in turn.pauses)
    assert (
        120 <= kinds["dialogue"].duration_s <= 200 and len({x.speaker for x in kinds["dialogue"].turns}) == 3
    )
    assert [s.kind for s in kinds["dialogue"].stretches] == ["music"]
    assert kinds["monologue"].duration_s > 31 and len({x.speaker for x in kinds["monologue"].turns}) == 1
    assert kinds["noise_only"].turns == () and kinds["noise_only"].duration_s == 40.0
    assert kinds["just_over_30s"].duration_s == 31.0 and kinds["just_over_30s"].turns
    # the signal is really silent-ish in the long gaps and loud in the turns (truth is not made up)
    d = kinds["dialogue"]
    x, _ = sf.read(d.path, dtype="float32")
    turn = d.turns[0]
    assert np.abs(x[turn.start : turn.end, 0]).max() > 0.25
    assert np.abs(x[: d.turns[0].start, 0]).max() < 0.01


def test_generation_is_deterministic(tmp_path: Path, partition: list[RecordingTruth]) -> None:
    again = write_longform_partition(tmp_path, seed=0)
    assert [(t.name, t.sha256, t.turns, t.stretches) for t in again] == [
        (t.name, t.sha256, t.turns, t.stretches) for t in partition
    ]


def _boundaries(segs: list[PlannedSegment]) -> list[int]:
    return sorted({b for s in segs if s.kept for b in (s.pad_start, s.pad_end)})


@pytest.mark.parametrize("kind", ["dialogue", "monologue", "just_over_30s"])
def test_no_boundary_inside_a_word_and_every_turn_covered(planned, kind: str) -> None:
    truth, n_samples, segs = planned[kind]
    acc = account(segs, n_samples, CFG.max_segment_s)
    assert acc.kept_samples + acc.quarantined_samples + acc.non_speech_samples == n_samples
    assert all(s.samples <= CFG.samples(CFG.max_segment_s) for s in segs)
    turns = truth.turns_at(SAMPLE_RATE)
    pauses = [
        [(truth.scale(a, SAMPLE_RATE), truth.scale(b, SAMPLE_RATE)) for a, b in t.pauses] for t in truth.turns
    ]
    for b in _boundaries(segs):
        for (ts, te), inner in zip(turns, pauses, strict=True):
            if ts < b < te:
                assert any(ps <= b <= pe for ps, pe in inner), (
                    f"{kind}: boundary {b / SAMPLE_RATE:.3f} s cuts a word"
                )
    # recall: turn speech samples inside kept segments
    kept = np.zeros(n_samples, dtype=bool)
    for s in segs:
        if s.kept:
            kept[s.pad_start : s.pad_end] = True
    total = sum(te - ts for ts, te in turns)
    inside = sum(int(kept[ts:te].sum()) for ts, te in turns)
    assert inside / total >= 0.99, f"{kind}: recall {inside / total:.4f}"


def test_monologue_is_split_at_a_pause(planned) -> None:
    """The monologue runs > 30 s without a gap the VAD ends a region at: the planner must cut it, and it
    finds a pause to cut at."""
    truth, n_samples, segs = planned["monologue"]
    kept = [s for s in segs if s.kept]
    assert len(kept) >= 2 and any(s.split for s in kept)
    assert not any(s.forced_cut for s in segs)


def test_dialogue_packs_turns_and_skips_the_music(planned) -> None:
    truth, n_samples, segs = planned["dialogue"]
    kept = [s for s in segs if s.kept]
    assert any(s.pieces > 1 for s in kept)  # turns packed across short gaps
    assert len(kept) < len(truth.turns)
    music = truth.stretches[0]
    ms, me = truth.scale(music.start, SAMPLE_RATE), truth.scale(music.end, SAMPLE_RATE)
    in_music = sum(max(0, min(me, s.pad_end) - max(ms, s.pad_start)) for s in kept)
    assert in_music <= 0.1 * (me - ms)


def test_noise_only_has_no_speech(planned) -> None:
    truth, n_samples, segs = planned["noise_only"]
    assert n_samples == 40 * SAMPLE_RATE
    acc = account(segs, n_samples)
    assert acc.kept_samples <= 1 * SAMPLE_RATE  # at most a second of false speech in 40 s of noise
