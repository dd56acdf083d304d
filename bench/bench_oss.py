"""Throughput of the OSS backend against the OSS test server on 127.0.0.1 (a script, not a test).

    .venv/bin/python bench/bench_oss.py [--small 400] [--large-mib 64] [--threads 8]
                                        [--server subprocess|inprocess]

The server (moto + the OSS layer in tests/oss_server) runs in a child process by default (its own
GIL; on a 2-core machine it still competes with the client for CPU, which real OSS does not);
``--server inprocess`` shares this process and its GIL. The numbers are a floor for the client,
not a prediction for real OSS. Each row compares the backend with bare oss2 calls on the same
objects to show the wrapper's own cost (retries, CRC64 on reads and writes, Content-MD5 on writes,
listing checks); bare oss2 runs with its defaults (its own CRC64, requests reading the environment
on every request).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import oss2  # noqa: E402
from bench_oss_lineage import BUCKET_RAW, Server  # noqa: E402
from oss_server import ACCESS_KEY_ID, ACCESS_KEY_SECRET, store_options  # noqa: E402

from asr_distill.storage import open_storage  # noqa: E402


def timed(label: str, count: int, nbytes: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    rate = f"{count / dt:8.1f} obj/s" if count > 1 else " " * 14
    print(f"{label:<44} {dt:7.2f} s  {rate}  {nbytes / dt / (1 << 20):8.1f} MiB/s")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=400, help="number of 4 KiB objects")
    ap.add_argument("--large-mib", type=int, default=64, help="size of the large object")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--server", default="subprocess", choices=["subprocess", "inprocess"])
    args = ap.parse_args()

    server = Server(args.server)
    bucket = BUCKET_RAW
    store = open_storage(f"oss://{bucket}/b", **store_options(server))
    raw = oss2.Bucket(
        oss2.AuthV4(ACCESS_KEY_ID, ACCESS_KEY_SECRET), server.endpoint, bucket, region=server.region
    )
    small = {f"small/{i:05d}.bin": os.urandom(4096) for i in range(args.small)}
    n, size = len(small), 4096 * len(small)
    print(f"server {server.endpoint} ({args.server}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n")

    timed(
        "write small, sequential (backend)",
        n,
        size,
        lambda: [store.write_bytes(k, v) for k, v in small.items()],
    )
    timed(
        "write small, sequential (bare oss2 put)",
        n,
        size,
        lambda: [raw.put_object(f"raw/{k}", v) for k, v in small.items()],
    )
    with ThreadPoolExecutor(args.threads) as pool:
        timed(
            f"write small, {args.threads} threads (backend)",
            n,
            size,
            lambda: list(pool.map(lambda kv: store.write_bytes(*kv), small.items())),
        )
    timed("read small, sequential (backend)", n, size, lambda: [store.read_bytes(k) for k in small])
    timed(
        "read small, sequential (bare oss2 get)",
        n,
        size,
        lambda: [raw.get_object(f"raw/{k}").read() for k in small],
    )
    timed(
        f"read small, read_many({args.threads} threads)",
        n,
        size,
        lambda: list(store.read_many(small, max_workers=args.threads)),
    )
    timed("list small (page 1000)", n, 0, lambda: list(store.iter_objects("small/")))

    big = os.urandom(args.large_mib << 20)
    timed(
        f"write {args.large_mib} MiB (multipart 16 MiB x 4 threads)",
        1,
        len(big),
        lambda: store.write_bytes("big", big),
    )
    timed(
        f"write {args.large_mib} MiB (bare oss2 single put)",
        1,
        len(big),
        lambda: raw.put_object("raw/big", big),
    )
    timed(
        f"read {args.large_mib} MiB read_bytes (CRC64 checked)", 1, len(big), lambda: store.read_bytes("big")
    )
    timed(
        f"read {args.large_mib} MiB (bare oss2, CRC computed)",
        1,
        len(big),
        lambda: raw.get_object("raw/big").read(),
    )

    def stream() -> None:
        with store.open_read("big") as fh:
            while fh.read(1 << 20):
                pass

    timed(f"read {args.large_mib} MiB open_read 1 MiB chunks", 1, len(big), stream)
    server.stop()


if __name__ == "__main__":
    main()
