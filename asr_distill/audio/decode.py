"""Decode any indexed clip to float32 samples at 16 kHz mono, blockwise, with bounded memory.

Backends: soundfile (libsndfile: WAV, FLAC, MP3, Ogg Vorbis/Opus, ...) first; PyAV (FFmpeg) for what
libsndfile cannot read (AAC/M4A/MP4 go to PyAV first) and as a fallback when libsndfile cannot open a
file. Resampling uses ``soxr.ResampleStream`` with quality ``"HQ"`` by default (libsoxr's high quality:
20-bit precision, ~95% pass-band, linear phase; ``"VHQ"`` is 28-bit and ~2x slower, which buys nothing
for 16 kHz ASR features). Its output does not depend on how the input is cut into blocks (checked).

What the decoder reports is what it really decoded, not what a header claims:

* ``frames`` counts decoded source frames. libsndfile reads a WAV whose data is cut short without error
  and an MP3 with a Xing header of 3 s yields whatever frames really decode; ``header_frames`` keeps the
  claim (the WAV ``data`` chunk size, the Xing/stream duration) so callers can detect truncation.
  (``SoundFile.blocks()`` must not be used for this: on a truncated MP3 it yields full-size blocks of
  stale buffer content; we read with ``SoundFile.read`` until it returns nothing.)
* NaN/Inf samples decode fine in libsndfile. They are counted in ``non_finite_samples`` and replaced by
  0 before the downmix and the resampler, so one bad sample cannot smear NaN over the whole output.

Mono downmix is the mean of the channels (summed channel by channel in a fixed order, then divided, so
the result is bit-identical on every machine).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from asr_distill.storage import Storage

TARGET_RATE = 16_000
DEFAULT_QUALITY = "HQ"
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
# Source frames per block: 64k frames (1.5 s at 44.1 kHz) keeps memory small and per-call overhead low.
BLOCK_FRAMES = 1 << 16

# Extensions / containers that libsndfile cannot read: go to PyAV first.
PYAV_FIRST = frozenset({"m4a", "mp4", "aac", "adts", "mov", "3gp", "webm", "mka", "wma", "asf", "amr"})

# Reason codes of :class:`DecodeError` (vocabulary shared with ``PROBE_ERRORS`` where it overlaps).
DECODE_ERRORS = {
    "read_error": "the object could not be read from storage",
    "empty_object": "the object has zero bytes",
    "unrecognised_format": "no decoder recognises the bytes (e.g. a text file named .wav)",
    "malformed_header": "a decoder recognised the format but could not open it (cut or inconsistent header)",
    "zero_channels": "the header declares no audio channels",
    "no_audio_data": "the file opens but holds no decodable audio frames (or no audio stream)",
    "decode_error": "the decoder failed while reading audio data",
    "internal_error": "an unexpected exception while decoding (a bug or resource exhaustion)",
    "worker_crashed": "the decoding process died on this clip (e.g. a crash inside a native decoder)",
}

AudioSource = str | os.PathLike[str] | bytes | BinaryIO


class DecodeError(Exception):
    """A clip could not be decoded; ``reason_code`` is a key of :data:`DECODE_ERRORS`."""

    def __init__(self, reason_code: str, detail: str) -> None:
        if reason_code not in DECODE_ERRORS:
            raise ValueError(f"unknown decode reason code {reason_code!r}")
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail

    def __reduce__(self):  # picklable across process pools
        return (DecodeError, (self.reason_code, self.detail))


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """One decoded block: ``source`` (frames, channels) float32 at the source rate, non-finite values
    already replaced by 0; ``peak``: max |sample| of ``source``; ``mono``: its contribution to the
    16 kHz mono output (may be empty)."""

    source: np.ndarray
    peak: float
    mono: np.ndarray


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """A whole clip decoded to mono float32 at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int
    frames: int  # source frames really decoded
    header_frames: int | None  # what the header claimed, when it claims anything
    non_finite_samples: int  # NaN/Inf source samples (over all channels), replaced by 0
    backend: str  # "soundfile" or "pyav"

    @property
    def duration_s(self) -> float:
        """Duration of what was really decoded."""
        return self.frames / self.source_rate

    @property
    def header_duration_s(self) -> float | None:
        return None if self.header_frames is None else self.header_frames / self.source_rate


