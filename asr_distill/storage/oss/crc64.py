"""CRC-64/XZ (ECMA-182 reflected), as OSS returns in ``x-oss-hash-crc64ecma``, and its combination.

One table, built once; crcmod runs it in C when its extension is built (~0.3-1 GB/s), in pure Python
otherwise (orders of magnitude slower: correct, but a warning is logged once).
"""

from __future__ import annotations

import logging
import sys
import threading

import crcmod

# Records keep the package's logger name (what `managed_python_loggers` in dagster.yaml names).
logger = logging.getLogger(__package__)

_CRC64_FUN = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
# (``crcmod.crcmod`` is shadowed by a re-exported name: look the implementation module up.)
CRC64_IN_C: bool = bool(getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", False))
_CRC_WARNED = False


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/XZ of ``data``; pass the CRC of the preceding bytes as ``crc`` to continue one."""
    return _CRC64_FUN(data, crc)


def warn_if_slow_crc() -> None:
    global _CRC_WARNED
    if not CRC64_IN_C and not _CRC_WARNED:
        _CRC_WARNED = True
        logger.warning(
            "crcmod's C extension is not built: CRC64 checks of OSS transfers run in pure Python (slow); "
            "reinstall crcmod with a C compiler available"
        )


# -- CRC-64/XZ combination (zlib's crc32_combine method, 64-bit) --------------------------------
# oss2's combine is pure-Python GF(2) matrix algebra rebuilt per call (~40 ms for a 16 MiB part);
# with the operators for 2**k zero bytes computed once, a combination costs well under 1 ms.
_CRC64_POLY_REFLECTED = 0xC96C5795D7870F42
_ZERO_BYTE_OPERATORS: list[list[int]] = []
_ZERO_OPERATORS_LOCK = threading.Lock()


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _zero_byte_operators() -> list[list[int]]:
    with _ZERO_OPERATORS_LOCK:
        if not _ZERO_BYTE_OPERATORS:
            op = [_CRC64_POLY_REFLECTED] + [1 << (n - 1) for n in range(1, 64)]  # one zero bit
            for _ in range(3):  # -> one zero byte
                op = [_gf2_times(op, op[n]) for n in range(64)]
            for _ in range(64):  # 2**k zero bytes, k = 0..63
                _ZERO_BYTE_OPERATORS.append(op)
                op = [_gf2_times(op, op[n]) for n in range(64)]
        return _ZERO_BYTE_OPERATORS


def crc64_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-64/XZ (as in ``x-oss-hash-crc64ecma``) of ``a + b`` from ``crc(a)``, ``crc(b)``, ``len(b)``."""
    if len2 <= 0:
        return crc1
    ops = _zero_byte_operators()
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(ops[k], crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2
