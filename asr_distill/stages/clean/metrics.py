"""Per-clip measurements, computed block by block while a clip decodes (memory stays flat).

Where each metric is measured:

* peak, clipping and non-finite counts: on the *source* samples (all channels, source rate), because
  resampling and downmixing smooth away exactly what they look for;
* RMS level, leading/trailing silence and the content hash: on the 16 kHz mono signal the models see.

Content hash (``pcm_blake3``): BLAKE3 (:mod:`asr_distill.hashing`) of the 16 kHz mono signal as little-endian int16,
``np.rint(np.clip(x * 32768, -32768, 32767)).astype("<i2")`` (round half to even; NaN/Inf were
already replaced by 0). The 32768 scale is libsndfile's own int16 <-> float convention, so a 16-bit
16 kHz mono source hashes exactly its PCM samples. Integer quantisation makes the representation
independent of sub-LSB float noise and half the bytes of float32; every step is element-wise IEEE
arithmetic, so the hash is identical across runs, processes and block sizes. Across machines it is
identical whenever the decoder and libsoxr produce the same floats (always for lossless sources
already at 16 kHz, which are not resampled; for resampled or lossy sources it relies on the same
library builds, since SIMD code paths may differ in the last bit). Reproduce it with
``asr_distill.hashing.pcm_hex(pcm16(decode(path).samples))`` (or ``b3sum`` over those bytes).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np

from asr_distill.hashing import PcmHasher
from asr_distill.stages.clean.config import CleanConfig

DB_FLOOR = -200.0  # level reported for all-zero audio (log of zero)


def to_dbfs(amplitude: float) -> float:
    return DB_FLOOR if amplitude <= 0 else max(DB_FLOOR, 20.0 * math.log10(amplitude))


def pcm16(mono: np.ndarray) -> np.ndarray:
    """The deterministic int16 representation the content hash is computed on:
    ``rint(clip(mono * 32768, -32768, 32767))`` as little-endian int16."""
    y = np.multiply(mono, np.float32(32768), dtype=np.float32)
    np.clip(y, -32768.0, 32767.0, out=y)
    np.rint(y, out=y)
    return y.astype("<i2")


class SignalAnalyzer:
    """Feed source blocks and 16 kHz mono blocks; ``result()`` gives the metrics."""

    def __init__(self, config: CleanConfig, channels: int, full_scale: float = 1.0) -> None:
        self.cfg = config
        self.channels = channels
        self.clip_threshold = np.float32(config.clip_level * full_scale)
        self.full_scale = full_scale
        # source side
        self.source_samples = 0
        self.peak = 0.0
        self.clipped_samples = 0
        self.clip_runs = 0
        self._carry = [0] * channels  # open clipped run length per channel at the block edge
        # mono side
        self.num_samples = 0
        self.sumsq = 0.0
        self._pcm_hash = PcmHasher()
        self._frame = max(1, round(config.target_rate * config.silence_frame_s))
        self._silence_power = 10.0 ** (config.silence_dbfs / 10.0)
        self._left_n = 0  # samples of the current, incomplete silence frame
        self._left_energy = 0.0
        self._f32: np.ndarray | None = None  # work buffers reused across blocks (no page faults)
        self._i16: np.ndarray | None = None
        self.leading = 0  # samples
        self._leading_open = True
        self.trailing = 0  # samples

    # -- source samples ---------------------------------------------------------------------
    def _close_run(self, c: int) -> None:
        n = self._carry[c]
        if n >= self.cfg.clip_min_run:
            self.clipped_samples += n
            self.clip_runs += 1
        self._carry[c] = 0

    def add_source(self, block: np.ndarray, peak: float | None = None) -> None:
        """A (frames, channels) block at the source rate; ``peak`` is its max |x| when already known."""
        n = len(block)
        if n == 0:
            return
        self.source_samples += block.size
        if peak is None:
            peak = max(float(block.max()), -float(block.min()))
        self.peak = max(self.peak, peak)
        if peak < self.clip_threshold:
            for c in range(self.channels):
                if self._carry[c]:
                    self._close_run(c)
            return
        mask = np.abs(block) >= self.clip_threshold
        for c in range(self.channels):
            m = mask[:, c]
            if not m.any():
                if self._carry[c]:
                    self._close_run(c)
                continue
            edges = np.diff(m.view(np.int8), prepend=np.int8(0), append=np.int8(0))
            starts = np.flatnonzero(edges == 1)
            ends = np.flatnonzero(edges == -1)
            lengths = ends - starts
            if self._carry[c]:
                if starts[0] == 0:
                    lengths[0] += self._carry[c]
                    self._carry[c] = 0
                else:
                    self._close_run(c)
            if ends[-1] == n:  # the last run reaches the block edge: it may continue
                self._carry[c] = int(lengths[-1])
                lengths = lengths[:-1]
            long_runs = lengths[lengths >= self.cfg.clip_min_run]
            self.clipped_samples += int(long_runs.sum())
            self.clip_runs += len(long_runs)

    # -- 16 kHz mono ------------------------------------------------------------------------
    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._f32 is None or self._i16 is None or len(self._f32) < n:
            self._f32 = np.empty(n, dtype=np.float32)
            self._i16 = np.empty(n, dtype="<i2")
        return self._f32[:n], self._i16[:n]

    def add_mono(self, mono: np.ndarray) -> None:
        n = len(mono)
        if n == 0:
            return
        self.num_samples += n
        f32, i16 = self._buffers(n)
        # the content hash: same values as pcm16(mono), computed in reused buffers
        np.multiply(mono, np.float32(32768), out=f32)
        np.clip(f32, -32768.0, 32767.0, out=f32)
        np.rint(f32, out=f32)
        np.copyto(i16, f32, casting="unsafe")
        self._pcm_hash.update(i16)
        # energies of 10 ms frames, continuing the incomplete frame of the previous block
        size = self._frame
        start = 0
        if self._left_n:
            start = min(size - self._left_n, n)
            head = mono[:start]
            self._left_energy += float(np.dot(head, head))
            self._left_n += start
            if self._left_n == size:
                self._add_energies(np.array([self._left_energy]))
                self._left_n, self._left_energy = 0, 0.0
        k = (n - start) // size
        if k:
            seg = mono[start : start + k * size]
            sq = np.multiply(seg, seg, out=f32[: k * size])
            self._add_energies(sq.reshape(k, size).sum(axis=1))
        rest = mono[start + k * size :]
        if len(rest):
            self._left_energy += float(np.dot(rest, rest))
            self._left_n += len(rest)

    def _add_energies(self, energy: np.ndarray) -> None:
        self.sumsq += float(energy.sum(dtype=np.float64))
        self._frames(energy >= self._silence_power * self._frame)

    def _frames(self, loud: np.ndarray, frame_len: int | None = None) -> None:
        size = frame_len or self._frame
        k = len(loud)
        idx = np.flatnonzero(loud)
        if len(idx) == 0:
            if self._leading_open:
                self.leading += k * size
            self.trailing += k * size
            return
        if self._leading_open:
            self.leading += int(idx[0]) * size
            self._leading_open = False
        self.trailing = (k - 1 - int(idx[-1])) * size

    def result(self, rate: int) -> dict[str, float | int]:
        if self._left_n:  # the last partial frame counts with its own length
            self.sumsq += self._left_energy
            self._frames(np.array([self._left_energy >= self._silence_power * self._left_n]), self._left_n)
            self._left_n, self._left_energy = 0, 0.0
        for c in range(self.channels):
            self._close_run(c)
        rms = math.sqrt(self.sumsq / self.num_samples) if self.num_samples else 0.0
        return {
            "num_samples": self.num_samples,
            "rms_dbfs": to_dbfs(rms),
            "peak_dbfs": to_dbfs(self.peak),
            "clipped_samples": self.clipped_samples,
            "clipped_fraction": self.clipped_samples / self.source_samples if self.source_samples else 0.0,
            "leading_silence_s": self.leading / rate,
            "trailing_silence_s": self.trailing / rate,
            "pcm_blake3": self._pcm_hash.hexdigest(),
        }


# -- text -----------------------------------------------------------------------------------
def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0x3400 <= o <= 0x4DBF  # CJK ext A
        or 0x4E00 <= o <= 0x9FFF  # CJK unified
        or 0xAC00 <= o <= 0xD7AF  # hangul syllables
        or 0x1100 <= o <= 0x11FF  # hangul jamo
        or 0xF900 <= o <= 0xFAFF  # CJK compatibility
        or 0x20000 <= o <= 0x2FA1F  # CJK ext B.. and compatibility supplement
    )


def _is_label_char(ch: str) -> bool:
    return not ch.isspace() and not unicodedata.category(ch).startswith("P")


@dataclass(frozen=True, slots=True)
class TextStats:
    chars: int  # characters of the whitespace-collapsed text (for chars/s)
    tokens: int  # label length estimate
    repeats: int  # adjacent identical tokens (CTC needs a blank between them)


def text_stats(text: str, language: str, config: CleanConfig) -> TextStats:
    """Label length estimate of ``text`` in ``language`` (a primary subtag).

    Character languages (``config.char_languages``): one token per non-space, non-punctuation
    character; repeats are adjacent identical characters. Other languages: words are split on
    whitespace and stripped of punctuation; CJK characters inside them count one token each (a
    mislabelled language must not hide a CJK transcript), the rest of each word contributes to a BPE
    estimate ``max(words, ceil(chars / chars_per_bpe_token))``; repeats are adjacent identical words
    (case-folded).
    """
    collapsed = " ".join(text.split())
    chars = len(collapsed)
    if language in config.char_languages:
        units = [c for c in collapsed if _is_label_char(c)]
        repeats = sum(1 for a, b in zip(units, units[1:], strict=False) if a == b)
        return TextStats(chars, len(units), repeats)
    cjk_units: list[str] = []
    words: list[str] = []
    for raw in collapsed.split(" "):
        word = "".join(c for c in raw if _is_label_char(c)).casefold()
        if not word:
            continue
        rest = "".join(c for c in word if not _is_cjk(c))
        cjk_units.extend(c for c in word if _is_cjk(c))
        if rest:
            words.append(rest)
    word_chars = len(" ".join(words))
    bpe = max(len(words), math.ceil(word_chars / config.chars_per_bpe_token)) if words else 0
    repeats = sum(1 for a, b in zip(words, words[1:], strict=False) if a == b)
    repeats += sum(1 for a, b in zip(cjk_units, cjk_units[1:], strict=False) if a == b)
    return TextStats(chars, bpe + len(cjk_units), repeats)


def feature_frames(num_samples: int, rate: int, frame_rate: int) -> int:
    """Feature frames at ``frame_rate`` for ``num_samples`` (lhotse's rounding: ``(n + hop/2) // hop``)."""
    hop = rate // frame_rate
    return (num_samples + hop // 2) // hop


def subsampled_frames(frames: int) -> int:
    """Frames after icefall zipformer's 4x subsampling: ``((frames - 7) // 2 + 1) // 2`` (>= 0)."""
    return max(0, ((frames - 7) // 2 + 1) // 2) if frames >= 7 else 0
