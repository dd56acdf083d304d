"""The synthetic demo corpus: formats, broken inputs, sidecars, determinism and the CLI (real espeak-ng)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import struct
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import asr_distill.demo.corpus as corpus_module
from asr_distill.demo import BROKEN_KINDS, FORMATS, SIDECAR_OUTCOMES, CorpusReport, generate_corpus
from asr_distill.demo.corpus import make_text, number_words, set_ogg_serial
from asr_distill.demo.longform import write_longform_prefix
from asr_distill.storage import LocalStorage, Storage

REPO = Path(__file__).resolve().parents[1]
LOSSY = {"mp3_22k", "opus_48k", "m4a_aac_44k"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, CorpusReport]:
    store = LocalStorage(tmp_path_factory.mktemp("demo") / "raw")
    return store, generate_corpus(store, seed=0, size="small")


def _sha_of_store(store: Storage) -> dict[str, str]:
    return {o.key: hashlib.sha256(store.read_bytes(o.key)).hexdigest() for o in store.iter_objects()}


def _decode(store: Storage, key: str) -> tuple[np.ndarray, int, int]:
    """(samples as frames x channels, sample rate, channels) with soundfile, or PyAV for M4A."""
    data = store.read_bytes(key)
    if key.endswith(".m4a"):
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate, channels = stream.codec_context.sample_rate, stream.codec_context.layout.nb_channels
            frames = [f.to_ndarray() for f in container.decode(stream)]
        planar = np.concatenate(frames, axis=1)  # fltp: channels x samples
        return planar.T, rate, channels
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, rate, audio.shape[1]


# -- layout -------------------------------------------------------------------------------


def test_layout_prefixes_nesting_and_markers(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    assert report.prefixes() == ["en_read", "en_conversational", "en_mixed", "broken"]
    assert list(store.list_prefixes()) == ["broken/", "en_conversational/", "en_mixed/", "en_read/"]
    # the store holds exactly what the report says, byte for byte
    assert _sha_of_store(store) == {e.key: e.sha256 for e in report.entries}
    for e in report.entries:
        assert store.stat(e.key).size == e.size
    assert any(re.fullmatch(r"en_read/speaker_\d\d/utt_\d{4}\.\w+", e.key) for e in report.audio())
    assert any(e.key.count("/") >= 3 for e in report.audio())
    for prefix in report.prefixes():
        entries = [e for e in report.entries if e.prefix == prefix]
        assert entries[-1].kind == "marker" and entries[-1].key == f"{prefix}/_SUCCESS"
        assert store.read_bytes(f"{prefix}/_SUCCESS") == b""
        assert [e.kind for e in entries].count("marker") == 1
        if prefix != "broken":
            good = [e for e in entries if e.kind == "audio"]
            assert 8 <= len(good) <= 12
            assert all(e.outcome == "ok" for e in good)


def test_every_format_decodes_to_its_rate_and_channels(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    ok = report.audio("ok")
    assert {e.format for e in ok} == set(FORMATS)
    for e in ok:
        fmt = FORMATS[e.format]
        assert e.key.endswith(fmt.ext)
        audio, rate, channels = _decode(store, e.key)
        assert (rate, channels) == (fmt.sample_rate, fmt.channels) == (e.sample_rate, e.channels), e.key
        if fmt.container in ("WAV", "FLAC"):
            assert sf.info(io.BytesIO(store.read_bytes(e.key))).subtype == fmt.subtype
        decoded_s = len(audio) / rate
        tolerance = 0.15 if e.format in LOSSY else 0.01
        assert abs(decoded_s - e.duration_s) < tolerance, (e.key, decoded_s, e.duration_s)
        assert np.all(np.isfinite(audio)) and 0.05 < float(np.max(np.abs(audio))) < 1.0, e.key
        if e.prefix != "broken":
            assert 1.0 <= e.duration_s <= 20.0
        if channels == 2:  # a real second channel, not a copy
            assert not np.array_equal(audio[:, 0], audio[:, 1])


def test_voices_speakers_and_texts(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    _, report = corpus
    good = [e for e in report.audio("ok") if e.prefix != "broken"]
    voices = {e.voice.split(":")[1] for e in good}
    engines = {e.voice.split(":")[0] for e in good}
    assert len(voices) >= 5 and "espeak-ng" in engines
    if report.flite_voices:
        assert "flite" in engines
    assert len({e.voice for e in good}) >= 5  # voice and speed vary
    for e in good:
        assert re.fullmatch(r"[A-Za-z][A-Za-z ,.?]*[.?]", e.text), e.text
        assert e.language == "en" and e.speaker and e.speaker.startswith("speaker_")
    read = [e for e in good if e.prefix == "en_read"]
    assert all(e.key.split("/")[1] == e.speaker for e in read)


# -- sidecars -----------------------------------------------------------------------------


def test_sidecars_parse_and_match(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    entries = report.by_key()
    for prefix in ("en_read", "en_conversational", "en_mixed"):
        audio = [e for e in report.audio() if e.prefix == prefix]
        kinds = {e.sidecar_key.rsplit(".", 1)[1] if e.sidecar_key else "none" for e in audio}
        assert kinds == {"txt", "json", "none"}, prefix
    for e in report.sidecars():
        raw = store.read_bytes(e.key)
        audio = entries[e.audio_key]
        assert audio.kind == "audio" and e.key.rsplit(".", 1)[0] == audio.key.rsplit(".", 1)[0]
        if e.outcome == "not_utf8":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
            assert raw.decode("latin-1").strip() == audio.text and not audio.text.isascii()
        elif e.outcome == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw.decode("utf-8"))
        elif e.format == "txt":
            assert raw.decode("utf-8").strip() == e.text
        else:
            doc = json.loads(raw.decode("utf-8"))
            assert doc["text"] == e.text and doc.get("language", "en") == "en"
            assert isinstance(doc.get("speaker", ""), str)
        if e.outcome == "ok":
            assert audio.sidecar_key == e.key and e.text == audio.text
    assert {e.outcome for e in report.sidecars()} == {"ok"} | set(SIDECAR_OUTCOMES)
    conflict = [e for e in report.sidecars() if e.outcome == "conflicting_sidecars"]
    assert len(conflict) == 1 and conflict[0].text != entries[conflict[0].audio_key].text


# -- broken -------------------------------------------------------------------------------


def _wav_header(data: bytes) -> dict[str, int]:
    """fmt fields and the declared/actual size of the data chunk, parsed by hand."""
    out: dict[str, int] = {}
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            out["tag"], out["channels"], out["rate"], _, _, out["bits"] = struct.unpack_from(
                "<HHIIHH", data, pos + 8
            )
        if cid == b"data":
            out["declared"], out["actual"] = size, len(data) - pos - 8
            break
        pos += 8 + size + (size & 1)
    return out


def test_broken_inputs_behave_as_claimed(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    broken = {e.outcome: e for e in report.audio() if e.outcome != "ok"}
    assert set(broken) == set(BROKEN_KINDS)
    assert all(e.prefix == "broken" for e in broken.values())
    data = {kind: store.read_bytes(e.key) for kind, e in broken.items()}

    assert data["empty_file"] == b"" and broken["empty_file"].key.endswith(".wav")
    assert data["not_audio"].decode("utf-8").startswith("This is not audio")
    assert len(data["header_cut"]) == 30 and data["header_cut"][:4] == b"RIFF"
    for kind in ("empty_file", "not_audio", "header_cut", "zero_channels"):
        with pytest.raises(sf.LibsndfileError):
            sf.read(io.BytesIO(data[kind]))
    assert _wav_header(data["zero_channels"])["channels"] == 0

    short = _wav_header(data["data_cut_short"])
    assert short["actual"] == 1000 and short["declared"] > 10 * short["actual"]
    with wave.open(io.BytesIO(data["data_cut_short"])) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(
            broken["data_cut_short"].header_duration_s, abs=1e-3
        )
    audio, rate = sf.read(io.BytesIO(data["data_cut_short"]))
    assert len(audio) == 500 and rate == 16000

    with wave.open(io.BytesIO(data["header_overclaims"])) as w:
        assert w.getnframes() / w.getframerate() == 7200.0
    audio, rate = sf.read(io.BytesIO(data["header_overclaims"]))
    assert len(audio) == rate == 16000 and np.any(audio != 0)

    audio, rate = sf.read(io.BytesIO(data["digital_silence"]), dtype="int16")
    assert len(audio) / rate >= 3.0 and not np.any(audio)

    audio, _ = sf.read(io.BytesIO(data["non_finite"]), dtype="float32")
    assert sf.info(io.BytesIO(data["non_finite"])).subtype == "FLOAT"
    assert np.isnan(audio).any() and np.isposinf(audio).any() and np.isneginf(audio).any()
    assert np.abs(audio[np.isfinite(audio)]).max() > 0.1  # there is speech around the bad samples

    mp3 = broken["truncated_mp3"]
    audio, rate = sf.read(io.BytesIO(data["truncated_mp3"]))
    assert len(audio) / rate < 0.5 * mp3.header_duration_s

    audio, rate = sf.read(io.BytesIO(data["too_long"]))
    assert 40.0 < len(audio) / rate < 50.0

    for key in ("broken/café olé.wav", "broken/日本語 clip.flac"):
        entry = report.by_key()[key]
        assert entry.outcome == "ok"
        assert store.local_path(key).is_file()
        audio, rate, _ = _decode(store, key)
        assert len(audio) / rate > 1.0


# -- determinism --------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_other_seed_differs(
    corpus: tuple[LocalStorage, CorpusReport], tmp_path: Path
) -> None:
    store, report = corpus
    again = LocalStorage(tmp_path / "again")
    report2 = generate_corpus(again, seed=0, size="small", workers=3)
    assert _sha_of_store(again) == _sha_of_store(store)
    assert [e.to_dict() for e in report2.entries] == [e.to_dict() for e in report.entries]

    other = generate_corpus(LocalStorage(tmp_path / "seed1"), seed=1, prefixes=1, broken=False, marker=False)
    texts0 = {e.text for e in report.audio() if e.prefix == "en_read"}
    texts1 = {e.text for e in other.audio()}
    assert len(texts1) == 10 and not texts0 & texts1


def test_espeak_speakers_do_not_depend_on_flite(
    corpus: tuple[LocalStorage, CorpusReport],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, report = corpus
    monkeypatch.setattr(corpus_module, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="asr_distill.demo.corpus"):
        for name in ("a", "b"):
            no_flite = generate_corpus(
                LocalStorage(tmp_path / name), prefixes=1, broken=False, flite_path="/nonexistent/flite"
            )
    assert no_flite.flite_voices == ()
    assert all(e.voice.startswith("espeak-ng:") for e in no_flite.audio())
    assert sum("flite not found" in r.getMessage() for r in caplog.records) == 1  # logged once
    before = {
        e.key: e.sha256 for e in report.audio() if e.prefix == "en_read" and e.voice.startswith("espeak")
    }
    after = {e.key: e.sha256 for e in no_flite.audio()}
    assert before and all(after[k] == sha for k, sha in before.items())


# -- encoders and text --------------------------------------------------------------------


def test_ogg_serial_rewrite_keeps_audio_and_checks_crc(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    key = next(e.key for e in report.audio("ok") if e.format == "opus_48k")
    data = store.read_bytes(key)
    other = set_ogg_serial(data, 12345)
    assert other != data and struct.unpack_from("<I", other, 14)[0] == 12345
    a, _ = sf.read(io.BytesIO(data))
    b, _ = sf.read(io.BytesIO(other))
    assert np.array_equal(a, b)
    corrupt = bytearray(data)
    corrupt[200] ^= 0xFF
    with pytest.raises(ValueError, match="CRC"):
        set_ogg_serial(bytes(corrupt), 1)


def test_float_wav_peak_chunk_has_no_timestamp(corpus: tuple[LocalStorage, CorpusReport]) -> None:
    store, report = corpus
    key = next(e.key for e in report.audio("ok") if e.format == "wav_float32_16k")
    data = store.read_bytes(key)
    pos = data.index(b"PEAK")
    assert struct.unpack_from("<I", data, pos + 12)[0] == 0


def test_number_words_and_text_generation() -> None:
    assert number_words(0) == "zero"
    assert number_words(21) == "twenty one"
    assert number_words(105) == "one hundred and five"
    assert number_words(9384) == "nine thousand three hundred and eighty four"
    assert number_words(6017) == "six thousand and seventeen"
    with pytest.raises(ValueError):
        number_words(-1)
    for i in range(200):
        for style in ("read", "conversational", "mixed"):
            text = make_text(f"t{i}", style, 1 + i % 40)
            assert re.fullmatch(r"[A-Za-z][A-Za-z ,.?]*[.?]", text), text
            assert not re.search(r"\d", text)
    assert make_text("x", "read", 30) == make_text("x", "read", 30)
    assert make_text("x", "read", 30) != make_text("y", "read", 30)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="size"):
        generate_corpus(store, size="huge")
    with pytest.raises(ValueError, match="prefixes"):
        generate_corpus(store, prefixes=0)
    assert list(store.iter_objects()) == []


# -- CLI ----------------------------------------------------------------------------------


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def test_cli_writes_the_same_bytes_in_a_new_process(
    corpus: tuple[LocalStorage, CorpusReport], tmp_path: Path
) -> None:
    store, report = corpus
    out = tmp_path / "cli"
    report_file = tmp_path / "report.json"
    proc = subprocess.run(
        [_python(), "-m", "asr_distill.demo", "--out", str(out), "--prefixes", "1", "--no-marker",
         "--report", str(report_file)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "en_read/" in proc.stdout and "broken/" in proc.stdout
    assert "total audio" in proc.stdout and "longform/: 4 long recordings" in proc.stdout
    written = _sha_of_store(LocalStorage(out))
    assert written and not any(k.endswith("_SUCCESS") for k in written)
    assert {k.split("/")[0] for k in written} == {"en_read", "broken", "longform"}
    # the long-form prefix: four recordings over 30 s, their whole-recording transcripts, one short
    # clip; the same bytes as written in this process
    longform = {k: v for k, v in written.items() if k.startswith("longform/")}
    assert sorted(longform) == [
        "longform/dialogue.flac",
        "longform/dialogue.txt",
        "longform/intro_clip.wav",
        "longform/just_over_30s.flac",
        "longform/just_over_30s.txt",
        "longform/monologue.txt",
        "longform/monologue.wav",
        "longform/noise_only.wav",
    ]
    here = LocalStorage(tmp_path / "lf_here")
    truths = write_longform_prefix(here, 0, marker=False)
    assert _sha_of_store(here) == longform
    assert all(t.duration_s > 30 for t in truths)
    assert sum(t.duration_s for t in truths) < 240  # small: make demo and CI stay fast
    written = {k: v for k, v in written.items() if not k.startswith("longform/")}
    # a separate process, later in time: every encoder (Ogg serial, PEAK stamp, MP3, M4A) is reproducible
    expected = {e.key: e.sha256 for e in report.entries}
    assert {k: expected[k] for k in written} == written
    formats = {e.format for e in report.audio("ok") if e.key in written}
    assert formats == set(FORMATS)
    doc = json.loads(report_file.read_text(encoding="utf-8"))
    assert {e["key"] for e in doc["entries"]} == set(written)


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    for args in (["--size", "huge"], ["--prefixes", "0"]):
        proc = subprocess.run(
            [_python(), "-m", "asr_distill.demo", "--out", str(tmp_path / "x"), *args],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert not (tmp_path / "x").exists()
