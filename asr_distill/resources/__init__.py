"""Resources at the edges of the lineage: storage (and later Ray and the teacher)."""

from asr_distill.resources.storage import StorageResource, make_storage_resource

__all__ = ["StorageResource", "make_storage_resource"]
