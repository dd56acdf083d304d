"""pytest fixtures for the OSS test server (register with ``pytest_plugins = ["oss_server.fixtures"]``
or import them into a test module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .credentials import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    REGION,
    STS_ACCESS_KEY_ID,
    STS_ACCESS_KEY_SECRET,
    STS_TOKEN,
)
from .server import FaultConfig, OSSTestServer


@pytest.fixture(scope="session")
def oss_server_session() -> Iterator[OSSTestServer]:
    """One server for the session: 127.0.0.1, ephemeral port, test credentials registered."""
    server = OSSTestServer(region=REGION).start()
    server.add_credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
    server.add_credentials(STS_ACCESS_KEY_ID, STS_ACCESS_KEY_SECRET, STS_TOKEN)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def oss_server(oss_server_session: OSSTestServer) -> Iterator[OSSTestServer]:
    """The session server, with faults, counters and clock skew reset for each test."""
    oss_server_session.faults = FaultConfig()
    oss_server_session.layer.clock_offset_s = 0.0
    oss_server_session.stats.clear()
    try:
        yield oss_server_session
    finally:
        oss_server_session.faults = FaultConfig()
        oss_server_session.layer.clock_offset_s = 0.0


@pytest.fixture()
def oss_bucket(oss_server: OSSTestServer) -> str:
    """A fresh, empty bucket."""
    return oss_server.create_bucket()
