"""Audio decoding shared by the stages: any indexed clip -> float32, 16 kHz mono."""

from asr_distill.audio.decode import (
    BLOCK_FRAMES,
    DECODE_ERRORS,
    DEFAULT_QUALITY,
    TARGET_RATE,
    AudioBlock,
    AudioDecoder,
    DecodedAudio,
    DecodeError,
    decode,
    decode_object,
    open_decoder,
)

__all__ = [
    "BLOCK_FRAMES",
    "DECODE_ERRORS",
    "DEFAULT_QUALITY",
    "TARGET_RATE",
    "AudioBlock",
    "AudioDecoder",
    "DecodeError",
    "DecodedAudio",
    "decode",
    "decode_object",
    "open_decoder",
]
