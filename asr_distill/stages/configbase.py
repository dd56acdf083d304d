"""One small base of the stage config dataclasses: ``from_dict`` (unknown fields rejected), ``to_dict``,
canonical JSON and a fingerprint.

A subclass is a frozen dataclass. ``_COERCE`` maps a field to the function that turns its JSON value back
into the field's type in :meth:`from_dict` (lists -> ``tuple`` or ``frozenset``); :meth:`to_dict` writes
sets as sorted lists and tuples as lists, so ``from_dict(to_dict())`` round-trips. The fingerprint is the
sha256 of :meth:`fingerprint_payload` as sorted-key JSON (by default :meth:`to_dict`; a stage adds or
removes what decides its output bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any, ClassVar, Self


class StageConfig:
    """Mixin of the frozen stage config dataclasses (see the module docstring)."""

    _COERCE: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        for name, value in out.items():
            if isinstance(value, frozenset | set):
                out[name] = sorted(value)
            elif isinstance(value, tuple):
                out[name] = list(value)
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), e.g. stored in output metadata for provenance."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        data = dict(data)
        for name, coerce in cls._COERCE.items():
            if name in data:
                data[name] = coerce(data[name])
        return cls(**data)

    def fingerprint_payload(self) -> dict[str, Any]:
        """What the fingerprint covers (default: every setting)."""
        return self.to_dict()

    def fingerprint(self) -> str:
        """sha256 of :meth:`fingerprint_payload` as sorted-key JSON."""
        return hashlib.sha256(json.dumps(self.fingerprint_payload(), sort_keys=True).encode()).hexdigest()
