"""User-facing configuration read from the environment (non-secret values only)."""

from __future__ import annotations

import os

RAW_ENV = "ASR_DISTILL_RAW"
LAKE_ENV = "ASR_DISTILL_LAKE"
DEFAULT_RAW = "data/raw"
DEFAULT_LAKE = "data/lake"


def _resolve(value: str) -> str:
    if "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def raw_uri() -> str:
    """Where raw audio lives: ``$ASR_DISTILL_RAW`` or ``./data/raw``."""
    return _resolve(os.environ.get(RAW_ENV) or DEFAULT_RAW)


def lake_uri() -> str:
    """Where every derived artefact is written: ``$ASR_DISTILL_LAKE`` or ``./data/lake``."""
    return _resolve(os.environ.get(LAKE_ENV) or DEFAULT_LAKE)


EXECUTOR_ENV = "ASR_DISTILL_EXECUTOR"


def executor_name() -> str:
    """The run executor: ``in_process`` (default), ``multiprocess`` or ``k8s``."""
    return (os.environ.get(EXECUTOR_ENV) or "in_process").strip()
