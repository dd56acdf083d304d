"""Synthetic long-form recordings with known turn boundaries, for tests of segmentation.

:func:`write_longform_partition` writes, into a local directory, recordings made from offline TTS
(espeak-ng, and flite voices when flite is installed; see :class:`asr_distill.demo.corpus.Synthesizer`)
and returns each one's ground truth (:class:`RecordingTruth`):

==========================  =============================  ==============================================
file                        format                         content
==========================  =============================  ==============================================
``dialogue.flac``           FLAC 44.1 kHz stereo, 16 bit   ~2.5 min, 3 speakers, turns separated by short
                                                           (packable) and long silences, a 10 s music-like
                                                           stretch in the middle, a faint noise floor
``monologue.wav``           WAV 16 kHz mono, 16 bit        one speaker, ~45 s of sentences 80-150 ms
                                                           apart (below the planner's min silence)
``noise_only.wav``          WAV 48 kHz stereo, 16 bit      40 s of coloured noise and mains hum, no speech
``just_over_30s.flac``      FLAC 16 kHz mono, 16 bit       31.0 s: two speakers, short gaps
==========================  =============================  ==============================================

Truth is in samples at the file's own rate: each :class:`Turn` is one synthesised utterance, trimmed
to its sounding part, with the silent pauses inside it (stretches >= 30 ms more than 35 dB below the
utterance's loudest 10 ms). A segment boundary that falls inside a turn but outside its pauses cuts a
word. Turns never overlap; the monologue's are 80-150 ms apart, the others' at least 0.3 s.

Determinism: same seed and same installed espeak-ng/flite/libsndfile -> byte-identical files (the
signal is built directly at the file's rate and written as int16 through libsndfile). Writes are
atomic (temporary file, then rename).

:func:`write_longform_prefix` puts a smaller set into a store as the demo corpus's ``longform/``
prefix (``python -m asr_distill.demo``, so ``make demo``): the same four recordings (dialogue ~90 s,
monologue ~40 s, noise-only 20 s, 31 s clip), a ``.txt`` sidecar with the whole-recording transcript of
each recording that has speech (the index reads it as the recording's reference text; its segments
carry no aligned reference), a 6 s short clip (kept by the clean stage as a clip) and ``_SUCCESS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from asr_distill.demo.corpus import ESPEAK_VOICES, MARKER_NAME, SYNTH_RATE, Synthesizer, Voice, make_text
from asr_distill.storage import Storage

PAUSE_WINDOW_S = 0.010
PAUSE_MIN_S = 0.030
PAUSE_DB = 35.0  # below the utterance's loudest window
NOISE_FLOOR_DBFS = -60.0


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance: ``[start, end)`` in samples of the recording's rate, and its inner pauses."""

    start: int
    end: int
    speaker: str
    voice: str
    text: str
    pauses: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Stretch:
    """A non-speech insert (``"music"`` or ``"noise"``), ``[start, end)`` in recording samples."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class RecordingTruth:
    """One written recording and its ground truth."""

    name: str  # file name inside the partition directory
    path: Path
    kind: str  # "dialogue" | "monologue" | "noise_only" | "just_over_30s"
    sample_rate: int
    channels: int
    n_frames: int  # samples per channel
    container: str  # "FLAC" | "WAV"
    turns: tuple[Turn, ...]
    stretches: tuple[Stretch, ...]
    sha256: str
    transcript: str  # the spoken text of every turn, in order ("" when there is none)

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate

    @property
    def speech_samples(self) -> int:
        return sum(t.end - t.start for t in self.turns)

    def scale(self, sample: int, rate: int) -> int:
        """A boundary at the file's rate mapped to ``rate`` (rounded to the nearest sample)."""
        return (sample * rate + self.sample_rate // 2) // self.sample_rate

    def turns_at(self, rate: int = 16_000) -> list[tuple[int, int]]:
        """Turn bounds at ``rate`` (the pipeline's 16 kHz timeline by default)."""
        return [(self.scale(t.start, rate), self.scale(t.end, rate)) for t in self.turns]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


# -- signal pieces ---------------------------------------------------------------------------------


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.sha256("/".join(("asr-distill-longform", str(seed), *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _noise_floor(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (NOISE_FLOOR_DBFS / 20)).astype(np.float32)


def _music(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A piano-like melody: decaying harmonic notes from a pentatonic scale over a soft chord."""
    out = np.zeros(n, dtype=np.float64)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    pos = 0
    while pos < n:
        note_len = int(rate * rng.choice([0.25, 0.375, 0.5, 0.75]))
        f0 = 261.63 * 2 ** (scale[rng.integers(len(scale))] / 12)
        t = np.arange(min(note_len * 2, n - pos)) / rate
        env = np.exp(-t * 4.0) * (1 - np.exp(-t * 400.0))
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k**1.5 for k in range(1, 7))
        out[pos : pos + len(t)] += 0.25 * env * tone
        pos += note_len
    t = np.arange(n) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (130.81, 164.81, 196.0)) * 0.04
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.05 * rate))
    return ((out + chord) * fade).astype(np.float32)


def _coloured_noise(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Noise with a 1/f^0.8 spectrum (shaped in the frequency domain) plus 50 Hz mains hum."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    spec *= 1.0 / np.maximum(f, 20.0) ** 0.8
    noise = np.fft.irfft(spec, n)
    noise *= 0.12 / max(1e-12, float(np.std(noise)))
    t = np.arange(n) / rate
    hum = sum(np.sin(2 * np.pi * 50 * h * t) * 0.02 / h for h in (1, 2, 3))
    return (np.clip(noise, -0.9, 0.9) + hum).astype(np.float32)


def _trim_and_pauses(audio: np.ndarray, rate: int) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Trim leading/trailing silence of an utterance; return it and its inner silent stretches."""
    win = max(1, int(rate * PAUSE_WINDOW_S))
    n_win = len(audio) // win
    rms = np.sqrt(np.mean(audio[: n_win * win].reshape(n_win, win).astype(np.float64) ** 2, axis=1))
    loud = rms > rms.max() * 10 ** (-PAUSE_DB / 20)
    idx = np.flatnonzero(loud)
    first, last = int(idx[0]), int(idx[-1]) + 1
    trimmed = audio[first * win : last * win]
    quiet = ~loud[first:last]
    padded = np.concatenate([[False], quiet, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]).reshape(-1, 2)
    min_w = int(round(PAUSE_MIN_S / PAUSE_WINDOW_S))
    pauses = tuple((int(s) * win, int(e) * win) for s, e in edges if e - s >= min_w)
    return trimmed, pauses


@dataclass(frozen=True, slots=True)
class _Speaker:
    id: str
    voice: Voice


def _speakers(seed: int, synth: Synthesizer, n: int) -> list[_Speaker]:
    rng = random.Random(f"asr-distill-longform/{seed}/speakers")
    names = rng.sample(ESPEAK_VOICES, n)
    out = []
    for i, name in enumerate(names):
        speed, pitch = rng.randrange(140, 190, 5), rng.randrange(30, 71, 5)
        voice = Voice("espeak-ng", name, speed, pitch)
        if i == n - 1 and synth.flite_voices:  # one flite voice when flite exists
            voice = Voice("flite", rng.choice(synth.flite_voices), round(rng.uniform(0.9, 1.15), 2))
        out.append(_Speaker(f"lf_speaker_{i}", voice))
    return out


class _Builder:
    """Places utterances and inserts on one timeline at the output rate."""

    def __init__(self, synth: Synthesizer, rate: int, rng: np.random.Generator, tag: str) -> None:
        self.synth, self.rate, self.rng, self.tag = synth, rate, rng, tag
        self.parts: list[np.ndarray] = []
        self.pos = 0
        self.turns: list[Turn] = []
        self.stretches: list[Stretch] = []

    def silence(self, seconds: float) -> None:
        n = int(round(seconds * self.rate))
        self.parts.append(np.zeros(n, dtype=np.float32))
        self.pos += n

    def utterance(self, speaker: _Speaker, n_words: int, style: str) -> int:
        text_seed = f"{self.tag}/turn{len(self.turns)}"
        text = make_text(text_seed, style, n_words)
        audio = self.synth.synthesize(text, speaker.voice)
        if self.rate != SYNTH_RATE:
            audio = soxr.resample(audio, SYNTH_RATE, self.rate, quality="HQ").astype(np.float32)
        audio, pauses = _trim_and_pauses(audio, self.rate)
        gain = float(self.rng.uniform(0.3, 0.7))
        audio = (audio * np.float32(gain / float(np.max(np.abs(audio))))).astype(np.float32)
        start = self.pos
        self.parts.append(audio)
        self.pos += len(audio)
        shifted = tuple((start + s, start + e) for s, e in pauses)
        self.turns.append(Turn(start, self.pos, speaker.id, speaker.voice.label, text, shifted))
        return len(audio)

    def insert(self, audio: np.ndarray, kind: str) -> None:
        self.stretches.append(Stretch(self.pos, self.pos + len(audio), kind))
        self.parts.append(audio.astype(np.float32))
        self.pos += len(audio)

    def signal(self, total: int | None = None) -> np.ndarray:
        x = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)
        if total is not None:
            if total < len(x):
                raise RuntimeError(f"{self.tag}: content {len(x)} exceeds {total} samples")
            x = np.concatenate([x, np.zeros(total - len(x), dtype=np.float32)])
        return x + _noise_floor(self.rng, len(x))


# -- recordings ------------------------------------------------------------------------------------


def _dialogue(
    synth: Synthesizer, seed: int, speakers: list[_Speaker], rate: int, target_s: float
) -> _Builder:
    b = _Builder(synth, rate, _rng(seed, "dialogue"), f"asr-distill-longform/{seed}/dialogue")
    rng = random.Random(f"asr-distill-longform/{seed}/dialogue/plan")
    b.silence(rng.uniform(0.5, 1.5))
    music_done = False
    last = None
    while b.pos < target_s * rate:
        if not music_done and b.pos > target_s * rate / 2:
            b.silence(rng.uniform(1.2, 2.0))
            b.insert(_music(b.rng, int(10.0 * rate), rate), "music")
            b.silence(rng.uniform(1.2, 2.0))
            music_done = True
        spk = rng.choice([s for s in speakers if s is not last])
        last = spk
        b.utterance(spk, rng.randint(3, 22), "conversational")
        # gaps: mostly packable (<= 1 s), some long (not packable), some just over the VAD's min silence
        b.silence(rng.choice([rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9), rng.uniform(1.3, 2.6)]))
    return b


def _monologue(synth: Synthesizer, seed: int, speaker: _Speaker, rate: int, target_s: float) -> _Builder:
    b = _Builder(synth, rate, _rng(seed, "monologue"), f"asr-distill-longform/{seed}/monologue")
    rng = random.Random(f"asr-distill-longform/{seed}/monologue/plan")
    b.silence(0.6)
    while b.pos < target_s * rate:
        b.utterance(speaker, rng.randint(10, 18), "read")
        b.silence(rng.uniform(0.08, 0.15))  # shorter than the VAD's min silence: one long region
    b.silence(0.6)
    return b


def _just_over(
    synth: Synthesizer, seed: int, speakers: list[_Speaker], rate: int, total_s: float
) -> _Builder:
    b = _Builder(synth, rate, _rng(seed, "just_over_30s"), f"asr-distill-longform/{seed}/just_over_30s")
    rng = random.Random(f"asr-distill-longform/{seed}/just_over_30s/plan")
    b.silence(0.4)
    i = 0
    while True:
        saved = (list(b.parts), b.pos, list(b.turns))
        b.utterance(speakers[i % len(speakers)], rng.randint(4, 14), "conversational")
        if b.pos > (total_s - 0.5) * rate:  # does not fit: undo and stop
            b.parts, b.pos, b.turns = saved
            break
        b.silence(rng.uniform(0.3, 0.8))
        i += 1
    if not b.turns:
        raise RuntimeError("no utterance fits the just-over-30 s clip")
    return b


def _stereo(x: np.ndarray, rate: int) -> np.ndarray:
    """A second channel: delayed by ~0.25 ms and attenuated, like a spaced microphone pair."""
    d = max(1, rate // 4000)
    right = np.concatenate([np.zeros(d, np.float32), x[:-d]]) * np.float32(0.8)
    return np.stack([x, right], axis=1)


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _write_atomic(path: Path, audio: np.ndarray, rate: int, container: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sf.write(fh, _int16(audio), rate, format=container, subtype="PCM_16")
        data = Path(tmp).read_bytes()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def _finish(
    out_dir: Path, name: str, kind: str, b: _Builder, signal: np.ndarray, channels: int, container: str
) -> RecordingTruth:
    audio = _stereo(signal, b.rate) if channels == 2 else signal
    path = out_dir / name
    digest = _write_atomic(path, audio, b.rate, container)
    return RecordingTruth(
        name=name,
        path=path,
        kind=kind,
        sample_rate=b.rate,
        channels=channels,
        n_frames=len(signal),
        container=container,
        turns=tuple(b.turns),
        stretches=tuple(b.stretches),
        sha256=digest,
        transcript=" ".join(t.text for t in b.turns),
    )


def write_longform_partition(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    synth: Synthesizer | None = None,
    dialogue_s: float = 150.0,
    monologue_s: float = 45.0,
    noise_s: float = 40.0,
) -> list[RecordingTruth]:
    """Write the long-form recordings into ``out_dir`` (created) and return their truth, in file order.

    ``dialogue_s``/``monologue_s``: target lengths (the last utterance may overrun by a few seconds);
    ``noise_s``: length of the noise-only recording (over 30 s to be long-form).
    """
    if monologue_s <= 31.0:
        raise ValueError("monologue_s must exceed 30 s (plus padding) to exercise the budget split")
    out = Path(out_dir)
    synth = synth or Synthesizer()
    speakers = _speakers(seed, synth, 3)
    truths = []

    b = _dialogue(synth, seed, speakers, 44_100, dialogue_s)
    truths.append(_finish(out, "dialogue.flac", "dialogue", b, b.signal(), 2, "FLAC"))

    b = _monologue(synth, seed, speakers[0], 16_000, monologue_s)
    truths.append(_finish(out, "monologue.wav", "monologue", b, b.signal(), 1, "WAV"))

    rate = 48_000
    b = _Builder(synth, rate, _rng(seed, "noise_only"), f"asr-distill-longform/{seed}/noise_only")
    b.insert(_coloured_noise(b.rng, int(round(noise_s * rate)), rate), "noise")
    truths.append(_finish(out, "noise_only.wav", "noise_only", b, b.signal(), 2, "WAV"))

    b = _just_over(synth, seed, speakers[1:], 16_000, 31.0)
    truths.append(_finish(out, "just_over_30s.flac", "just_over_30s", b, b.signal(31 * 16_000), 1, "FLAC"))
    return truths


# -- the demo corpus's long-form prefix ----------------------------------------------------------------
LONGFORM_PREFIX = "longform"
SHORT_CLIP_NAME = "intro_clip.wav"


def write_longform_prefix(
    store: Storage,
    seed: int = 0,
    *,
    prefix: str = LONGFORM_PREFIX,
    marker: bool = True,
    synth: Synthesizer | None = None,
) -> list[RecordingTruth]:
    """Write the demo's long-form prefix into ``store`` (see the module docstring) and return the truth
    of its four recordings. Objects are written in key order, the ``_SUCCESS`` marker last."""
    with tempfile.TemporaryDirectory(prefix="asrd-longform-") as tmp:
        out = Path(tmp) / prefix
        truths = write_longform_partition(
            out, seed, synth=synth, dialogue_s=90.0, monologue_s=40.0, noise_s=30.5
        )
        mono = next(t for t in truths if t.kind == "monologue")
        x, rate = sf.read(mono.path, dtype="int16")
        _write_atomic(out / SHORT_CLIP_NAME, x[: 6 * rate].astype(np.float32) / 32768.0, rate, "WAV")
        objects: dict[str, bytes] = {}
        for t in truths:
            objects[t.name] = t.path.read_bytes()
            if t.transcript:
                objects[Path(t.name).stem + ".txt"] = (t.transcript + "\n").encode()
        objects[SHORT_CLIP_NAME] = (out / SHORT_CLIP_NAME).read_bytes()
        for name in sorted(objects):
            store.write_bytes(f"{prefix}/{name}", objects[name])
    if marker:
        store.write_bytes(f"{prefix}/{MARKER_NAME}", b"")
    return [dataclasses.replace(t, path=Path(f"{prefix}/{t.name}")) for t in truths]
