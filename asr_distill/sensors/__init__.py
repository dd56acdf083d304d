"""Sensors: ``raw_prefix_sensor`` launches ``distill_job`` for each new complete raw prefix."""

from asr_distill.sensors.raw_prefix import SENSOR_NAME, build_raw_prefix_sensor, raw_prefix_sensor

ALL_SENSORS = [raw_prefix_sensor]

__all__ = ["ALL_SENSORS", "SENSOR_NAME", "build_raw_prefix_sensor", "raw_prefix_sensor"]
