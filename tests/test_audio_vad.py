"""Silero VAD streaming: bit-identical to the whole-array call, pinned model, no network, no faster-whisper import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from asr_distill.audio import vad as vad_mod
from asr_distill.audio.decode import decode
from asr_distill.audio.vad import (
    FRAME_SAMPLES,
    MODEL_SHA256,
    SileroVad,
    VadModelError,
    model_path,
    n_frames,
    to_int16,
    to_vad_input,
    vad_file,
)
from asr_distill.demo.corpus import SYNTH_RATE, Synthesizer, Voice

RATE = 16_000


@pytest.fixture(scope="module")
def signal_3min() -> np.ndarray:
    """~3 min at 16 kHz: espeak-ng sentences separated by silences, over a faint noise floor, plus a tone."""
    import soxr

    synth = Synthesizer(use_flite=False)
    rng = np.random.default_rng(7)
    sentences = [
        "The quiet river near the old town carried twelve baskets this morning.",
        "Could you bring the heavy camera to the north station before lunch?",
        "Nobody expected the small engine to repair so many bridges.",
        "Yes, I think four tickets should be enough for the meeting.",
    ]
    voices = [Voice("espeak-ng", "en-us", 160, 50), Voice("espeak-ng", "en-gb-x-rp", 175, 40)]
    utts = [
        soxr.resample(synth.synthesize(s, voices[i % 2]), SYNTH_RATE, RATE).astype(np.float32)
        for i, s in enumerate(sentences)
    ]
    parts, total = [], 0
    i = 0
    while total < 180 * RATE:
        gap = np.zeros(int(rng.uniform(0.2, 3.0) * RATE), np.float32)
        utt = utts[i % len(utts)] * np.float32(rng.uniform(0.2, 0.8))
        parts += [gap, utt]
        total += len(gap) + len(utt)
        i += 1
    x = np.concatenate(parts)[: 180 * RATE + 321]  # not a multiple of 512
    t = np.arange(len(x)) / RATE
    x = x + (rng.standard_normal(len(x)) * 1e-3).astype(np.float32)
    x[60 * RATE : 70 * RATE] += (0.2 * np.sin(2 * np.pi * 440 * t[: 10 * RATE])).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_streaming_equals_whole_array_bit_for_bit(signal_3min: np.ndarray, vad: SileroVad) -> None:
    x = signal_3min
    whole_vad = SileroVad(max_frames_per_call=10**9)  # one onnxruntime call over the whole recording
    whole = whole_vad.whole(x)
    assert whole.dtype == np.float32 and len(whole) == n_frames(len(x))
    assert whole.max() > 0.9 and whole.min() < 0.1  # real speech and real silence in the signal
    for block in (60 * RATE, 7 * RATE + 5, 100_003):
        streamed = np.concatenate(list(vad.probabilities(x[i : i + block] for i in range(0, len(x), block))))
        assert np.array_equal(streamed, whole), f"block {block}"
    # blocks shorter than a frame (pending samples carried), on a 20 s prefix
    head = x[: 20 * RATE + 77]
    tiny = np.concatenate(list(vad.probabilities(head[i : i + 511] for i in range(0, len(head), 511))))
    assert np.array_equal(tiny, whole_vad.whole(head))
    assert np.array_equal(tiny[:-1], whole[: len(tiny) - 1])  # only the zero-padded last frame differs
    # push API with a reset in between gives the same again (state does not leak across recordings)
    vad.reset()
    pushed = np.concatenate([vad.feed(x[:12345]), vad.feed(x[12345:]), vad.flush()])
    assert np.array_equal(pushed, whole)


def test_matches_faster_whispers_own_call(signal_3min: np.ndarray, vad: SileroVad) -> None:
    """The reference implementation in the pinned wheel gives the same numbers (it zero-pads one extra
    frame when the length is a multiple of 512, hence the slice)."""
    from faster_whisper.vad import SileroVADModel

    q = to_vad_input(signal_3min)
    padded = np.pad(q, (0, FRAME_SAMPLES - len(q) % FRAME_SAMPLES))
    ref = np.asarray(SileroVADModel(str(model_path()))(padded)).reshape(-1)
    ours = vad.whole(signal_3min)
    assert np.array_equal(ref[: len(ours)], ours)


def test_vad_file_streams_the_decoded_file(tmp_path, signal_3min: np.ndarray, vad: SileroVad) -> None:
    """A 44.1 kHz stereo FLAC: the streamed decode + VAD equals the VAD of the whole decoded signal."""
    import soxr

    x44 = soxr.resample(signal_3min[: 95 * RATE], RATE, 44_100).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, np.stack([x44, 0.5 * x44], axis=1), 44_100, subtype="PCM_16")
    blocks: list[np.ndarray] = []
    res = vad_file(path, vad, block_samples=30 * RATE, on_block=blocks.append)
    dec = decode(path)
    assert res.n_samples == len(dec.samples) and res.source_rate == 44_100 and res.channels == 2
    assert len(res.probabilities) == n_frames(res.n_samples)
    spilled = np.concatenate(blocks)
    assert spilled.dtype == np.int16 and np.array_equal(spilled, to_int16(dec.samples))
    assert max(len(b) for b in blocks) <= 30 * RATE
    assert np.array_equal(res.probabilities, vad.whole(dec.samples))


def test_int16_rounding() -> None:
    x = np.array([0.0, 1.0, -1.0, 2.0, 0.5 / 32768, 1.5 / 32768, -0.7 / 32768], np.float32)
    assert to_int16(x).tolist() == [0, 32767, -32768, 32767, 0, 2, -1]
    assert np.array_equal(to_vad_input(to_int16(x)), to_vad_input(x))
    with pytest.raises(ValueError, match="NaN or Inf"):
        to_int16(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="1-D"):
        to_int16(np.zeros((2, 2), np.float32))


def test_model_hash_is_checked(tmp_path) -> None:
    import hashlib

    assert hashlib.sha256(model_path().read_bytes()).hexdigest() == MODEL_SHA256
    copy = tmp_path / "silero_vad_v6.onnx"
    shutil.copyfile(model_path(), copy)
    SileroVad(copy)  # an identical copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(VadModelError, match="sha256 .* expected " + MODEL_SHA256):
        SileroVad(copy)
    with pytest.raises(VadModelError, match="not found"):
        SileroVad(tmp_path / "missing.onnx")


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(vad_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VadModelError, match="faster_whisper package is not installed"):
        model_path()


def test_loads_offline_without_importing_faster_whisper() -> None:
    """In a fresh interpreter with every socket call failing: the model loads and runs, and neither
    faster_whisper nor ctranslate2 gets imported."""
    code = textwrap.dedent(
        """
        import socket, sys
        def blocked(*a, **k):
            raise OSError("network access blocked by the test")
        socket.socket = blocked
        socket.create_connection = blocked
        socket.getaddrinfo = blocked
        import numpy as np
        from asr_distill.audio.vad import SileroVad
        p = SileroVad().whole(np.zeros(16000, np.float32))
        assert len(p) == 32, len(p)
        bad = [m for m in ("faster_whisper", "ctranslate2") if m in sys.modules]
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
