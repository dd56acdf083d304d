"""Resources at the edges of the lineage: storage, the Ray cluster and the teacher."""

from asr_distill.resources.ray import PrivateLocalRay, RemoteRay, make_ray_resource
from asr_distill.resources.storage import StorageResource, make_storage_resource
from asr_distill.resources.teacher import TeacherResource, make_teacher_resource

__all__ = [
    "PrivateLocalRay",
    "RemoteRay",
    "StorageResource",
    "TeacherResource",
    "make_ray_resource",
    "make_storage_resource",
    "make_teacher_resource",
]
