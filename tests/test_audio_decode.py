"""Decoding real files of every supported kind to 16 kHz mono float32."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from asr_distill.audio import DECODE_ERRORS, DecodeError, decode, decode_object, open_decoder
from asr_distill.storage import LocalStorage


def _tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def _write_m4a(path: Path, x: np.ndarray, rate: int) -> None:
    """AAC in MP4; ``x`` is (frames,) mono or (frames, 2) stereo."""
    layout = "stereo" if x.ndim == 2 else "mono"
    planes = np.ascontiguousarray(x.T) if x.ndim == 2 else x[None, :]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_wav_at_16k_is_exact_and_not_resampled(tmp_path: Path) -> None:
    x = _tone(16_000, 1.0)
    sf.write(tmp_path / "a.wav", x, 16_000, subtype="PCM_16")
    ref, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    d = decode(tmp_path / "a.wav")
    assert d.backend == "soundfile"
    assert (d.source_rate, d.channels, d.frames, d.header_frames) == (16_000, 1, 16_000, 16_000)
    assert d.samples.dtype == np.float32
    np.testing.assert_array_equal(d.samples, ref)
    assert d.duration_s == pytest.approx(1.0)


def test_stereo_44k_is_downmixed_by_mean_and_resampled(tmp_path: Path) -> None:
    left = _tone(44_100, 2.0, 440.0, 0.6)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 44_100, subtype="PCM_24")
    d = decode(tmp_path / "s.flac")
    assert (d.source_rate, d.channels, d.frames) == (44_100, 2, 88_200)
    assert abs(len(d.samples) - 32_000) <= 1
    # mean of channels: half the amplitude of the left channel
    mid = d.samples[1000:-1000]
    assert np.abs(mid).max() == pytest.approx(0.3, abs=0.01)
    assert _dominant_hz(d.samples, 16_000) == pytest.approx(440.0, abs=2.0)


def test_blockwise_equals_one_shot_resampling(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(48_000 * 3)).astype(np.float32)
    sf.write(tmp_path / "n.wav", x, 48_000, subtype="FLOAT")
    small = decode(tmp_path / "n.wav", block_frames=1_000)
    big = decode(tmp_path / "n.wav")
    np.testing.assert_array_equal(small.samples, big.samples)
    np.testing.assert_array_equal(big.samples, soxr.resample(x, 48_000, 16_000, "HQ"))


def test_open_decoder_streams_bounded_blocks(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", _tone(44_100, 10.0), 44_100)
    total_out = 0
    with open_decoder(tmp_path / "long.wav", block_frames=4096) as dec:
        for block in dec:
            assert len(block.source) <= 4096
            total_out += len(block.mono)
        assert dec.frames == 441_000
    assert abs(total_out - 160_000) <= 1


def test_truncated_wav_reports_what_really_decoded(tmp_path: Path) -> None:
    sf.write(tmp_path / "full.wav", _tone(16_000, 3.0), 16_000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:16_044])  # header + 8000 frames of 48000
    d = decode(tmp_path / "cut.wav")
    assert d.frames == 8_000
    assert d.header_frames == 48_000  # the data chunk's claim, not libsndfile's adjusted count
    assert d.duration_s == pytest.approx(0.5)
    assert d.header_duration_s == pytest.approx(3.0)


def test_truncated_mp3_reports_fewer_frames_than_header(tmp_path: Path) -> None:
    sf.write(tmp_path / "full.mp3", _tone(44_100, 3.0), 44_100)
    data = (tmp_path / "full.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 5])
    full = decode(tmp_path / "full.mp3")
    cut = decode(tmp_path / "cut.mp3")
    assert full.frames >= 0.99 * full.header_frames
    assert cut.header_frames == full.header_frames
    assert cut.frames < 0.5 * cut.header_frames


def test_non_finite_samples_are_counted_and_zeroed(tmp_path: Path) -> None:
    x = _tone(16_000, 1.0, amp=0.1)
    x[[10, 500, 9000]] = [np.nan, np.inf, -np.inf]
    sf.write(tmp_path / "nan.wav", x, 16_000, subtype="FLOAT")
    d = decode(tmp_path / "nan.wav")
    assert d.non_finite_samples == 3
    assert np.isfinite(d.samples).all()
    assert d.samples[10] == 0.0 and d.samples[500] == 0.0
    # resampled path: NaN must not smear over the output either
    sf.write(tmp_path / "nan44.wav", np.repeat(x, 3), 48_000, subtype="FLOAT")
    d44 = decode(tmp_path / "nan44.wav")
    assert d44.non_finite_samples == 9
    assert np.isfinite(d44.samples).all()


def test_m4a_decodes_through_pyav(tmp_path: Path) -> None:
    x = _tone(44_100, 2.0, 1000.0, 0.4)
    _write_m4a(tmp_path / "a.m4a", x, 44_100)
    d = decode(tmp_path / "a.m4a")
    assert d.backend == "pyav"
    assert (d.source_rate, d.channels) == (44_100, 1)
    assert d.duration_s == pytest.approx(2.0, abs=0.1)  # AAC priming/padding
    assert d.header_frames is not None and d.header_frames > 0
    assert _dominant_hz(d.samples, 16_000) == pytest.approx(1000.0, abs=3.0)


def test_stereo_m4a_is_downmixed(tmp_path: Path) -> None:
    left = _tone(48_000, 1.0, 1000.0, 0.5)
    _write_m4a(tmp_path / "st.m4a", np.stack([left, np.zeros_like(left)], axis=1), 48_000)
    d = decode(tmp_path / "st.m4a")
    assert (d.backend, d.channels, d.source_rate) == ("pyav", 2, 48_000)
    assert np.abs(d.samples[4000:-4000]).max() == pytest.approx(0.25, abs=0.03)
    assert _dominant_hz(d.samples, 16_000) == pytest.approx(1000.0, abs=3.0)


def test_pyav_is_the_fallback_when_libsndfile_cannot_open(tmp_path: Path) -> None:
    _write_m4a(tmp_path / "hidden.wav", _tone(16_000, 1.0), 16_000)  # AAC in MP4 with a .wav name
    d = decode(tmp_path / "hidden.wav")
    assert d.backend == "pyav"
    assert d.duration_s == pytest.approx(1.0, abs=0.15)


def test_opus_and_bytes_and_file_object_sources(tmp_path: Path) -> None:
    x = _tone(48_000, 1.0)
    sf.write(tmp_path / "a.opus", x, 48_000, format="OGG", subtype="OPUS")
    by_path = decode(tmp_path / "a.opus")
    data = (tmp_path / "a.opus").read_bytes()
    by_bytes = decode(data)
    by_file = decode(io.BytesIO(data))
    np.testing.assert_array_equal(by_path.samples, by_bytes.samples)
    np.testing.assert_array_equal(by_path.samples, by_file.samples)
    assert by_path.duration_s == pytest.approx(1.0, abs=0.03)


def _zero_channel_wav() -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 0, 16_000, 32_000, 2, 16)
    data = b"\x00" * 100
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty_object"),
        (b"this is plain text, not audio at all\n" * 4, "unrecognised_format"),
        ("cut-header", "malformed_header"),
        ("zero-channels", "zero_channels"),
        ("header-only", "no_audio_data"),
    ],
)
def test_bad_inputs_raise_typed_errors(tmp_path: Path, content: bytes | str, code: str) -> None:
    if content == "cut-header":
        sf.write(tmp_path / "ok.wav", _tone(16_000, 1.0), 16_000)
        content = (tmp_path / "ok.wav").read_bytes()[:30]
    elif content == "zero-channels":
        content = _zero_channel_wav()
    elif content == "header-only":
        sf.write(tmp_path / "ok.wav", _tone(16_000, 1.0), 16_000)
        content = (tmp_path / "ok.wav").read_bytes()[:44]
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(DecodeError) as info:
        decode(path)
    assert info.value.reason_code == code, info.value.detail
    assert code in DECODE_ERRORS


def test_missing_file_and_missing_object_are_read_errors(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        decode(tmp_path / "nope.wav")
    assert info.value.reason_code == "read_error"
    store = LocalStorage(tmp_path)
    with pytest.raises(DecodeError) as info:
        decode_object(store, "nope.flac")
    assert info.value.reason_code == "read_error"


def test_decode_object_reads_from_a_store(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.flac", _tone(22_050, 1.5), 22_050)
    d = decode_object(LocalStorage(tmp_path), "sub/a.flac")
    assert d.frames == 33_075
    assert abs(len(d.samples) - 24_000) <= 1


def test_decode_error_pickles_and_rejects_unknown_codes() -> None:
    err = pickle.loads(pickle.dumps(DecodeError("decode_error", "boom")))
    assert (err.reason_code, err.detail) == ("decode_error", "boom")
    with pytest.raises(ValueError):
        DecodeError("no_such_code", "x")


def test_invalid_quality_is_rejected(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(16_000, 0.1), 16_000)
    with pytest.raises(ValueError):
        decode(tmp_path / "a.wav", quality="ultra")
