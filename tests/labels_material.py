"""Real test material for the labels stage: espeak-ng speech and small WebDataset shards.

Used by the tests and ``bench/bench_labels.py`` (test-only: not part of the package). Shards follow the
project's layout: ``<key>.flac`` (16 kHz mono) + ``<key>.json``, written with ``mtime=0`` (reproducible).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from asr_distill.storage import Storage
from asr_distill.teachers.base import SAMPLE_RATE

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sold fifty bonds to the bank on Tuesday morning.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is cold and windy with a chance of rain in the evening.",
    "We need to finish the report before the meeting starts at noon.",
    "Artificial intelligence is changing the way people work and learn.",
    "A long time ago in a quiet village there lived an old clockmaker and his cat.",
    "Six spoons of fresh snow peas and five thick slabs of blue cheese.",
)


def espeak(text: str, *, voice: str | None = None, speed: int | None = None) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng (its default voice and speed unless given); float32 mono 16 kHz."""
    exe = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"
    cmd = [exe, "--stdout"]
    if voice:
        cmd += ["-v", voice]
    if speed:
        cmd += ["-s", str(speed)]
    wav = subprocess.run([*cmd, text], capture_output=True, check=True, timeout=60).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def flac_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def float_wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """32-bit float WAV: the one common format that can carry NaN/Inf samples (FLAC cannot)."""
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@dataclass
class ShardSample:
    """One sample to write: ``members`` maps extension -> bytes (e.g. ``{"flac": ..., "json": ...}``)."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def speech(
        cls, key: str, audio: np.ndarray, meta: dict[str, Any] | None = None, *, fmt: str = "flac"
    ) -> ShardSample:
        members = {"flac": flac_bytes(audio)} if fmt == "flac" else {"wav": float_wav_bytes(audio)}
        if meta is not None:
            members["json"] = json.dumps(meta, sort_keys=True).encode()
        return cls(key, members)


def tar_bytes(samples: Iterable[ShardSample]) -> bytes:
    """A WebDataset tar (members in sample order, extensions sorted, mtime 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            for ext in sorted(s.members):
                data = s.members[ext]
                info = tarfile.TarInfo(f"{s.key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shard(store: Storage, key: str, samples: Iterable[ShardSample]) -> str:
    store.write_bytes(key, tar_bytes(samples))
    return key
