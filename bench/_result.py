"""What every benchmark writes for ``bench/run_all.py``: a small JSON file of result rows.

``bench/out/<name>.json`` holds ``{"benchmark", "quick", "machine_start", "machine_end", "rows": [...]}``
where each row is ``{"stage", "ratio", "target", "pass", "detail"}``: ``ratio`` is the measured
figure the target is about (a float, or None when nothing was measured), ``target`` a short text
(">= 0.8"), ``pass`` True/False (None: informational, no target). ``machine_*`` record the load average,
the CPU model and whether the CPU has SHA extensions (``sha_ni``), because every timing depends on them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def cpu_info() -> dict[str, Any]:
    """CPU model name and whether it has SHA extensions, from /proc/cpuinfo (first processor)."""
    model, sha_ni = platform.processor() or "unknown", False
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    sha_ni = "sha_ni" in value.split()
                    break  # flags come after the model name; the first processor is enough
    except OSError:
        pass
    return {"cpu_model": model, "sha_ni": sha_ni, "cpus": os.cpu_count()}


def machine() -> dict[str, Any]:
    """Load average (1/5/15 min) now, CPU model, SHA extensions, core count and the time."""
    return {
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        **cpu_info(),
        "python": platform.python_version(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def row(
    stage: str, ratio: float | None, target: str, passed: bool | None, detail: str = ""
) -> dict[str, Any]:
    return {
        "stage": stage,
        "ratio": None if ratio is None else round(float(ratio), 3),
        "target": target,
        "pass": passed,
        "detail": detail,
    }


def write_result(
    name: str,
    rows: list[dict[str, Any]],
    *,
    quick: bool,
    machine_start: dict[str, Any],
    extra: dict[str, Any] | None = None,
    out_dir: Path = OUT,
) -> Path:
    """Write ``out_dir/<name>.json`` atomically; returns its path."""
    doc = {
        "benchmark": name,
        "quick": quick,
        "machine_start": machine_start,
        "machine_end": machine(),
        "rows": rows,
        **(extra or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
