"""Silero VAD v6 speech probabilities, streamed in bounded blocks through onnxruntime.

The model is the ONNX file that the pinned ``faster-whisper`` wheel ships
(``faster_whisper/assets/silero_vad_v6.onnx``). It is located with :func:`importlib.util.find_spec`,
which finds the package directory without importing it (importing faster-whisper pulls ctranslate2),
and its bytes are checked against :data:`MODEL_SHA256` before onnxruntime sees them: the session is
built from the very bytes that were hashed. Nothing touches the network.

The model (as exported in that wheel) takes a batch of ``seq_len`` frames of 576 samples each (the 64
last samples of the previous 512-sample frame, then the 512 samples of this frame) and the LSTM state
``h``/``c`` (1, 1, 128); it returns one speech probability per frame and the state after the last frame.
The frames of one call run through the LSTM in order, so cutting the signal into blocks and carrying
``h``, ``c`` and the 64-sample context from one block to the next yields the same probabilities, bit for
bit, as one call over the whole recording (checked in the tests), with memory bounded by the block.

Input convention: the VAD sees the signal the pipeline stores, i.e. the 16 kHz mono signal rounded to
int16 (``round(x * 32768)`` clipped to int16) and divided by 32768. Float input is rounded here; int16
input is scaled. The final partial frame of a recording is zero-padded to 512 samples, so a recording
of ``n`` samples gets ``ceil(n / 512)`` probabilities; frame ``i`` covers samples
``[512 * i, min(512 * (i + 1), n))``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_distill.audio.decode import (
    BLOCK_FRAMES,
    DEFAULT_QUALITY,
    TARGET_RATE,
    AudioSource,
    open_decoder,
)

SAMPLE_RATE = TARGET_RATE  # Silero runs at 16 kHz; the decoder's target rate
FRAME_SAMPLES = 512  # 32 ms at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous frame prepended to each frame
STATE_SHAPE = (1, 1, 128)
MODEL_PACKAGE = "faster_whisper"
MODEL_RELPATH = ("assets", "silero_vad_v6.onnx")
# sha256 of silero_vad_v6.onnx in faster-whisper==1.2.1 (requirements.lock).
MODEL_SHA256 = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"
MODEL_NAME = "silero_vad_v6"
# Samples per onnxruntime call: 60 s (1875 frames, ~4.3 MB of model input).
DEFAULT_BLOCK_SAMPLES = 60 * SAMPLE_RATE
assert DEFAULT_BLOCK_SAMPLES % FRAME_SAMPLES == 0


class VadModelError(RuntimeError):
    """The VAD model file is missing, unreadable, or not the pinned file."""


def model_path() -> Path:
    """Path of the Silero v6 ONNX file inside the installed faster-whisper package (not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VadModelError(
            f"the {MODEL_PACKAGE} package is not installed: it ships the Silero VAD model "
            "(install the project's requirements.lock)"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_RELPATH)


def load_model_bytes(path: str | Path | None = None, expected_sha256: str = MODEL_SHA256) -> bytes:
    """The model file's bytes, after checking their sha256 against ``expected_sha256``."""
    p = Path(path) if path is not None else model_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise VadModelError(f"Silero VAD model not found at {p}") from exc
    except OSError as exc:
        raise VadModelError(f"Silero VAD model at {p} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise VadModelError(
            f"Silero VAD model at {p} has sha256 {digest}, expected {expected_sha256}: "
            "the file differs from the pinned faster-whisper wheel's (reinstall requirements.lock, "
            "or update MODEL_SHA256 deliberately, which changes every segmentation fingerprint)"
        )
    return data


def to_int16(samples: np.ndarray) -> np.ndarray:
    """The int16 signal the pipeline stores for float samples in [-1, 1]: ``round(x * 32768)``,
    clipped to the int16 range (int16 input is returned as is). Non-finite input is an error."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D mono signal, got shape {x.shape}")
    if x.dtype == np.int16:
        return x
    q = np.asarray(x, dtype=np.float32) * np.float32(32768.0)  # exact: a power-of-two scale
    if not np.isfinite(q).all():  # +/-1e38 * 32768 overflows to inf: caught here too
        raise ValueError("the signal holds NaN or Inf samples")
    np.rint(q, out=q)
    np.clip(q, -32768.0, 32767.0, out=q)
    return q.astype(np.int16)


def to_vad_input(samples: np.ndarray) -> np.ndarray:
    """The int16-rounded signal as float32 in [-1, 1): the stored signal scaled by 1/32768."""
    return to_int16(samples).astype(np.float32) * np.float32(1.0 / 32768.0)


class SileroVad:
    """One Silero VAD session (one intra-op and one inter-op thread), streaming over recordings.

    Push API: :meth:`feed` blocks of a recording in order, then :meth:`flush` once; each returns the
    probabilities of the frames completed so far. :meth:`reset` starts a new recording.
    Pull API: :meth:`probabilities` does reset, feed and flush over an iterable of blocks.
    Blocks may have any length; the model state and the 64-sample context cross block boundaries.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        expected_sha256: str = MODEL_SHA256,
        max_frames_per_call: int = DEFAULT_BLOCK_SAMPLES // FRAME_SAMPLES,
    ) -> None:
        import onnxruntime as ort  # lazy: only workers that segment need it

        if max_frames_per_call < 1:
            raise ValueError("max_frames_per_call must be >= 1")
        data = load_model_bytes(path, expected_sha256)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VadModelError(f"onnxruntime cannot load the Silero VAD model: {exc}") from exc
        self.sha256 = expected_sha256
        self.onnxruntime_version = str(ort.__version__)
        self.max_frames_per_call = int(max_frames_per_call)
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current recording: zero LSTM state and context, no pending samples."""
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples_seen = 0
        self.frames_done = 0

    # -- push API ---------------------------------------------------------------------------
    def feed(self, block: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames completed by ``block`` (float32, possibly empty)."""
        x = to_vad_input(block)
        self.samples_seen += len(x)
        if len(self._pending):
            x = np.concatenate([self._pending, x])
        n_frames = len(x) // FRAME_SAMPLES
        self._pending = x[n_frames * FRAME_SAMPLES :].copy()
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        return self._run(x[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES))

    def flush(self) -> np.ndarray:
        """Probability of the final partial frame (zero-padded), if any; the recording is complete."""
        if not len(self._pending):
            return np.zeros(0, dtype=np.float32)
        frame = np.zeros((1, FRAME_SAMPLES), dtype=np.float32)
        frame[0, : len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self._run(frame)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(frames), self.max_frames_per_call):
            chunk = frames[i : i + self.max_frames_per_call]
            batch = np.empty((len(chunk), CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
            batch[:, CONTEXT_SAMPLES:] = chunk
            batch[0, :CONTEXT_SAMPLES] = self._context
            batch[1:, :CONTEXT_SAMPLES] = chunk[:-1, -CONTEXT_SAMPLES:]
            self._context = chunk[-1, -CONTEXT_SAMPLES:].copy()
            probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
            outs.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        self.frames_done += len(frames)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    # -- pull API ---------------------------------------------------------------------------
    def probabilities(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stream one recording: reset, then yield the probabilities completed by each block, and
        those of the zero-padded final partial frame last (empty arrays are not yielded)."""
        self.reset()
        for block in blocks:
            out = self.feed(block)
            if len(out):
                yield out
        tail = self.flush()
        if len(tail):
            yield tail

    def whole(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of a whole in-memory signal (one onnxruntime call when it fits the batch)."""
        parts = list(self.probabilities([samples]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def n_frames(n_samples: int) -> int:
    """Number of VAD frames (probabilities) of a recording of ``n_samples`` 16 kHz samples."""
    return -(-int(n_samples) // FRAME_SAMPLES)


@dataclass(frozen=True, slots=True)
class FileVad:
    """VAD of one decoded file: per-frame probabilities and what the decoder really decoded."""

    probabilities: np.ndarray  # float32, n_frames(n_samples) values
    n_samples: int  # 16 kHz mono samples (the int16 signal the VAD saw)
    source_rate: int
    channels: int
    frames: int  # source frames decoded
    header_frames: int | None
    non_finite_samples: int
    backend: str

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


def vad_file(
    source: AudioSource,
    vad: SileroVad | None = None,
    *,
    format_hint: str | None = None,
    quality: str = DEFAULT_QUALITY,
    block_samples: int = DEFAULT_BLOCK_SAMPLES,
    decode_block_frames: int = BLOCK_FRAMES,
    on_block: Callable[[np.ndarray], None] | None = None,
) -> FileVad:
    """Decode ``source`` blockwise to 16 kHz mono (:func:`~asr_distill.audio.decode.open_decoder`),
    round it to int16, and run the VAD over ``block_samples``-sample blocks.

    Memory: one decode block, one VAD block and the probabilities (4 bytes per 32 ms: 5.4 MB for 12 h),
    whatever the recording's length. ``on_block`` receives each int16 block in order (e.g. to spill
    the signal to disk so the recording is decoded only once). Raises
    :class:`~asr_distill.audio.decode.DecodeError` when the file cannot be decoded.
    """
    if block_samples < 1:
        raise ValueError("block_samples must be >= 1")
    vad = vad if vad is not None else SileroVad()
    vad.reset()
    buf = np.empty(block_samples, dtype=np.int16)
    fill = 0
    n_samples = 0
    parts: list[np.ndarray] = []

    def emit(block: np.ndarray) -> None:
        if on_block is not None:
            on_block(block)
        probs = vad.feed(block)
        if len(probs):
            parts.append(probs)

    with open_decoder(
        source,
        format_hint=format_hint,
        target_rate=SAMPLE_RATE,
        quality=quality,
        block_frames=decode_block_frames,
    ) as dec:
        for item in dec:
            mono = to_int16(item.mono) if len(item.mono) else np.zeros(0, dtype=np.int16)
            n_samples += len(mono)
            pos = 0
            while pos < len(mono):
                take = min(block_samples - fill, len(mono) - pos)
                buf[fill : fill + take] = mono[pos : pos + take]
                fill += take
                pos += take
                if fill == block_samples:
                    emit(buf.copy())
                    fill = 0
        if fill:
            emit(buf[:fill].copy())
        tail = vad.flush()
        if len(tail):
            parts.append(tail)
        probs = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return FileVad(
            probabilities=probs,
            n_samples=n_samples,
            source_rate=dec.source_rate,
            channels=dec.channels,
            frames=dec.frames,
            header_frames=dec.header_frames,
            non_finite_samples=dec.non_finite_samples,
            backend=dec.backend,
        )
