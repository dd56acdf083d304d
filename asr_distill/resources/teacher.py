"""The teacher as a Dagster resource: which model labels the shards, and the actor pool that runs it.

Defaults come from the ``ASR_DISTILL_TEACHER*`` variables (:mod:`asr_distill.settings`) when the code
location loads (all optional). With no options, the faster-whisper backend runs the embedded default
:data:`DEFAULT_CPU_TEACHER`: Whisper **base** (multilingual) on every clip, decoding each clip in its
declared language and identifying the language of every clip (declared or not), so that
``language_mismatch`` and ``low_language_prob`` work. Why base everywhere (measured on the demo corpus,
one core, int8, see README "Model selection"): English WER 0.129 (tiny.en 0.165), Japanese CER 0.075
(tiny.en cannot), at about twice tiny.en's CPU time (RTF 0.17 vs 0.087); ``auto`` saves time only on
clips that declare English and skip identification (``language_id: undeclared``), i.e. without the
mismatch check, at tiny.en's WER. ``ASR_DISTILL_TEACHER_OPTIONS`` is a JSON object of backend options, e.g.
``{"model": "openai/whisper-large-v3", "language": "en"}`` (vllm) or ``{"model_path":
"/models/large-v3-ct2", "device": "cuda", "compute_type": "float16"}`` (faster_whisper). Bundled CPU
models: ``{"model": "tiny.en"}`` (English only), ``{"model": "base", "language": "detect"}``
(multilingual; clips without a declared language are identified) or ``{"model": "auto", "language":
"detect"}`` (tiny.en for English clips, base for the others); ``"language_id": "undeclared"`` skips
identification on clips whose language is declared (default ``"always"``: needed by the
``language_mismatch`` / ``low_language_prob`` flags).

Everything can also be set per run in the launchpad (resource config). The model itself is loaded
inside the Ray actors, never in the Dagster process.

The actors may run in another Python environment than the Dagster process: ``actor_python`` (the
``python`` of a vLLM environment: vLLM is never part of the runtime install) and ``actor_env``
(environment variables of the actors, e.g. ``PYTHONPATH`` to the project's source when the project is
not installed there, ``VLLM_CPU_KVCACHE_SPACE``) become the actors' Ray ``runtime_env``
(``py_executable``, ``env_vars``). That environment needs the same Python and Ray versions as the
cluster. vLLM on the CTranslate2 Whisper the project ships: ``{"ct2": "tiny.en"}`` or ``{"ct2": "base",
"language": "detect"}`` (converted once into the project cache when an actor starts).
"""

from __future__ import annotations

import json
import os
from typing import Any

import dagster as dg
from pydantic import Field

from asr_distill import settings
from asr_distill.stages.labels import PoolConfig
from asr_distill.teachers import TEACHER_BACKENDS, TeacherConfig, teacher_config

# The embedded CPU teacher when the faster-whisper backend is given no options (module docstring).
DEFAULT_CPU_TEACHER: dict[str, Any] = {"model": "base", "language": "detect", "language_id": "always"}


class TeacherResource(dg.ConfigurableResource):
    """Teacher backend + options, and the size of the Ray actor pool that runs it."""

    backend: str = Field(default="faster_whisper", description="faster_whisper | vllm")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend options (FasterWhisperConfig / VllmConfig fields); none: the embedded default "
        "(faster_whisper: Whisper base, language identified on every clip)",
    )
    num_actors: int = Field(default=1, description="Teacher actors (model instances)")
    num_cpus: float = Field(default=1.0, description="CPUs per actor")
    num_gpus: float = Field(default=0.0, description="GPUs per actor; 0.5 puts two model instances on a GPU")
    batch_size: int = Field(default=8, description="Clips per teacher call (vLLM: 64 or more)")
    max_in_flight_per_actor: int = Field(default=2, description="Shards queued per actor")
    shard_attempts: int = Field(default=3, description="Tries per shard, all causes together")
    shard_timeout_s: float | None = Field(
        default=None, description="Restart an actor stuck this long on one shard"
    )
    start_timeout_s: float = Field(default=900.0, description="Model load timeout per actor")
    actor_python: str | None = Field(
        default=None,
        description="Python executable of the teacher actors (e.g. a vLLM environment); None: the cluster's",
    )
    actor_env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the teacher actors (Ray env_vars)"
    )

    def teacher_config(self) -> TeacherConfig:
        """The picklable config the actors build their teacher from (validated here, in the driver)."""
        options = self.options
        if not options and self.backend == "faster_whisper":
            options = DEFAULT_CPU_TEACHER
        try:
            return teacher_config(self.backend, **options)
        except (TypeError, ValueError) as exc:
            raise dg.DagsterInvalidConfigError(
                f"invalid options for teacher backend {self.backend!r}: {exc}", [], None
            ) from None

    def pool_config(self) -> PoolConfig:
        return PoolConfig(
            num_actors=self.num_actors,
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            batch_size=self.batch_size,
            max_in_flight_per_actor=self.max_in_flight_per_actor,
            shard_attempts=self.shard_attempts,
            shard_timeout_s=self.shard_timeout_s,
            start_timeout_s=self.start_timeout_s,
            actor_options=self.actor_options(),
        )

    def actor_options(self) -> dict[str, Any]:
        """Extra Ray actor options: the runtime environment of the actors, when one is configured."""
        runtime_env: dict[str, Any] = {}
        if self.actor_python:
            if not os.path.isabs(self.actor_python):
                raise dg.DagsterInvalidConfigError(
                    f"actor_python={self.actor_python!r} must be an absolute path", [], None
                )
            runtime_env["py_executable"] = self.actor_python
        if self.actor_env:
            runtime_env["env_vars"] = {str(k): str(v) for k, v in self.actor_env.items()}
        return {"runtime_env": runtime_env} if runtime_env else {}


def make_teacher_resource() -> TeacherResource:
    """The default teacher from the ``ASR_DISTILL_TEACHER*`` variables (see the module docstring)."""
    backend = (settings.TEACHER.get() or "").strip()
    if backend not in TEACHER_BACKENDS:
        raise dg.DagsterInvalidDefinitionError(
            f"{settings.TEACHER.name}={backend!r}: known teacher backends are {', '.join(TEACHER_BACKENDS)}"
        )
    options_name = settings.TEACHER_OPTIONS.name
    try:
        options = json.loads(settings.TEACHER_OPTIONS.get() or "{}")
    except json.JSONDecodeError as exc:
        raise dg.DagsterInvalidDefinitionError(f"{options_name} is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise dg.DagsterInvalidDefinitionError(f"{options_name} must be a JSON object")
    gpu_default = 1.0 if backend == "vllm" else 0.0
    actors_default = 1 if backend == "vllm" else max(1, os.cpu_count() or 1)
    try:
        return TeacherResource(
            backend=backend,
            options=options,
            num_actors=int(settings.TEACHER_ACTORS.get() or actors_default),
            num_cpus=float(settings.TEACHER_CPUS.get() or 1.0),
            num_gpus=float(settings.TEACHER_GPUS.get() or gpu_default),
            batch_size=64 if backend == "vllm" else 8,
        )
    except ValueError as exc:
        raise dg.DagsterInvalidDefinitionError(f"teacher settings: {exc}") from None


__all__ = ["DEFAULT_CPU_TEACHER", "TeacherResource", "make_teacher_resource"]
