"""Sensors (new raw prefixes arrive in their own module)."""

ALL_SENSORS: list = []
