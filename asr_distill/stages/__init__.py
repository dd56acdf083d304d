"""Plain-Python cores of each stage of the lineage (no Dagster imports), in lineage order:

index -> clean -> shards -> labels -> manifests
"""
