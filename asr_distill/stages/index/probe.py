"""Probe one audio object: container, codec, rate, channels and the duration of the real data.

Header values are never trusted on their own:

* PCM containers (WAV, AIFF, ...): libsndfile derives frames from the bytes present; the header's
  own claim is read separately (RIFF ``data`` chunk size) and reported when it differs.
* Compressed formats (FLAC, MP3, Ogg): the last frames are read back; if they are not there the
  stream is decoded to count what really exists (only broken files pay for that).
* What libsndfile cannot open (AAC/M4A, or a damaged FLAC) is demuxed with PyAV and the packet
  durations are summed.

A probe never raises for bad data: it returns a :class:`Probe` with ``error`` set to a reason code
from :data:`~asr_distill.stages.index.schema.PROBE_ERRORS`.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

TAIL_FRAMES = 1024
# The header's claim is reported when it differs from the data by more than this.
CLAIM_TOLERANCE_S = 0.02
CLAIM_TOLERANCE_REL = 0.005
PCM_CONTAINERS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "NIST", "IRCAM", "VOC"})
# libsndfile takes an Ogg stream's length from its last page, i.e. from the data present.
TRUSTED_LENGTH = PCM_CONTAINERS | {"OGG"}
HEAD_BYTES = 4096
MAX_HEAD_BYTES = 65536


@dataclass(slots=True)
class Probe:
    container: str | None = None
    codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    header_duration_s: float | None = None
    error: str | None = None
    detail: str | None = None


def sniff_container(head: bytes) -> str | None:
    """Container named by the first bytes, independent of the file name."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    return None


def riff_claimed_frames(head: bytes) -> int | None:
    """Frames the RIFF/WAVE header claims (``data`` chunk size / block align), if readable."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align, data_size = 12, None, None
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and pos + 8 + 14 <= len(head):
            block_align = struct.unpack_from("<H", head, pos + 8 + 12)[0]
        elif cid == b"data":
            data_size = size
            break
        pos += 8 + size + (size & 1)
    if not block_align or data_size is None or data_size in (0, 0xFFFFFFFF):
        return None
    return data_size // block_align


_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_declared_bytes(head: bytes) -> int | None:
    """Stream size the Xing/Info header of an MP3 declares (bytes from the first frame), if any."""
    pos = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        pos = 10 + size + (10 if head[5] & 0x10 else 0)
    while pos + 4 <= len(head) and not (head[pos] == 0xFF and head[pos + 1] & 0xE0 == 0xE0):
        pos += 1
    if pos + 4 > len(head):
        return None
    version = (head[pos + 1] >> 3) & 0x3  # 3 = MPEG1, 2 = MPEG2, 0 = MPEG2.5
    mono = (head[pos + 3] >> 6) & 0x3 == 3
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    tag = pos + 4 + side
    if head[tag : tag + 4] not in (b"Xing", b"Info") or tag + 16 > len(head):
        return None
    flags = struct.unpack_from(">I", head, tag + 4)[0]
    offset = tag + 8 + (4 if flags & 1 else 0)
    if not flags & 2 or offset + 4 > len(head):
        return None
    return pos + struct.unpack_from(">I", head, offset)[0]


def _classify_sf_error(message: str) -> str:
    m = message.lower()
    if "channel count is zero" in m:
        return "zero_channels"
    if "format not recognised" in m or "format not recognized" in m:
        return "unrecognised_format"
    if any(s in m for s in ("chunk", "header", "lost sync", "malformed", "bad format", "not a wav")):
        return "malformed_header"
    return "decode_error"


def _differs(claimed: float, real: float) -> bool:
    return abs(claimed - real) > max(CLAIM_TOLERANCE_S, CLAIM_TOLERANCE_REL * claimed)


def _count_frames(f: sf.SoundFile) -> int:
    f.seek(0)
    n = 0
    while True:
        block = f.read(65536, dtype="float32", always_2d=True)
        if len(block) == 0:
            return n
        n += len(block)


def _probe_soundfile(source: str | BinaryIO, head: bytes, size: int) -> Probe:
    with sf.SoundFile(source) as f:
        fmt = f.format  # each property is a libsndfile call: read them once
        p = Probe(container=fmt, codec=f.subtype, sample_rate=f.samplerate, channels=f.channels)
        header_frames = f.frames
        if p.channels is not None and p.channels <= 0:
            return Probe(container=fmt, codec=p.codec, error="zero_channels", detail="0 channels")
        declared = mp3_declared_bytes(head) if fmt == "MP3" else None
        if fmt in TRUSTED_LENGTH or (declared is not None and size >= declared):
            # Frames derived from the bytes present (PCM, Ogg), or an MP3 whose Xing header's byte
            # count is all there: no read-back needed.
            real = header_frames
            claimed = riff_claimed_frames(head) if fmt in ("WAV", "WAVEX") else None
        else:
            claimed = header_frames
            real = header_frames
            want = min(TAIL_FRAMES, header_frames)
            try:
                f.seek(max(0, header_frames - TAIL_FRAMES))
                got = len(f.read(want, dtype="float32", always_2d=True))
            except (sf.LibsndfileError, RuntimeError):
                got = -1
            if got != want:
                real = _count_frames(f)
    p.frames = real
    p.duration_s = real / p.sample_rate if p.sample_rate else None
    if claimed is not None and p.sample_rate and _differs(claimed / p.sample_rate, p.duration_s or 0.0):
        p.header_duration_s = claimed / p.sample_rate
    if real == 0:
        p.error, p.detail = "no_audio_data", "the stream holds no audio frames"
    return p


def _probe_pyav(source: str | BinaryIO, sniffed: str | None) -> Probe:
    import av  # PyAV: only for what libsndfile cannot read

    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            return Probe(error="no_audio_data", detail="no audio stream in the container")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        p = Probe(
            container=sniffed or (container.format.name.split(",")[0].upper() if container.format else None),
            codec=ctx.name,
            sample_rate=ctx.sample_rate or stream.rate,
            channels=ctx.channels,
        )
        if not p.channels:
            p.error, p.detail = "zero_channels", "0 channels"
            return p
        ticks = 0
        for packet in container.demux(stream):
            if packet.duration:
                ticks += packet.duration
        real_s = float(ticks * stream.time_base) if stream.time_base else 0.0
        p.duration_s = real_s
        p.frames = round(real_s * p.sample_rate) if p.sample_rate else None
        claimed = None
        if stream.duration and stream.time_base:
            claimed = float(stream.duration * stream.time_base)
        elif container.duration:
            claimed = container.duration / 1_000_000
        if claimed is not None and _differs(claimed, real_s):
            p.header_duration_s = claimed
        if not p.frames:
            p.error, p.detail = "no_audio_data", "the stream holds no audio packets"
        return p


def _wants_more_head(head: bytes) -> bool:
    """A WAV whose ``data`` chunk starts beyond the first bytes (big metadata chunks), or an ID3 tag."""
    return (head[:4] == b"RIFF" and b"data" not in head) or head[:3] == b"ID3"


def _read_upto(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from ``fd`` (fewer only at the end of the file)."""
    data = os.read(fd, n)
    while len(data) < n:
        more = os.read(fd, n - len(data))
        if not more:
            break
        data += more
    return data


