"""``raw_prefix_sensor``: register each new complete raw prefix as a partition and run ``distill_job`` on it.

The decisions live in :mod:`asr_distill.stages.discovery` (plain Python); this module only turns a
:class:`~asr_distill.stages.discovery.TickPlan` into a ``SensorResult``. Settings come from the
``ASR_DISTILL_SENSOR_*`` environment variables when the code location loads (see the README, "Sensor").

The sensor is STOPPED by default: a ``dagster dev`` pointed at a large raw bucket must not start launching
hundreds of runs by itself, and nothing should launch runs while tests load the definitions. Switch it on
in the UI (the state is kept in the instance), or set ``ASR_DISTILL_SENSOR_DEFAULT_STATUS=RUNNING`` in a
deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from asr_distill.jobs import distill_job
from asr_distill.partitions import is_valid_partition_name, raw_prefix_partitions
from asr_distill.resources import StorageResource
from asr_distill.stages.discovery import DiscoverySettings, plan_tick, settings_from_env

SENSOR_NAME = "raw_prefix_sensor"
TAG_FINGERPRINT = "asr_distill/listing_fingerprint"
TAG_TRIGGER = "asr_distill/trigger"


def build_raw_prefix_sensor(
    settings: DiscoverySettings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    name: str = SENSOR_NAME,
) -> dg.SensorDefinition:
    """The sensor for ``settings`` (default: from the environment); ``clock`` is injectable for tests."""
    cfg = settings if settings is not None else settings_from_env()
    mode = (
        f"marker {cfg.marker!r} or {cfg.quiet_seconds:g} s without changes"
        if cfg.quiet_mode
        else f"marker {cfg.marker!r}"
    )

    @dg.sensor(
        name=name,
        job=distill_job,
        minimum_interval_seconds=cfg.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if cfg.default_running
        else dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Every {cfg.interval_seconds} s: registers each new complete top-level prefix of the raw store "
            f"(complete = {mode}) as a partition and launches distill_job for it. Changed prefixes are "
            f"{'re-run' if cfg.rerun_changed else 'reported, not re-run'}."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, raw: StorageResource) -> dg.SensorResult:
        store = raw.get()
        plan = plan_tick(store, context.cursor, cfg, now=clock(), is_valid_name=is_valid_partition_name)
        for level, text in plan.messages:
            (context.log.warning if level == "warning" else context.log.info)(text)
        context.log.info(f"{store.url()}: {plan.summary()}")
        if not plan.launches:
            return dg.SensorResult(
                skip_reason=f"nothing complete to launch ({plan.summary()})", cursor=plan.cursor
            )

        keys = [x.partition for x in plan.launches]
        registered = set(context.instance.get_dynamic_partitions(raw_prefix_partitions.name))
        new_keys = [k for k in keys if k not in registered]
        requests = [
            dg.RunRequest(
                run_key=x.run_key,
                partition_key=x.partition,
                tags={TAG_FINGERPRINT: x.fingerprint, TAG_TRIGGER: x.reason},
            )
            for x in plan.launches
        ]
        for x in plan.launches:
            context.log.info(f"{x.partition}/: {x.reason}, {x.objects} objects -> run key {x.run_key}")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[raw_prefix_partitions.build_add_request(new_keys)]
            if new_keys
            else [],
            cursor=plan.cursor,
        )

    return _sensor


raw_prefix_sensor = build_raw_prefix_sensor()
