"""A synthetic English speech corpus with known text, for demos and tests of every stage.

Speech is synthesised offline with espeak-ng (always) and flite (when installed), from sentences
generated deterministically from a seed, then encoded into the formats a real raw store holds
(WAV of several rates/depths, FLAC, MP3, Ogg/Opus, M4A/AAC) next to ``.txt``/``.json`` sidecars.
A ``broken/`` prefix holds byte-crafted bad inputs whose failure is known in advance. Everything is
written through :class:`~asr_distill.storage.Storage`; :func:`generate_corpus` returns a
:class:`CorpusReport` describing every object (the ground truth later stages assert against).

Determinism: same seed, size and tools -> byte-identical objects. Two encoders are not deterministic
out of the box and are fixed here: libsndfile gives each Ogg stream a random serial number (rewritten
to a key-derived value, page CRCs recomputed) and stamps float WAVs' ``PEAK`` chunk with the current
time (zeroed). The MP3 (LAME) and AAC/M4A (FFmpeg, written with the bitexact flags, creation time 0)
outputs were checked to be byte-identical across processes. Output depends on the installed
espeak-ng/flite/libsndfile/FFmpeg builds and on whether flite is present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from asr_distill.storage import Storage, join_key

log = logging.getLogger(__name__)

SYNTH_RATE = 22050  # every voice is brought to this rate before encoding
LANGUAGE = "en"
MARKER_NAME = "_SUCCESS"
BROKEN_PREFIX = "broken"
MIN_CLIP_S = 1.0
MAX_CLIP_S = 20.0
SIZES = {"small": 10, "medium": 40}  # good clips per prefix
MAX_PREFIXES = 20

# -- formats ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One output encoding of a clip."""

    name: str
    ext: str
    sample_rate: int
    channels: int
    container: str  # "WAV", "FLAC", "MP3", "OGG", "M4A"
    subtype: str  # libsndfile subtype, or the codec name for M4A


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav_pcm16_16k", ".wav", 16000, 1, "WAV", "PCM_16"),
        AudioFormat("wav_pcm16_22k", ".wav", 22050, 1, "WAV", "PCM_16"),
        AudioFormat("wav_pcm16_44k_stereo", ".wav", 44100, 2, "WAV", "PCM_16"),
        AudioFormat("wav_pcm24_48k", ".wav", 48000, 1, "WAV", "PCM_24"),
        AudioFormat("wav_float32_16k", ".wav", 16000, 1, "WAV", "FLOAT"),
        AudioFormat("flac_16k", ".flac", 16000, 1, "FLAC", "PCM_16"),
        AudioFormat("mp3_22k", ".mp3", 22050, 1, "MP3", "MPEG_LAYER_III"),
        AudioFormat("opus_48k", ".opus", 48000, 1, "OGG", "OPUS"),
        AudioFormat("m4a_aac_44k", ".m4a", 44100, 1, "M4A", "aac"),
    )
}

# Expected outcome of each audio object in ``broken/`` (good clips have outcome "ok").
BROKEN_KINDS: dict[str, str] = {
    "empty_file": "zero-byte .wav",
    "not_audio": "a UTF-8 text file named .wav",
    "header_cut": "a WAV cut after 30 bytes (no data chunk)",
    "data_cut_short": "a WAV whose data chunk holds 1000 bytes of what the header declares",
    "header_overclaims": "a WAV whose header declares 2 hours and which holds 1 s of audio",
    "digital_silence": "a WAV of all-zero samples",
    "non_finite": "a float WAV of speech with NaN and +/-Inf samples",
    "zero_channels": "a WAV whose header declares 0 channels",
    "truncated_mp3": "an MP3 cut to a quarter of its bytes",
    "too_long": "a valid 45 s utterance, longer than a 30 s teacher window",
}
# Outcomes of sidecar objects; names match ``asr_distill.stages.index.schema.SIDECAR_ERRORS``.
SIDECAR_OUTCOMES: dict[str, str] = {
    "not_utf8": "a .txt sidecar in latin-1 with non-ASCII letters",
    "invalid_json": "a .json sidecar cut mid-string",
    "conflicting_sidecars": "a .txt whose text differs from the .json next to it (the .json is right)",
}

# -- voices -------------------------------------------------------------------------------

ESPEAK_VOICES = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us+f3",
    "en+m3",
    "en+f2",
    "en-us+m1",
    "en+f4",
    "en-gb+m5",
    "en-us+f5",
)
FLITE_VOICES = ("kal", "slt", "awb", "rms")
N_SPEAKERS = 12


@dataclass(frozen=True, slots=True)
class Voice:
    """A synthesiser setting; ``speed`` is words/minute for espeak-ng, a duration stretch for flite."""

    engine: str  # "espeak-ng" | "flite"
    name: str
    speed: float
    pitch: int = 50

    @property
    def label(self) -> str:
        if self.engine == "flite":
            return f"flite:{self.name}:stretch={self.speed:.2f}"
        return f"espeak-ng:{self.name}:s={int(self.speed)}:p={self.pitch}"

    def words_per_second(self) -> float:
        if self.engine == "flite":
            return 2.7 / self.speed
        return self.speed / 60.0 * 0.9


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


