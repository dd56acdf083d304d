"""Student-side examples: how a trainer reads the training manifests and shards (numpy only, no torch)."""

from asr_distill.student.loader import (
    AudioBatch,
    BucketBatchSampler,
    Sample,
    ShardAudioReader,
    iter_batches,
    read_split,
)

__all__ = ["AudioBatch", "BucketBatchSampler", "Sample", "ShardAudioReader", "iter_batches", "read_split"]
