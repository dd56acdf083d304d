"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.config import lake_uri, raw_uri
from asr_distill.jobs import discover_partitions, distill_job, index_job
from asr_distill.resources import StorageResource
from asr_distill.sensors import ALL_SENSORS


def build_definitions(raw: str | None = None, lake: str | None = None) -> dg.Definitions:
    """Definitions for a raw store and a lake (defaults: ``$ASR_DISTILL_RAW`` / ``$ASR_DISTILL_LAKE``)."""
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[discover_partitions, distill_job, index_job],
        sensors=ALL_SENSORS,
        resources={
            "raw": StorageResource(uri=raw or raw_uri()),
            "lake": StorageResource(uri=lake or lake_uri()),
        },
    )


defs = build_definitions()
