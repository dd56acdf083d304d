"""Log redaction: signatures, STS tokens and registered secrets never reach a log record.

Importing this module installs the filter on oss2's loggers (oss2 logs request headers at debug level).
"""

from __future__ import annotations

import logging
import re
import threading

_SENSITIVE = (
    # header / dict / canonical-request forms: 'authorization': '...', x-oss-security-token:...
    re.compile(
        r"""(?P<k>['"]?(?:authorization|x-oss-security-token|security-token)['"]?\s*[:=]\s*['"]?)"""
        r"""(?P<v>[^'"\n,&}]+)""",
        re.IGNORECASE,
    ),
    # signature parameters (Authorization header fields, signed URLs)
    re.compile(r"""(?P<k>\b(?:Signature|x-oss-signature|OSSAccessKeyId)=)(?P<v>[^'"\s,&]+)"""),
)
_REDACT_VALUES: set[str] = set()
_REDACT_LOCK = threading.Lock()
_OSS2_LOGGERS = (
    "oss2",
    "oss2.api",
    "oss2.auth",
    "oss2.http",
    "oss2.models",
    "oss2.utils",
    "oss2.iterators",
    "oss2.resumable",
    "oss2.xml_utils",
    "oss2.credentials",
    "oss2.crypto",
    "oss2.crypto_bucket",
    "oss2.select_response",
    "oss2.task_queue",
)


class RedactCredentials(logging.Filter):
    """Scrubs signatures, STS tokens and registered secrets out of oss2's (debug) log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        clean = message
        for pattern in _SENSITIVE:
            clean = pattern.sub(lambda m: m.group("k") + "***", clean)
        for value in tuple(_REDACT_VALUES):
            if value in clean:
                clean = clean.replace(value, "***")
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = RedactCredentials()
for _name in _OSS2_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


def register_secret(*values: str | None) -> None:
    """Scrub these values (secrets of a store being built) from every oss2 log record from now on."""
    with _REDACT_LOCK:
        _REDACT_VALUES.update(v for v in values if v and len(v) >= 4)
