"""``asr-distill``: small helpers around the Dagster project (used by ``make demo``)."""

from __future__ import annotations

import argparse
import sys

from asr_distill.partitions import raw_prefix_partitions
from asr_distill.settings import lake_uri, raw_uri
from asr_distill.storage import open_storage


def _partitions(_: argparse.Namespace) -> int:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for key in instance.get_dynamic_partitions(raw_prefix_partitions.name):
            print(key)
    return 0


def _range_tags(_: argparse.Namespace) -> int:
    """Run tags for one run over every registered partition (Dagster's partition-range tags)."""
    import json

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions(raw_prefix_partitions.name)
    if not keys:
        print("no partitions are registered (run discover_partitions first)", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        )
    )
    return 0


def _where(_: argparse.Namespace) -> int:
    lake = open_storage(lake_uri())
    print(f"raw audio : {raw_uri()}")
    print(f"lake      : {lake.url()}")
    try:
        tops = [p.rstrip("/") for p in lake.list_prefixes("")]
    except FileNotFoundError:
        tops = []
    for top in tops:
        objects = list(lake.iter_objects(f"{top}/"))
        size = sum(o.size for o in objects)
        print(f"  {top + '/':<22} {len(objects):>6} objects {size / 1e6:>10.2f} MB")
        for obj in objects[:8]:
            print(f"      {lake.url(obj.key)}")
        if len(objects) > 8:
            print(f"      ... and {len(objects) - 8} more")
    from asr_distill.lake import manifest_layout
    from asr_distill.stages.manifests import read_latest

    latest = read_latest(lake) if tops else None
    if latest is not None:
        layout = manifest_layout(latest["version"])
        print()
        print(f"latest training manifest ({latest['version']}):")
        print(f"  parquet : {lake.url(layout.manifest_key)}")
        print(
            f"  nemo    : {lake.url(layout.prefix)}nemo/<split>/tarred_audio_manifest.jsonl (+ tarred_audio_filepaths.txt)"
        )
        print(f"  lhotse  : {lake.url(layout.prefix)}lhotse/<split>/cuts.jsonl.gz")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-distill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "partitions", help="print the registered partitions (raw prefixes), one per line"
    ).set_defaults(fn=_partitions)
    sub.add_parser(
        "range-tags", help="print the run tags of a partition range covering every registered partition"
    ).set_defaults(fn=_range_tags)
    sub.add_parser("where", help="print where the raw store and the lake outputs are").set_defaults(fn=_where)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