# -- helpers ------------------------------------------------------------------------------------
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _wav_claimed_frames(fh: BinaryIO) -> int | None:
    """Frames the RIFF ``data`` chunk claims (None when unknown, streamed or RF64)."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align = None
    for _ in range(64):  # a WAV has a handful of chunks before 'data'
        hdr = fh.read(8)
        if len(hdr) < 8:
            return None
        cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if cid == b"fmt ":
            fmt = fh.read(min(size, 16))
            if len(fmt) >= 14:
                block_align = struct.unpack("<H", fmt[12:14])[0]
            fh.seek(size + (size & 1) - len(fmt), io.SEEK_CUR)
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        else:
            fh.seek(size + (size & 1), io.SEEK_CUR)
    return None


def _sf_reason(exc: Exception) -> str:
    msg = str(exc).lower()
    if "not recognised" in msg or "unknown format" in msg or "format not recognized" in msg:
        return "unrecognised_format"
    if "channel count is zero" in msg or "zero channels" in msg:
        return "zero_channels"
    return "malformed_header"


class _Opened:
    """A source opened for one decoding attempt (a path, or a seekable file object)."""

    def __init__(self, source: AudioSource) -> None:
        self._own: BinaryIO | None = None
        self.path: str | None = None
        self.fh: BinaryIO | None = None
        if isinstance(source, bytes | bytearray | memoryview):
            self._own = io.BytesIO(bytes(source))
            self.fh = self._own
        elif isinstance(source, str | os.PathLike):
            self.path = os.fspath(source)
        else:
            self.fh = source
        self.size = self._size()

    def _size(self) -> int:
        try:
            if self.path is not None:
                return os.stat(self.path).st_size
            assert self.fh is not None
            pos = self.fh.seek(0, io.SEEK_END)
            self.fh.seek(0)
            return pos
        except FileNotFoundError as exc:
            raise DecodeError("read_error", f"{self.path}: no such file") from exc
        except (OSError, ValueError) as exc:
            raise DecodeError("read_error", f"cannot stat or seek the source: {exc}") from exc

    def target(self) -> str | BinaryIO:
        if self.path is not None:
            return self.path
        assert self.fh is not None
        self.fh.seek(0)
        return self.fh

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


class _SoundfileReader:
    backend = "soundfile"

    def __init__(self, opened: _Opened, block_frames: int) -> None:
        try:
            self._f = sf.SoundFile(opened.target())
        except sf.LibsndfileError as exc:
            raise DecodeError(_sf_reason(exc), f"libsndfile: {exc}") from exc
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DecodeError("malformed_header", f"libsndfile: {exc}") from exc
        except OSError as exc:
            raise DecodeError("read_error", f"libsndfile: {exc}") from exc
        f = self._f
        self.block_frames = block_frames
        self.rate = int(f.samplerate)
        self.channels = int(f.channels)
        if self.channels <= 0:
            self.close()
            raise DecodeError("zero_channels", "the header declares no audio channels")
        if self.rate <= 0:
            self.close()
            raise DecodeError("malformed_header", f"invalid sample rate {f.samplerate}")
        self.full_scale = 127.0 / 128.0 if f.subtype in ("PCM_S8", "PCM_U8") else 1.0
        claimed = f.frames if 0 < f.frames < (1 << 62) else None
        if f.format in ("WAV", "WAVEX"):
            wav_claim = self._wav_claim(opened)
            if wav_claim is not None:
                claimed = wav_claim if claimed is None else max(claimed, wav_claim)
        self.header_frames = claimed

    @staticmethod
    def _wav_claim(opened: _Opened) -> int | None:
        try:
            if opened.path is not None:
                with open(opened.path, "rb") as fh:
                    return _wav_claimed_frames(fh)
            assert opened.fh is not None
            pos = opened.fh.tell()
            try:
                return _wav_claimed_frames(opened.fh)
            finally:
                opened.fh.seek(pos)
        except (OSError, struct.error, ValueError):
            return None

    def blocks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                block = self._f.read(self.block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                raise DecodeError("decode_error", f"libsndfile: {exc}") from exc
            if len(block) == 0:
                return
            yield block

    def close(self) -> None:
        self._f.close()


def _default_layout(channels: int) -> str:
    """FFmpeg's default layout name for a channel count (``"mono"``, ``"stereo"``, ``"5.1"``, ...)."""
    names = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
    if channels not in names:
        raise DecodeError("malformed_header", f"unsupported channel count {channels}")
    return names[channels]


