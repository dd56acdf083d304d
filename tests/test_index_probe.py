"""Probe of every format and every broken kind of the demo corpus, plus crafted edge cases."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from asr_distill.stages.index.build import probe_object
from asr_distill.stages.index.probe import probe_audio, riff_claimed_frames, sniff_container

EXPECTED_ERRORS = {
    "empty_file": "empty_object",
    "not_audio": "unrecognised_format",
    "header_cut": "malformed_header",
    "zero_channels": "zero_channels",
}
HEADER_DIFFERS = {"data_cut_short", "header_overclaims", "truncated_mp3"}


def _audio_entries(report):
    return [e for e in report.entries if e.kind == "audio"]


def test_every_format_probes_to_its_real_properties(demo_corpus):
    store, report = demo_corpus
    ok = [e for e in _audio_entries(report) if e.outcome == "ok"]
    formats = {e.format for e in ok}
    assert len(formats) >= 9, formats  # wav16k, wav22k, wav44k stereo, 24-bit, float, flac, mp3, opus, m4a
    for e in ok:
        p = probe_object(store, store.stat(e.key))
        assert p.error is None, (e.key, p)
        assert p.sample_rate == e.sample_rate, (e.key, p)
        assert p.channels == e.channels, (e.key, p)
        assert p.header_duration_s is None, (e.key, p)
        # Lossy codecs add a little encoder delay/padding.
        assert p.duration_s == pytest.approx(e.duration_s, abs=0.12), (e.key, p, e.duration_s)
        assert p.frames == pytest.approx(p.duration_s * p.sample_rate, abs=1)


@pytest.mark.parametrize(
    "kind", sorted(EXPECTED_ERRORS) + sorted(HEADER_DIFFERS) + ["digital_silence", "non_finite", "too_long"]
)
def test_every_broken_kind(demo_corpus, kind):
    store, report = demo_corpus
    entries = [e for e in _audio_entries(report) if e.outcome == kind]
    assert entries, f"the demo corpus has no {kind} object"
    for e in entries:
        p = probe_object(store, store.stat(e.key))
        if kind in EXPECTED_ERRORS:
            assert p.error == EXPECTED_ERRORS[kind], (e.key, p)
            assert p.detail
            continue
        assert p.error is None, (e.key, p)
        if kind in HEADER_DIFFERS:
            # The duration comes from the data; the header's claim is kept beside it.
            assert p.header_duration_s is not None and p.header_duration_s > p.duration_s * 1.5, (e.key, p)
            if e.header_duration_s:
                assert p.header_duration_s == pytest.approx(e.header_duration_s, rel=0.02)
        if kind == "header_overclaims":
            assert p.duration_s == pytest.approx(1.0, abs=0.05) and p.header_duration_s == pytest.approx(
                7200, rel=0.01
            )
        if kind == "too_long":
            assert p.duration_s > 40


def test_keys_with_spaces_and_non_ascii_probe_fine(demo_corpus):
    store, report = demo_corpus
    odd = [e for e in _audio_entries(report) if not e.key.isascii() or " " in e.key]
    assert len(odd) >= 2
    for e in odd:
        assert probe_object(store, store.stat(e.key)).error is None


def test_bytes_and_path_probes_agree(demo_corpus):
    store, report = demo_corpus
    for e in _audio_entries(report)[:12]:
        by_path = probe_audio(store.local_path(e.key))
        by_bytes = probe_audio(store.read_bytes(e.key))
        assert (by_path.error, by_path.frames, by_path.sample_rate, by_path.header_duration_s) == (
            by_bytes.error,
            by_bytes.frames,
            by_bytes.sample_rate,
            by_bytes.header_duration_s,
        ), e.key


def _wav(frames: int, declared_frames: int | None = None, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), rate, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if declared_frames is not None:
        pos = data.index(b"data")
        struct.pack_into("<I", data, pos + 4, declared_frames * 2)
    return bytes(data)


def test_riff_claim_parsing():
    assert riff_claimed_frames(_wav(1600)) == 1600
    assert riff_claimed_frames(_wav(1600, declared_frames=16000 * 7200)) == 16000 * 7200
    assert riff_claimed_frames(b"RIFF\x00\x00") is None
    assert riff_claimed_frames(b"not a wav at all") is None


def test_sniffing():
    assert sniff_container(_wav(10)) == "WAV"
    assert sniff_container(b"fLaC\x00\x00") == "FLAC"
    assert sniff_container(b"OggS\x00") == "OGG"
    assert sniff_container(b"ID3\x04") == "MP3"
    assert sniff_container(b"\x00\x00\x00\x20ftypM4A ") == "MP4"
    assert sniff_container(b"hello world") is None


def test_zero_frame_wav_is_no_audio_data():
    p = probe_audio(_wav(0))
    assert p.error == "no_audio_data"


def test_random_bytes_never_raise():
    rng = np.random.default_rng(0)
    for n in (1, 7, 44, 100, 5000):
        p = probe_audio(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        assert p.error in {"unrecognised_format", "malformed_header", "decode_error"}
    # A valid header followed by garbage still gives a row, not an exception.
    p = probe_audio(_wav(100)[:44] + rng.integers(0, 256, 999, dtype=np.uint8).tobytes())
    assert p.error is None or p.error in {"malformed_header", "decode_error"}
