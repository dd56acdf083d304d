"""Audio decoding shared by the stages: any indexed clip -> float32, 16 kHz mono."""

from asr_distill.audio.decode import (
    DECODE_ERRORS,
    DecodeError,
    decode,
    decode_object,
    open_decoder,
)

__all__ = [
    "DECODE_ERRORS",
    "DecodeError",
    "decode",
    "decode_object",
    "open_decoder",
]