class _PyAVReader:
    backend = "pyav"

    def __init__(self, opened: _Opened, block_frames: int) -> None:
        import av  # imported lazily: most clips never need FFmpeg

        self._av = av
        self.block_frames = block_frames
        try:
            self._c = av.open(opened.target(), mode="r", metadata_errors="ignore")
        except av.error.InvalidDataError as exc:
            raise DecodeError("unrecognised_format", f"ffmpeg: {exc}") from exc
        except av.FFmpegError as exc:
            raise DecodeError("malformed_header", f"ffmpeg: {exc}") from exc
        except OSError as exc:
            raise DecodeError("read_error", f"ffmpeg: {exc}") from exc
        except Exception as exc:  # PyAV raises assorted errors on garbage input
            raise DecodeError("malformed_header", f"ffmpeg: {type(exc).__name__}: {exc}") from exc
        try:
            streams = self._c.streams.audio
            if not streams:
                raise DecodeError("no_audio_data", "the container has no audio stream")
            self._s = streams[0]
            ctx = self._s.codec_context
            self.rate = int(self._s.rate or ctx.sample_rate or 0)
            self.channels = int(ctx.channels or 0)
            if self.channels <= 0:
                raise DecodeError("zero_channels", "the audio stream declares no channels")
            if self.rate <= 0:
                raise DecodeError("malformed_header", "the audio stream declares no sample rate")
            # Output layout fixed to the declared channel count: a decoder that emits another count
            # (e.g. HE-AAC parametric stereo declared mono) is remixed instead of misread.
            layout = ctx.layout
            self._layout = layout if layout.nb_channels == self.channels else _default_layout(self.channels)
        except BaseException:
            self._c.close()
            raise
        self.full_scale = 1.0
        self.header_frames = self._claimed()

    def _claimed(self) -> int | None:
        s = self._s
        if s.duration and s.time_base:
            return round(float(s.duration * s.time_base) * self.rate)
        if self._c.duration:
            return round(self._c.duration / 1_000_000 * self.rate)
        return None

    def _frames(self) -> Iterator[np.ndarray]:
        av = self._av
        resampler = None
        try:
            for packet in self._c.demux(self._s):
                for frame in packet.decode():
                    if resampler is None:  # fixed layout and rate: mid-stream changes get converted
                        resampler = av.AudioResampler(format="flt", layout=self._layout, rate=self.rate)
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().reshape(-1, self.channels)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield out.to_ndarray().reshape(-1, self.channels)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError("decode_error", f"ffmpeg: {type(exc).__name__}: {exc}") from exc

    def blocks(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        count = 0
        for arr in self._frames():
            if len(arr) == 0:
                continue
            pending.append(arr)
            count += len(arr)
            if count >= self.block_frames:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, count = [], 0
        if pending:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]

    def close(self) -> None:
        self._c.close()


def _downmix(block: np.ndarray) -> np.ndarray:
    channels = block.shape[1]
    if channels == 1:
        return np.ascontiguousarray(block[:, 0])
    acc = np.add(block[:, 0], block[:, 1])
    for c in range(2, channels):
        acc += block[:, c]
    acc /= np.float32(channels)
    return acc