class Synthesizer:
    """Runs espeak-ng / flite and returns float32 mono audio at :data:`SYNTH_RATE`."""

    def __init__(
        self, espeak: str | None = None, flite: str | None = None, *, use_flite: bool = True
    ) -> None:
        self.espeak = espeak or shutil.which("espeak-ng") or "/usr/bin/espeak-ng"
        if not os.path.isfile(self.espeak):
            raise RuntimeError(
                f"espeak-ng not found at {self.espeak!r}: install it (apt-get install espeak-ng)"
            )
        self.flite: str | None = None
        self.flite_voices: tuple[str, ...] = ()
        if use_flite:
            path = flite or shutil.which("flite")
            if path and os.path.isfile(path):
                self.flite = path
                self.flite_voices = self._flite_voices(path)
            else:
                _warn_once(
                    f"flite:{path}", f"flite not found ({path or 'not on PATH'}): flite voices are skipped"
                )

    @staticmethod
    def _flite_voices(path: str) -> tuple[str, ...]:
        try:
            out = subprocess.run(
                [path, "-lv"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except OSError as exc:
            _warn_once(f"flite-lv:{path}", f"flite at {path} does not run ({exc}): flite voices are skipped")
            return ()
        listed = set(out.split(":", 1)[-1].split())
        return tuple(v for v in FLITE_VOICES if v in listed)

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        if voice.engine == "flite":
            if self.flite is None:
                raise RuntimeError("flite voice requested but flite is not available")
            with tempfile.TemporaryDirectory(prefix="asrd-flite-") as tmp:
                out = os.path.join(tmp, "out.wav")
                cmd = [self.flite, "-voice", voice.name, "--setf", f"duration_stretch={voice.speed:.3f}"]
                _run(cmd + ["-t", text, "-o", out])
                with open(out, "rb") as fh:
                    wav = fh.read()
        else:
            cmd = [self.espeak, "--stdout", "-b", "1", "-v", voice.name, "-s", str(int(voice.speed))]
            wav = _run(cmd + ["-p", str(voice.pitch)], stdin=text.encode("utf-8"))
        audio, rate = _read_pcm16_wav(wav)
        if rate != SYNTH_RATE:
            audio = soxr.resample(audio, rate, SYNTH_RATE, quality="HQ").astype(np.float32)
        if audio.size == 0 or not np.any(audio):
            raise RuntimeError(f"{voice.label} produced no audio for {text[:60]!r}")
        return audio


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed (exit {proc.returncode}): {err[:300]}")
    return proc.stdout


def _read_pcm16_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a synthesiser's mono 16-bit WAV, tolerating espeak's streaming header (sizes 0x7fffffff)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("synthesiser output is not a WAV file")
    pos, rate, channels, bits = 12, 0, 0, 0
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            _tag, channels, rate, _br, _ba, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
        elif cid == b"data":
            body = data[pos + 8 : pos + 8 + min(size, len(data) - pos - 8)]
            if channels != 1 or bits != 16:
                raise RuntimeError(f"unexpected synthesiser output: {channels} ch, {bits} bit")
            body = body[: len(body) // 2 * 2]
            return (np.frombuffer(body, "<i2").astype(np.float32) / 32768.0), rate
        pos += 8 + size + (size & 1)
    raise RuntimeError("synthesiser WAV has no data chunk")


# -- text ---------------------------------------------------------------------------------

_ADJ = [
    "quiet",
    "bright",
    "small",
    "old",
    "green",
    "heavy",
    "careful",
    "early",
    "simple",
    "narrow",
    "warm",
    "busy",
    "gentle",
    "tall",
    "empty",
    "honest",
    "yellow",
    "modern",
    "local",
    "friendly",
    "cold",
    "silver",
    "patient",
    "distant",
    "round",
    "wooden",
    "clever",
    "sudden",
    "calm",
    "rough",
]
_NOUNS = [
    "river",
    "garden",
    "teacher",
    "window",
    "letter",
    "market",
    "engine",
    "bridge",
    "story",
    "kitchen",
    "farmer",
    "report",
    "station",
    "island",
    "camera",
    "basket",
    "student",
    "doctor",
    "library",
    "mountain",
    "village",
    "package",
    "meeting",
    "ticket",
    "picture",
    "machine",
    "bottle",
    "forest",
    "table",
    "question",
]
_PLURAL_EXCEPTIONS = {"story": "stories", "library": "libraries"}
_VERBS = (
    ("carry", "carried"),
    ("open", "opened"),
    ("paint", "painted"),
    ("follow", "followed"),
    ("build", "built"),
    ("find", "found"),
    ("visit", "visited"),
    ("clean", "cleaned"),
    ("watch", "watched"),
    ("repair", "repaired"),
    ("move", "moved"),
    ("check", "checked"),
    ("bring", "brought"),
    ("describe", "described"),
    ("count", "counted"),
    ("deliver", "delivered"),
    ("explain", "explained"),
    ("measure", "measured"),
    ("share", "shared"),
    ("collect", "collected"),
)
_NAMES = [
    "Anna",
    "Peter",
    "Maria",
    "David",
    "Helen",
    "Samuel",
    "Laura",
    "Thomas",
    "Grace",
    "Oliver",
    "Nina",
    "George",
    "Ruth",
    "Daniel",
]
_PLACES = (
    "the harbour",
    "the old town",
    "the north station",
    "the city library",
    "the river bank",
    "the market square",
    "the school yard",
    "the main office",
    "the train platform",
    "the village hall",
    "the corner shop",
    "the hospital",
)
_TIMES = (
    "this morning",
    "last night",
    "every Monday",
    "on Friday",
    "before lunch",
    "after the storm",
    "in the spring",
    "at midnight",
    "next week",
    "early in the evening",
    "on Sunday afternoon",
    "during the winter",
)
READ_TEMPLATES = (
    "The {adj} {noun} near {place} {verbed} {num} {nouns} {time}.",
    "{name} {verbed} the {adj} {noun} and then walked to {place}.",
    "In {place}, {num} {adj} {nouns} were waiting for the {noun}.",
    "We {verbed} the {noun} {time}, and everyone agreed it was {adj}.",
    "According to the {noun}, there were {num} {nouns} in {place} {time}.",
    "{name} wrote that the {adj} {nouns} {verbed} the {noun} {time}.",
    "After a long day, the {noun} {verbed} {small} {adj} {nouns}.",
    "It was {adj} and {adj2} when {name} reached {place}.",
    "Nobody expected the {adj} {noun} to {verb} so many {nouns}.",
    "The {nouns} of {place} were {adj} long before the {noun} arrived.",
)
CONV_TEMPLATES = (
    "Could you {verb} the {noun} {time}?",
    "Yes, I think {small} {nouns} should be enough.",
    "Sorry, I did not catch that.",
    "Where did you leave the {adj} {noun}?",
    "Let us meet at {place} {time}.",
    "How many {nouns} do we need?",
    "About {num}, maybe a few more.",
    "That sounds {adj} to me.",
    "Can {name} {verb} it instead?",
    "Okay, thank you very much.",
    "I will {verb} the {nouns} {time}.",
    "Is the {noun} still at {place}?",
    "No, {name} took it {time}.",
    "Well, the {noun} was {adj}, so we left.",
)
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 (British "and" after hundreds)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    sep = " and " if 0 < rest < 100 else " "
    return f"{number_words(thousands)} thousand" + (f"{sep}{number_words(rest)}" if rest else "")


def _plural(noun: str) -> str:
    return _PLURAL_EXCEPTIONS.get(noun, noun + "s")


def make_sentence(rng: random.Random, style: str) -> str:
    """One sentence in ``style`` ("read" or "conversational"): letters, spaces, ``,.?`` only."""
    templates = READ_TEMPLATES if style == "read" else CONV_TEMPLATES
    template = rng.choice(templates)
    adj, adj2 = rng.sample(_ADJ, 2)
    verb, verbed = rng.choice(_VERBS)
    values = {
        "adj": adj,
        "adj2": adj2,
        "noun": rng.choice(_NOUNS),
        "nouns": _plural(rng.choice(_NOUNS)),
        "verb": verb,
        "verbed": verbed,
        "name": rng.choice(_NAMES),
        "place": rng.choice(_PLACES),
        "time": rng.choice(_TIMES),
        "num": number_words(rng.choice((rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 9999)))),
        "small": number_words(rng.randint(2, 20)),
    }
    sentence = template.format(**values)
    return sentence[0].upper() + sentence[1:]


def make_text(text_seed: str, style: str, n_words: int) -> str:
    """About ``n_words`` words of text (whole sentences when they fit), deterministic for ``text_seed``."""
    rng = random.Random(text_seed)
    n_words = max(1, n_words)
    slack = max(1, n_words // 5)
    kept: list[str] = []
    count = 0
    for _ in range(200):  # draw sentences, keeping those that fit the remaining budget
        s = make_sentence(rng, style if style != "mixed" else rng.choice(("read", "conversational")))
        if count + len(s.split()) <= n_words + slack:
            kept.append(s)
            count += len(s.split())
        if count >= n_words - slack:
            break
    if kept:
        return " ".join(kept)
    # Only for one or two words: no template is that short, cut a sentence.
    words = make_sentence(rng, "conversational").split()[:n_words]
    return " ".join(words).rstrip(",.?") + "."


# -- encoders -----------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _crc_table()


def _ogg_crc(data: bytes | bytearray) -> int:
    crc = 0
    table = _OGG_CRC
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ byte) & 0xFF]
    return crc


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite the stream serial number of every page of a single-stream Ogg file; fix the CRCs."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS" or pos + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_seg = out[pos + 26]
        length = 27 + n_seg + sum(out[pos + 27 : pos + 27 + n_seg])
        page = out[pos : pos + length]
        stored = struct.unpack_from("<I", page, 22)[0]
        struct.pack_into("<I", page, 22, 0)
        if _ogg_crc(page) != stored:
            raise ValueError(f"Ogg page at byte {pos} has a bad CRC")
        struct.pack_into("<I", page, 14, serial)
        struct.pack_into("<I", page, 22, _ogg_crc(page))
        out[pos : pos + length] = page
        pos += length
    return bytes(out)


def zero_peak_timestamp(data: bytes) -> bytes:
    """Zero the time stamp libsndfile writes into a WAV ``PEAK`` chunk (float WAVs)."""
    out = bytearray(data)
    pos = 12
    while pos + 8 <= len(out):
        cid = bytes(out[pos : pos + 4])
        size = struct.unpack_from("<I", out, pos + 4)[0]
        if cid == b"PEAK" and size >= 8:
            struct.pack_into("<I", out, pos + 12, 0)  # body: version (4 bytes), timestamp (4 bytes)
        if cid == b"data":
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


def _encode_m4a(audio: np.ndarray, rate: int, bit_rate: int = 64000) -> bytes:
    import av  # imported lazily: only M4A needs FFmpeg

    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod", options={"fflags": "+bitexact"}) as container:
        # The "fast" coder is ~4x quicker than the default two-loop search and plenty for speech tests.
        stream = container.add_stream(
            "aac", rate=rate, layout="mono" if audio.ndim == 1 else "stereo", options={"aac_coder": "fast"}
        )
        stream.bit_rate = bit_rate
        stream.codec_context.flags |= int(av.codec.context.Flags.bitexact)
        planar = np.ascontiguousarray((audio[None, :] if audio.ndim == 1 else audio.T).astype(np.float32))
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, planar.shape[1], frame_size):
            chunk = np.ascontiguousarray(planar[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.codec_context.layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def encode(audio: np.ndarray, fmt: AudioFormat, *, serial: int = 0) -> bytes:
    """Encode mono float32 audio at :data:`SYNTH_RATE` into ``fmt``; byte-deterministic."""
    x = audio
    if fmt.sample_rate != SYNTH_RATE:
        x = soxr.resample(x, SYNTH_RATE, fmt.sample_rate, quality="HQ").astype(np.float32)
    if fmt.channels == 2:
        right = np.concatenate([np.zeros(11, np.float32), x[:-11]]) * np.float32(0.8)
        x = np.stack([x, right], axis=1)
    if fmt.container == "M4A":
        return _encode_m4a(x, fmt.sample_rate)
    buf = io.BytesIO()
    sf.write(buf, x, fmt.sample_rate, format=fmt.container, subtype=fmt.subtype)
    data = buf.getvalue()
    if fmt.container == "OGG":
        data = set_ogg_serial(data, serial)
    elif fmt.container == "WAV":
        data = zero_peak_timestamp(data)
    return data


def wav_bytes(
    data: bytes,
    *,
    sample_rate: int,
    channels: int,
    bits: int,
    format_tag: int = 1,
    declared_data_bytes: int | None = None,
) -> bytes:
    """A RIFF/WAVE file built by hand; the header may declare more data than ``data`` holds."""
    declared = len(data) if declared_data_bytes is None else declared_data_bytes
    block_align = channels * bits // 8
    if format_tag == 3:  # IEEE float: 18-byte fmt chunk plus the fact chunk non-PCM formats need
        fmt = struct.pack(
            "<HHIIHHH", 3, channels, sample_rate, sample_rate * block_align, block_align, bits, 0
        )
        frames = declared // block_align if block_align else 0
        extra = b"fact" + struct.pack("<II", 4, frames)
    else:
        fmt = struct.pack(
            "<HHIIHH", format_tag, channels, sample_rate, sample_rate * block_align, block_align, bits
        )
        extra = b""
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    riff_size = 4 + len(chunks) + 8 + declared + (declared & 1)
    header = b"RIFF" + struct.pack("<I", riff_size & 0xFFFFFFFF) + b"WAVE" + chunks
    body = data + (b"\x00" if len(data) & 1 and declared == len(data) else b"")
    return header + b"data" + struct.pack("<I", declared) + body


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).round().astype("<i2").tobytes()


# -- report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorpusEntry:
    """One object written by :func:`generate_corpus`."""

    key: str
    kind: str  # "audio" | "sidecar" | "marker"
    prefix: str  # top-level prefix (partition) without "/"
    format: str  # a FORMATS name, "wav"/"mp3" for crafted files, "txt"/"json" for sidecars, "" for markers
    outcome: str  # "ok", a BROKEN_KINDS key (audio) or a SIDECAR_OUTCOMES key (sidecars)
    text: str | None = None  # the spoken text (audio) or the text the sidecar holds
    duration_s: float | None = None  # intended duration of the audio (before lossy-codec padding)
    header_duration_s: float | None = None  # what a crafted header declares, when that differs
    speaker: str | None = None
    voice: str | None = None
    language: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    subtype: str | None = None
    sidecar_key: str | None = None  # audio: the sidecar that holds its right text (None: no usable one)
    audio_key: str | None = None  # sidecar: the audio it describes
    size: int = 0
    sha256: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CorpusReport:
    """Everything :func:`generate_corpus` wrote, in write order."""

    uri: str
    seed: int
    size: str
    entries: list[CorpusEntry] = field(default_factory=list)
    flite_voices: tuple[str, ...] = ()

    def audio(self, outcome: str | None = None) -> list[CorpusEntry]:
        return [e for e in self.entries if e.kind == "audio" and (outcome is None or e.outcome == outcome)]

    def sidecars(self) -> list[CorpusEntry]:
        return [e for e in self.entries if e.kind == "sidecar"]

    def by_key(self) -> dict[str, CorpusEntry]:
        return {e.key: e for e in self.entries}

    def prefixes(self) -> list[str]:
        return list(dict.fromkeys(e.prefix for e in self.entries))

    def total_audio_seconds(self) -> float:
        return sum(e.duration_s or 0.0 for e in self.audio())

    def summary(self) -> str:
        lines = [f"wrote {len(self.entries)} objects to {self.uri} (seed={self.seed}, size={self.size})"]
        for prefix in self.prefixes():
            entries = [e for e in self.entries if e.prefix == prefix]
            kinds = Counter(e.kind for e in entries)
            seconds = sum(e.duration_s or 0.0 for e in entries if e.kind == "audio")
            broken = sum(1 for e in entries if e.kind == "audio" and e.outcome != "ok")
            lines.append(
                f"  {prefix + '/':<20} {kinds['audio']:3d} audio ({broken} broken), {kinds['sidecar']:3d} sidecars,"
                f" {kinds['marker']} marker, {seconds:7.1f} s"
            )
        lines.append(
            f"  total audio: {self.total_audio_seconds():.1f} s in {len(self.audio())} objects;"
            f" flite voices: {', '.join(self.flite_voices) or 'none'}"
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        doc = {
            "uri": self.uri,
            "seed": self.seed,
            "size": self.size,
            "flite_voices": list(self.flite_voices),
            "entries": [e.to_dict() for e in self.entries],
        }
        return json.dumps(doc, ensure_ascii=False, indent=1)


# -- planning -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Speaker:
    id: str
    voice: Voice


@dataclass
class _Clip:
    """A good clip to synthesise, encode and write with its sidecar."""

    stem: str  # key without extension
    prefix: str
    style: str
    fmt: AudioFormat
    sidecar: str  # "txt" | "json" | "none"
    speaker: _Speaker
    text_seed: str
    target_s: float
    gain: float


def prefix_names(n: int) -> list[str]:
    """Names of the ``n`` good prefixes: en_read, en_conversational, en_mixed, en_extra_04, ..."""
    base = ["en_read", "en_conversational", "en_mixed"]
    return [base[i] if i < len(base) else f"en_extra_{i + 1:02d}" for i in range(n)]


def _speakers(seed: int, synth: Synthesizer) -> list[_Speaker]:
    """The speaker pool: 8 espeak-ng slots and one slot per flite voice (espeak-ng when flite lacks it).

    The random stream does not depend on which flite voices exist, so espeak-ng speakers are the same
    on every machine; only the flite slots change where flite is missing.
    """
    rng = random.Random(f"asr-distill-demo/{seed}/speakers")
    espeak = rng.sample(ESPEAK_VOICES, len(ESPEAK_VOICES))
    n_espeak = N_SPEAKERS - len(FLITE_VOICES)
    slots = [("espeak-ng", v) for v in espeak[:n_espeak]] + [("flite", v) for v in FLITE_VOICES]
    rng.shuffle(slots)
    spare = iter(espeak[n_espeak:])
    speakers = []
    for i, (engine, name) in enumerate(slots):
        speed, pitch, stretch = (
            rng.randrange(135, 200, 5),
            rng.randrange(30, 71, 5),
            round(rng.uniform(0.85, 1.25), 2),
        )
        if engine == "flite" and name in synth.flite_voices:
            voice = Voice("flite", name, stretch)
        else:
            voice = Voice("espeak-ng", name if engine == "espeak-ng" else next(spare), speed, pitch)
        speakers.append(_Speaker(f"speaker_{i:02d}", voice))
    return speakers


def _spread(rng: random.Random, options: list[str], n: int, weights: list[float] | None = None) -> list[str]:
    """``n`` choices holding each option at least once (when n allows), shuffled."""
    out = list(options[:n])
    out += rng.choices(options, weights=weights, k=max(0, n - len(out)))
    rng.shuffle(out)
    return out


def _plan_prefix(seed: int, index: int, prefix: str, n: int, speakers: list[_Speaker]) -> list[_Clip]:
    style = ("read", "conversational", "mixed")[index % 3]
    rng = random.Random(f"asr-distill-demo/{seed}/{prefix}/plan")
    fmts = _spread(rng, list(FORMATS), n)
    sidecars = _spread(rng, ["txt", "json", "none"], n, weights=[0.4, 0.4, 0.2])
    if style == "read":
        cast = rng.sample(speakers, 3)
    elif style == "conversational":
        cast = rng.sample(speakers, 2)
    else:
        cast = speakers
    per_speaker: Counter[str] = Counter()
    clips = []
    for i in range(n):
        fmt = FORMATS[fmts[i]]
        speaker = cast[i % len(cast)] if style != "mixed" else rng.choice(cast)
        if style == "read":
            per_speaker[speaker.id] += 1
            stem = f"{prefix}/{speaker.id}/utt_{per_speaker[speaker.id]:04d}"
            target = rng.uniform(5.0, 17.0)
        elif style == "conversational":
            stem = f"{prefix}/conv_{i + 1:04d}"
            target = 1.2 if i == 0 else rng.uniform(1.5, 6.0)
        else:
            session = ("session_a", "session_b")[i % 2]
            stem = (
                f"{prefix}/clip_{i + 1:04d}"
                if i % 3 == 0
                else f"{prefix}/{session}/part_{i % 4 + 1}/clip_{i + 1:04d}"
            )
            target = rng.uniform(1.5, 17.0)
        clips.append(
            _Clip(
                stem=stem,
                prefix=prefix,
                style=style,
                fmt=fmt,
                sidecar=sidecars[i],
                speaker=speaker,
                text_seed=f"asr-distill-demo/{seed}/{stem}/text",
                target_s=target,
                gain=rng.uniform(0.3, 0.9),
            )
        )
    return clips


# -- rendering ----------------------------------------------------------------------------

_Obj = tuple[str, bytes, CorpusEntry]


def _fit(
    synth: Synthesizer, text_seed: str, style: str, voice: Voice, target_s: float, lo: float, hi: float
) -> tuple[str, np.ndarray]:
    """Text and speech whose duration falls within [lo, hi] seconds, aiming at ``target_s``."""
    n = max(1, round(target_s * voice.words_per_second()))
    for _ in range(8):
        text = make_text(text_seed, style, n)
        audio = synth.synthesize(text, voice)
        dur = len(audio) / SYNTH_RATE
        if lo <= dur <= hi:
            return text, audio
        scaled = n * target_s / dur
        n = max(1, math.floor(scaled) if dur > hi else max(n + 1, math.ceil(scaled)))
    raise RuntimeError(f"could not fit {voice.label} text into {lo}-{hi} s (last {dur:.2f} s)")


def _normalise(audio: np.ndarray, peak: float) -> np.ndarray:
    return (audio * np.float32(peak / float(np.max(np.abs(audio))))).astype(np.float32)


def _serial(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "little")


def _entry(key: str, data: bytes, **kw: Any) -> _Obj:
    entry = CorpusEntry(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **kw)
    return key, data, entry


def _sidecar_json(text: str, speaker: str | None, with_speaker: bool) -> bytes:
    doc: dict[str, str] = {"text": text, "language": LANGUAGE}
    if with_speaker and speaker:
        doc["speaker"] = speaker
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")


def _render_clip(synth: Synthesizer, clip: _Clip) -> list[_Obj]:
    voice = clip.speaker.voice
    text, audio = _fit(synth, clip.text_seed, clip.style, voice, clip.target_s, MIN_CLIP_S, MAX_CLIP_S)
    audio = _normalise(audio, clip.gain)
    key = clip.stem + clip.fmt.ext
    data = encode(audio, clip.fmt, serial=_serial(key))
    sidecar_key = None if clip.sidecar == "none" else f"{clip.stem}.{clip.sidecar}"
    common = {"prefix": clip.prefix, "speaker": clip.speaker.id, "voice": voice.label, "language": LANGUAGE}
    objs = [
        _entry(
            key,
            data,
            kind="audio",
            format=clip.fmt.name,
            outcome="ok",
            text=text,
            duration_s=round(len(audio) / SYNTH_RATE, 4),
            sample_rate=clip.fmt.sample_rate,
            channels=clip.fmt.channels,
            subtype=clip.fmt.subtype,
            sidecar_key=sidecar_key,
            **common,
        )
    ]
    if sidecar_key is not None:
        if clip.sidecar == "txt":
            side = (text + "\n").encode("utf-8")
        else:
            side = _sidecar_json(text, clip.speaker.id, with_speaker=_serial(sidecar_key) % 3 != 0)
        objs.append(
            _entry(
                sidecar_key,
                side,
                kind="sidecar",
                format=clip.sidecar,
                outcome="ok",
                text=text,
                audio_key=key,
                **common,
            )
        )
    return objs


def _broken_tasks(seed: int, synth: Synthesizer, speakers: list[_Speaker]) -> list[Callable[[], list[_Obj]]]:
    """One callable per broken/odd item; each returns the objects it writes."""
    p = BROKEN_PREFIX
    rng = random.Random(f"asr-distill-demo/{seed}/broken/plan")
    voice_of = {
        name: rng.choice(speakers)
        for name in (
            "cut",
            "claims",
            "nan",
            "zero",
            "mp3",
            "latin",
            "odd1",
            "odd2",
            "long",
            "json",
            "conflict",
        )
    }
    f16 = FORMATS["wav_pcm16_16k"]

    def speech(
        name: str, target: float, lo: float, hi: float, style: str = "read"
    ) -> tuple[str, np.ndarray, _Speaker]:
        spk = voice_of[name]
        text, audio = _fit(
            synth, f"asr-distill-demo/{seed}/broken/{name}/text", style, spk.voice, target, lo, hi
        )
        return text, _normalise(audio, 0.7), spk

    def at16k(audio: np.ndarray) -> np.ndarray:
        return soxr.resample(audio, SYNTH_RATE, 16000, quality="HQ").astype(np.float32)

    def info(spk: _Speaker) -> dict[str, Any]:
        return {"prefix": p, "speaker": spk.id, "voice": spk.voice.label, "language": LANGUAGE}

    def empty() -> list[_Obj]:
        return [_entry(f"{p}/empty.wav", b"", kind="audio", prefix=p, format="wav", outcome="empty_file")]

    def not_audio() -> list[_Obj]:
        body = "This is not audio.\nIt is a plain text file whose name ends in .wav by mistake.\n" * 3
        return [
            _entry(
                f"{p}/not_really_audio.wav",
                body.encode("utf-8"),
                kind="audio",
                prefix=p,
                format="wav",
                outcome="not_audio",
            )
        ]

    def header_cut() -> list[_Obj]:
        text, audio, spk = speech("cut", 2.0, 1.0, 4.0, "conversational")
        full = encode(audio, f16)
        return [
            _entry(
                f"{p}/header_cut_30b.wav",
                full[:30],
                kind="audio",
                format="wav",
                outcome="header_cut",
                text=text,
                detail="first 30 bytes of a valid 16 kHz PCM_16 WAV",
                **info(spk),
            )
        ]

    def data_cut() -> list[_Obj]:
        text, audio, spk = speech("cut", 2.0, 1.0, 4.0, "conversational")
        pcm = _pcm16(at16k(audio))
        data = wav_bytes(pcm[:1000], sample_rate=16000, channels=1, bits=16, declared_data_bytes=len(pcm))
        return [
            _entry(
                f"{p}/data_cut_short.wav",
                data,
                kind="audio",
                format="wav_pcm16_16k",
                outcome="data_cut_short",
                text=text,
                duration_s=1000 / 32000,
                header_duration_s=round(len(pcm) / 32000, 4),
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                detail=f"data chunk declares {len(pcm)} bytes, holds 1000",
                **info(spk),
            )
        ]

    def claims() -> list[_Obj]:
        spk = voice_of["claims"]
        phrases = ["Thank you.", "Hello there.", "Yes, please.", "Good morning.", "Not today.", "Okay."]
        random.Random(f"asr-distill-demo/{seed}/broken/claims/text").shuffle(phrases)
        fast = dataclasses.replace(spk.voice, speed=190) if spk.voice.engine == "espeak-ng" else spk.voice
        for text in phrases:  # a phrase that fits in 1 s, so the text is exactly what the data holds
            audio = _normalise(synth.synthesize(text, fast), 0.7)
            if len(audio) <= SYNTH_RATE:
                break
        else:
            raise RuntimeError(f"no phrase fits in 1 s with {fast.label}")
        pcm16 = at16k(audio)[:16000]
        pcm16 = np.concatenate([pcm16, np.zeros(16000 - len(pcm16), np.float32)])
        declared = 2 * 3600 * 16000 * 2
        data = wav_bytes(_pcm16(pcm16), sample_rate=16000, channels=1, bits=16, declared_data_bytes=declared)
        return [
            _entry(
                f"{p}/claims_two_hours.wav",
                data,
                kind="audio",
                format="wav_pcm16_16k",
                outcome="header_overclaims",
                text=text,
                duration_s=1.0,
                header_duration_s=7200.0,
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                detail="header declares 7200 s, data holds 1 s",
                **(info(spk) | {"voice": fast.label}),
            )
        ]

    def silence() -> list[_Obj]:
        data = wav_bytes(bytes(6 * 16000 * 2), sample_rate=16000, channels=1, bits=16)
        return [
            _entry(
                f"{p}/digital_silence.wav",
                data,
                kind="audio",
                prefix=p,
                format="wav_pcm16_16k",
                outcome="digital_silence",
                duration_s=6.0,
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                detail="6 s of all-zero samples",
            )
        ]

    def non_finite() -> list[_Obj]:
        text, audio, spk = speech("nan", 3.0, 1.5, 6.0)
        x = at16k(audio)
        x[len(x) // 4 : len(x) // 4 + 800] = np.nan
        x[len(x) // 2 : len(x) // 2 + 50] = np.inf
        x[3 * len(x) // 4 : 3 * len(x) // 4 + 50] = -np.inf
        data = wav_bytes(x.astype("<f4").tobytes(), sample_rate=16000, channels=1, bits=32, format_tag=3)
        side = _sidecar_json(text, spk.id, with_speaker=True)
        return [
            _entry(
                f"{p}/nan_inf_float.wav",
                data,
                kind="audio",
                format="wav_float32_16k",
                outcome="non_finite",
                text=text,
                duration_s=round(len(x) / 16000, 4),
                sample_rate=16000,
                channels=1,
                subtype="FLOAT",
                sidecar_key=f"{p}/nan_inf_float.json",
                detail="800 NaN, 50 +Inf, 50 -Inf samples",
                **info(spk),
            ),
            _entry(
                f"{p}/nan_inf_float.json",
                side,
                kind="sidecar",
                format="json",
                outcome="ok",
                text=text,
                audio_key=f"{p}/nan_inf_float.wav",
                **info(spk),
            ),
        ]

    def zero_channels() -> list[_Obj]:
        text, audio, spk = speech("zero", 1.5, 1.0, 3.0, "conversational")
        pcm = _pcm16(at16k(audio))
        data = wav_bytes(pcm, sample_rate=16000, channels=0, bits=16)
        return [
            _entry(
                f"{p}/zero_channels.wav",
                data,
                kind="audio",
                format="wav",
                outcome="zero_channels",
                text=text,
                sample_rate=16000,
                channels=0,
                subtype="PCM_16",
                detail=f"{len(pcm)} bytes of 16-bit speech",
                **info(spk),
            )
        ]

    def truncated_mp3() -> list[_Obj]:
        text, audio, spk = speech("mp3", 8.0, 6.0, 12.0)
        full = encode(audio, FORMATS["mp3_22k"])
        cut = full[: len(full) // 4]
        return [
            _entry(
                f"{p}/truncated.mp3",
                cut,
                kind="audio",
                format="mp3_22k",
                outcome="truncated_mp3",
                text=text,
                header_duration_s=round(len(audio) / SYNTH_RATE, 4),
                sample_rate=22050,
                channels=1,
                subtype="MPEG_LAYER_III",
                detail=f"first {len(cut)} of {len(full)} bytes",
                **info(spk),
            )
        ]

    def latin1() -> list[_Obj]:
        spk = voice_of["latin"]
        r = random.Random(f"asr-distill-demo/{seed}/broken/latin/text")
        text = f"The café near {r.choice(_PLACES)} serves crème brûlée {r.choice(_TIMES)}."
        audio = _normalise(synth.synthesize(text, spk.voice), 0.6)
        data = encode(audio, f16)
        key = f"{p}/latin1_sidecar.wav"
        side_key = f"{p}/latin1_sidecar.txt"
        return [
            _entry(
                key,
                data,
                kind="audio",
                format=f16.name,
                outcome="ok",
                text=text,
                duration_s=round(len(audio) / SYNTH_RATE, 4),
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                detail="its .txt sidecar is latin-1, not UTF-8",
                **info(spk),
            ),
            _entry(
                side_key,
                (text + "\n").encode("latin-1"),
                kind="sidecar",
                format="txt",
                outcome="not_utf8",
                text=text,
                audio_key=key,
                **info(spk),
            ),
        ]

    def odd_keys() -> list[_Obj]:
        objs: list[_Obj] = []
        for name, stem, fmt, side in (
            ("odd1", f"{p}/café olé", f16, "txt"),
            ("odd2", f"{p}/日本語 clip", FORMATS["flac_16k"], "json"),
        ):
            text, audio, spk = speech(name, 3.0, 1.0, 6.0, "conversational")
            key = stem + fmt.ext
            side_key = f"{stem}.{side}"
            body = (text + "\n").encode("utf-8") if side == "txt" else _sidecar_json(text, spk.id, True)
            objs.append(
                _entry(
                    key,
                    encode(audio, fmt),
                    kind="audio",
                    format=fmt.name,
                    outcome="ok",
                    text=text,
                    duration_s=round(len(audio) / SYNTH_RATE, 4),
                    sample_rate=fmt.sample_rate,
                    channels=fmt.channels,
                    subtype=fmt.subtype,
                    sidecar_key=side_key,
                    detail="valid audio under a key with spaces and non-ASCII",
                    **info(spk),
                )
            )
            objs.append(
                _entry(
                    side_key,
                    body,
                    kind="sidecar",
                    format=side,
                    outcome="ok",
                    text=text,
                    audio_key=key,
                    **info(spk),
                )
            )
        return objs

    def too_long() -> list[_Obj]:
        text, audio, spk = speech("long", 45.0, 43.0, 47.0)
        key = f"{p}/long_45s.flac"
        fmt = FORMATS["flac_16k"]
        return [
            _entry(
                key,
                encode(audio, fmt),
                kind="audio",
                format=fmt.name,
                outcome="too_long",
                text=text,
                duration_s=round(len(audio) / SYNTH_RATE, 4),
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                sidecar_key=f"{p}/long_45s.txt",
                detail="valid speech longer than 30 s",
                **info(spk),
            ),
            _entry(
                f"{p}/long_45s.txt",
                (text + "\n").encode("utf-8"),
                kind="sidecar",
                format="txt",
                outcome="ok",
                text=text,
                audio_key=key,
                **info(spk),
            ),
        ]

    def bad_json() -> list[_Obj]:
        text, audio, spk = speech("json", 2.5, 1.0, 5.0, "conversational")
        key, side_key = f"{p}/bad_json_sidecar.wav", f"{p}/bad_json_sidecar.json"
        body = _sidecar_json(text, spk.id, True)
        body = body[: body.index(b'"text": "') + 9 + len(text.encode()) // 2]
        return [
            _entry(
                key,
                encode(audio, f16),
                kind="audio",
                format=f16.name,
                outcome="ok",
                text=text,
                duration_s=round(len(audio) / SYNTH_RATE, 4),
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                detail="its .json sidecar is cut mid-string",
                **info(spk),
            ),
            _entry(
                side_key,
                body,
                kind="sidecar",
                format="json",
                outcome="invalid_json",
                audio_key=key,
                **info(spk),
            ),
        ]

    def conflicting() -> list[_Obj]:
        text, audio, spk = speech("conflict", 2.5, 1.0, 5.0, "conversational")
        wrong = make_text(
            f"asr-distill-demo/{seed}/broken/conflict/wrong", "conversational", len(text.split())
        )
        stem = f"{p}/conflicting_sidecars"
        key = stem + ".wav"
        return [
            _entry(
                key,
                encode(audio, f16),
                kind="audio",
                format=f16.name,
                outcome="ok",
                text=text,
                duration_s=round(len(audio) / SYNTH_RATE, 4),
                sample_rate=16000,
                channels=1,
                subtype="PCM_16",
                sidecar_key=stem + ".json",
                detail="a .txt and a .json that disagree; the .json is right",
                **info(spk),
            ),
            _entry(
                stem + ".json",
                _sidecar_json(text, spk.id, True),
                kind="sidecar",
                format="json",
                outcome="ok",
                text=text,
                audio_key=key,
                **info(spk),
            ),
            _entry(
                stem + ".txt",
                (wrong + "\n").encode("utf-8"),
                kind="sidecar",
                format="txt",
                outcome="conflicting_sidecars",
                text=wrong,
                audio_key=key,
                **info(spk),
            ),
        ]

    return [
        empty,
        not_audio,
        header_cut,
        data_cut,
        claims,
        silence,
        non_finite,
        zero_channels,
        truncated_mp3,
        latin1,
        odd_keys,
        too_long,
        bad_json,
        conflicting,
    ]


# -- entry point --------------------------------------------------------------------------


def generate_corpus(
    store: Storage,
    *,
    seed: int = 0,
    size: str = "small",
    prefixes: int = 3,
    broken: bool = True,
    marker: bool = True,
    workers: int | None = None,
    use_flite: bool = True,
    espeak_path: str | None = None,
    flite_path: str | None = None,
    multilingual: bool = False,
) -> CorpusReport:
    """Synthesise the demo corpus into ``store`` and describe every object written.

    Objects of a prefix are written in key order, its ``_SUCCESS`` marker (empty) last. Keys outside
    the corpus are left alone; keys inside it are overwritten.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    if not 1 <= prefixes <= MAX_PREFIXES:
        raise ValueError(f"prefixes must be between 1 and {MAX_PREFIXES}, not {prefixes}")
    synth = Synthesizer(espeak_path, flite_path, use_flite=use_flite)
    speakers = _speakers(seed, synth)
    names = prefix_names(prefixes)
    groups: list[tuple[str, list[Callable[[], list[_Obj]]]]] = []
    for i, name in enumerate(names):
        clips = _plan_prefix(seed, i, name, SIZES[size], speakers)
        groups.append((name, [lambda c=c: _render_clip(synth, c) for c in clips]))
    if multilingual:  # ja_read/ and mixed_lang/ (needs the TTS extra; see asr_distill.demo.japanese)
        from asr_distill.demo.mixed import multilingual_groups

        groups.extend(multilingual_groups(synth))
    if broken:
        groups.append((BROKEN_PREFIX, _broken_tasks(seed, synth, speakers)))

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    report = CorpusReport(uri=store.url(), seed=seed, size=size, flite_voices=synth.flite_voices)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asrd-demo") as pool:
        futures = [(name, [pool.submit(task) for task in tasks]) for name, tasks in groups]
        for name, futs in futures:
            objs = sorted((obj for fut in futs for obj in fut.result()), key=lambda o: o[0])
            _check_unique(o[0] for o in objs)
            for key, data, entry in objs:
                store.write_bytes(key, data)
                report.entries.append(entry)
            if marker:
                key = join_key(name, MARKER_NAME)
                store.write_bytes(key, b"")
                report.entries.append(
                    CorpusEntry(
                        key=key,
                        kind="marker",
                        prefix=name,
                        format="",
                        outcome="ok",
                        sha256=hashlib.sha256(b"").hexdigest(),
                    )
                )
    return report


def _check_unique(keys: Iterable[str]) -> None:
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise RuntimeError(f"corpus plan produced duplicate keys: {dup[:5]}")
