"""OSS-protocol test server (moto S3 + an OSS compatibility layer) for tests on 127.0.0.1."""

from .credentials import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    REGION,
    STS_ACCESS_KEY_ID,
    STS_ACCESS_KEY_SECRET,
    STS_TOKEN,
    store_options,
)
from .server import FaultConfig, OSSTestServer, crc64

__all__ = [
    "ACCESS_KEY_ID",
    "ACCESS_KEY_SECRET",
    "REGION",
    "STS_ACCESS_KEY_ID",
    "STS_ACCESS_KEY_SECRET",
    "STS_TOKEN",
    "FaultConfig",
    "OSSTestServer",
    "crc64",
    "store_options",
]