def _sanitize(block: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Replace NaN/Inf by 0; return the block, how many samples were replaced, and its peak |x|."""
    hi, lo = float(block.max()), float(block.min())  # NaN and Inf propagate into max/min
    if math.isfinite(hi) and math.isfinite(lo):
        return block, 0, max(hi, -lo)
    bad = ~np.isfinite(block)
    n = int(np.count_nonzero(bad))
    if not block.flags.writeable:
        block = block.copy()
    block[bad] = 0.0
    return block, n, max(float(block.max()), -float(block.min()))


class AudioDecoder:
    """An open clip; iterate it once for :class:`AudioBlock` items. Use as a context manager.

    After iteration, ``frames`` and ``non_finite_samples`` hold the totals. Iteration raises
    :class:`DecodeError` (``no_audio_data`` when nothing decoded, ``decode_error`` mid-stream).
    """

    def __init__(
        self, reader: _SoundfileReader | _PyAVReader, opened: _Opened, target_rate: int, quality: str
    ):
        self._reader = reader
        self._opened = opened
        self.backend = reader.backend
        self.source_rate = reader.rate
        self.channels = reader.channels
        self.header_frames = reader.header_frames
        self.full_scale = reader.full_scale
        self.target_rate = target_rate
        self.quality = quality
        self.frames = 0
        self.non_finite_samples = 0
        self._used = False

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._opened.close()

    def __iter__(self) -> Iterator[AudioBlock]:
        if self._used:
            raise RuntimeError("an AudioDecoder can be iterated only once")
        self._used = True
        stream = None
        if self.source_rate != self.target_rate:
            stream = soxr.ResampleStream(
                self.source_rate, self.target_rate, 1, dtype="float32", quality=self.quality
            )
        for block in self._reader.blocks():
            block, bad, peak = _sanitize(block)
            self.non_finite_samples += bad
            self.frames += len(block)
            mono = _downmix(block)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=False)
            yield AudioBlock(source=block, peak=peak, mono=mono)
        if self.frames == 0:
            raise DecodeError("no_audio_data", f"{self.backend}: no audio frames decoded")
        if stream is not None:
            tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            yield AudioBlock(source=np.zeros((0, self.channels), dtype=np.float32), peak=0.0, mono=tail)


def open_decoder(
    source: AudioSource,
    *,
    format_hint: str | None = None,
    target_rate: int = TARGET_RATE,
    quality: str = DEFAULT_QUALITY,
    block_frames: int = BLOCK_FRAMES,
) -> AudioDecoder:
    """Open ``source`` (a path, bytes, or a seekable binary file) for blockwise decoding.

    ``format_hint`` is the file extension or container name (``"m4a"`` routes to PyAV first).
    Raises :class:`DecodeError` when no backend can open it.
    """
    if quality not in RESAMPLE_QUALITIES:
        raise ValueError(f"unknown soxr quality {quality!r}; use one of {RESAMPLE_QUALITIES}")
    if target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    opened = _Opened(source)
    if opened.size == 0:
        opened.close()
        raise DecodeError("empty_object", "the source has zero bytes")
    hint = (format_hint or "").lower().lstrip(".")
    if not hint and opened.path is not None:
        hint = Path(opened.path).suffix.lower().lstrip(".")
    order: tuple[type[_SoundfileReader] | type[_PyAVReader], ...] = (
        (_PyAVReader, _SoundfileReader) if hint in PYAV_FIRST else (_SoundfileReader, _PyAVReader)
    )
    errors: list[DecodeError] = []
    for backend in order:
        try:
            reader = backend(opened, block_frames)
        except DecodeError as exc:
            errors.append(exc)
            if exc.reason_code in ("read_error", "empty_object"):
                break
            continue
        return AudioDecoder(reader, opened, target_rate, quality)
    opened.close()
    first = errors[0]
    detail = "; ".join(f"{b.backend}: {e.detail}" for b, e in zip(order, errors, strict=False))
    raise DecodeError(first.reason_code, detail)


def decode(
    source: AudioSource,
    *,
    format_hint: str | None = None,
    target_rate: int = TARGET_RATE,
    quality: str = DEFAULT_QUALITY,
    block_frames: int = BLOCK_FRAMES,
) -> DecodedAudio:
    """Decode a whole clip to mono float32 at ``target_rate`` (16 kHz by default).

    Memory is the output (4 bytes per output sample) plus one block; for very long files iterate
    :func:`open_decoder` instead.
    """
    with open_decoder(
        source, format_hint=format_hint, target_rate=target_rate, quality=quality, block_frames=block_frames
    ) as dec:
        parts = [b.mono for b in dec if len(b.mono)]
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return DecodedAudio(
            samples=samples,
            sample_rate=target_rate,
            source_rate=dec.source_rate,
            channels=dec.channels,
            frames=dec.frames,
            header_frames=dec.header_frames,
            non_finite_samples=dec.non_finite_samples,
            backend=dec.backend,
        )


def decode_object(store: Storage, key: str, **kwargs: Any) -> DecodedAudio:
    """Decode object ``key`` of a store (zero-copy for local stores, else via a temporary local copy).

    Keyword arguments are those of :func:`decode`; ``format_hint`` defaults to the key's extension.
    """
    suffix = Path(key).suffix
    kwargs.setdefault("format_hint", suffix.lower().lstrip("."))
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(store.local_copy(key, suffix=suffix))
        except Exception as exc:
            raise DecodeError("read_error", f"{key}: {type(exc).__name__}: {exc}") from exc
        return decode(path, **kwargs)