def probe_audio(source: str | Path | bytes, *, size: int | None = None) -> Probe:
    """Probe a local file path or the object's bytes. Never raises for bad audio."""
    if isinstance(source, bytes):
        head = source[:HEAD_BYTES]
        if _wants_more_head(head):
            head = source[:MAX_HEAD_BYTES]
        size = len(source) if size is None else size

        def opener() -> str | BinaryIO:
            return io.BytesIO(source)
    else:
        path = str(source)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))  # no buffered file object: cheaper
        try:
            head = _read_upto(fd, HEAD_BYTES)
            if _wants_more_head(head):
                head += _read_upto(fd, MAX_HEAD_BYTES - len(head))
            if size is None:
                size = os.fstat(fd).st_size
        finally:
            os.close(fd)

        def opener() -> str | BinaryIO:
            return path

    if size == 0:
        return Probe(error="empty_object", detail="0 bytes")
    sniffed = sniff_container(head)
    try:
        return _probe_soundfile(opener(), head, size)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        sf_error = _classify_sf_error(str(exc))
        sf_detail = str(exc).split(": ", 1)[-1]
    if sf_error == "zero_channels":
        return Probe(container=sniffed, error=sf_error, detail=sf_detail)
    try:
        return _probe_pyav(opener(), sniffed)
    except Exception as exc:  # PyAV raises many FFmpeg error types
        av_detail = re.sub(r": '[^']*'$", "", f"{type(exc).__name__}: {exc}")[:300]  # drop the file name
    if sniffed is None:
        return Probe(error="unrecognised_format", detail=f"libsndfile: {sf_detail}; ffmpeg: {av_detail}")
    error = "malformed_header" if sf_error == "unrecognised_format" else sf_error
    return Probe(container=sniffed, error=error, detail=f"libsndfile: {sf_detail}; ffmpeg: {av_detail}")
