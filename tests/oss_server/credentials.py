"""Test credentials the OSS test server accepts, and client options that use them."""

from __future__ import annotations

from typing import Any

# Distinctive values, so a leak into logs or messages is easy to search for.
ACCESS_KEY_ID = "LTAItestAccessKey01"
ACCESS_KEY_SECRET = "zS3cr3t-0f-the-t3st-acc0unt-K9q"
STS_ACCESS_KEY_ID = "STS.testTemporaryKey02"
STS_ACCESS_KEY_SECRET = "zSTS-s3cr3t-t3mp-V7x"
STS_TOKEN = "CAIS-sts-t0ken-Zm9vYmFyYmF6-Q1w2e3"
REGION = "cn-test-1"


def store_options(server: Any, *, sts: bool = False, **overrides: Any) -> dict[str, Any]:
    """Options for ``OSSStorage`` / ``open_storage`` against ``server``."""
    options: dict[str, Any] = {
        "endpoint": server.endpoint,
        "region": server.region,
        "access_key_id": STS_ACCESS_KEY_ID if sts else ACCESS_KEY_ID,
        "access_key_secret": STS_ACCESS_KEY_SECRET if sts else ACCESS_KEY_SECRET,
        "security_token": STS_TOKEN if sts else None,
    }
    options.update(overrides)
    return options
