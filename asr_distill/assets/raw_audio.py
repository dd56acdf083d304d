"""``raw_audio``: the raw prefixes in the raw store, observed (never written) by the lineage."""

import dagster as dg

from asr_distill.partitions import prefix_of, raw_prefix_partitions
from asr_distill.resources import StorageResource
from asr_distill.stages.index.build import listing_fingerprint


@dg.observable_source_asset(
    partitions_def=raw_prefix_partitions,
    group_name="ingest",
    description="Raw audio objects (and sidecars) under one top-level prefix of the raw store.",
)
def raw_audio(context: dg.AssetExecutionContext, raw: StorageResource) -> dg.DataVersionsByPartition:
    """Observe every registered prefix: object count and bytes; the data version is the listing fingerprint."""
    store = raw.get()
    versions: dict[str, dg.DataVersion] = {}
    for partition in context.instance.get_dynamic_partitions(raw_prefix_partitions.name):
        fp = listing_fingerprint(store, prefix_of(partition))
        versions[partition] = dg.DataVersion(fp.digest[:16])
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=partition,
                metadata={
                    "objects": fp.objects,
                    "bytes": fp.bytes,
                    "uri": store.url(prefix_of(partition)),
                },
            )
        )
    context.log.info(f"observed {len(versions)} raw prefixes in {store.url()}")
    return dg.DataVersionsByPartition(versions)
