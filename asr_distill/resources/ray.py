"""Ray clusters as dagster-ray resources: a private local cluster (default), a remote one, KubeRay.

``ASR_DISTILL_RAY`` picks one when the code location loads:

* unset / ``local``: :class:`PrivateLocalRay`, a new single-machine cluster for each step that needs
  Ray, with its own temp dir and usage stats off. ``ray.init(address="local")`` never attaches to a
  cluster that happens to run on the machine (``RAY_ADDRESS`` and ``/tmp/ray`` are ignored);
* ``ray://head:10001`` (Ray Client) or ``auto`` / ``host:6379`` (from a node of the cluster):
  :class:`RemoteRay`, an existing cluster reached by address;
* ``kuberay``: dagster-ray's :class:`~dagster_ray.kuberay.KubeRayCluster`, which creates a RayCluster
  custom resource per step (image from ``ASR_DISTILL_KUBERAY_IMAGE``, the cluster spec from the YAML
  file named by ``ASR_DISTILL_KUBERAY_CLUSTER``; see ``deploy/kuberay-cluster.yaml``). It needs a
  Kubernetes API with the KubeRay operator: nothing here runs one, so it is only built, never started,
  by the test suite.

The assets only ask for a :class:`dagster_ray.RayResource`, so the same code runs on all three.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster_ray import Lifecycle, LocalRay, RayResource
from pydantic import Field, PrivateAttr

from asr_distill import settings as env_registry

# The variables are declared (name, default, doc) in asr_distill.settings.
RAY_ENV = env_registry.RAY.name
RAY_CPUS_ENV = env_registry.RAY_NUM_CPUS.name
KUBERAY_IMAGE_ENV = env_registry.KUBERAY_IMAGE.name
KUBERAY_CLUSTER_ENV = env_registry.KUBERAY_CLUSTER.name

# Ray's raylet waits 15 s for its dashboard agent by default: too short on a loaded laptop or CI box.
_LOCAL_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "120000"}


def _lazy() -> Lifecycle:
    return Lifecycle(connect=False)


# A plain default, not a default_factory: Dagster rebuilds a resource from its config schema when a
# run initialises it, and a factory default is lost there (the rebuilt resource would connect, i.e.
# start a local cluster, at run start).
_LAZY_FIELD_DESCRIPTION = "connect=False: the step that needs Ray connects"


def ensure_connected(resource: RayResource, context: Any) -> None:
    """Connect (``ray.init``) now if the resource was initialised without connecting.

    The resources here default to ``Lifecycle(connect=False)``: a run initialises them at its start,
    but only the step that needs Ray connects, and a labelling step with nothing to do never starts a
    local cluster. Cluster creation (KubeRay) still happens at run start, while the CPU stages run.
    """
    if not resource.connected:
        resource.connect(context)
        context.log.info(f"connected to {resource.display_name}")


@dataclass(frozen=True)
class KeptCluster:
    """A private local cluster left up after its step, for later steps of the same process."""

    settings: str  # the PrivateLocalRay settings that started it (a step with other settings restarts)
    context: Any  # ray.init's context
    temp_dir: str
    gcs_address: str  # identifies that very cluster (a later ray.init in the process starts another)


class KeptClusters:
    """The process's kept cluster (at most one: Ray allows one driver connection per process).

    Resources are rebuilt for every run, so what outlives a step lives here; the cluster is shut down
    when the process exits, or as soon as a step needs another cluster.
    """

    def __init__(self) -> None:
        self._kept: KeptCluster | None = None
        self._atexit_registered = False

    def reusable(self, settings: str) -> Any | None:
        """The kept cluster's context if it still runs and was started with ``settings``, else None."""
        import ray

        kept = self._kept
        if kept is None or kept.settings != settings or not ray.is_initialized():
            return None
        if ray.get_runtime_context().gcs_address != kept.gcs_address:
            return None
        return kept.context

    def keep(self, cluster: KeptCluster) -> None:
        self.forget()
        self._kept = cluster
        if not self._atexit_registered:
            atexit.register(self.shutdown)
            self._atexit_registered = True

    def holds(self, context: Any) -> bool:
        return context is not None and self._kept is not None and context is self._kept.context

    def forget(self) -> None:
        """Drop the record (and the temp dir) of the kept cluster, without shutting it down."""
        kept, self._kept = self._kept, None
        if kept is not None:
            shutil.rmtree(kept.temp_dir, ignore_errors=True)

    def shutdown(self) -> None:
        """Shut the kept cluster down (if it is still this process's Ray connection) and forget it."""
        import ray

        if self._kept is not None and ray.is_initialized():
            ray.shutdown()
        self.forget()


KEPT_CLUSTERS = KeptClusters()


def workers_on_this_machine(resource: RayResource) -> bool:
    """Whether the resource's Ray workers are processes of this machine started for this step.

    Then the step may hand its opened lake store (settings and credentials included) to the actors;
    otherwise they open the lake from their own environment. dagster-ray's own resources (KubeRay)
    lack the property and are remote.
    """
    return bool(getattr(resource, "workers_on_this_machine", False))


class PrivateLocalRay(LocalRay):
    """A private local Ray cluster started for the step and shut down after it.

    ``ray.init(address="local")`` with a fresh temp dir: never someone else's head, never a stale
    session left in ``/tmp/ray``. ``num_cpus`` / ``num_gpus`` cap what the cluster advertises (default:
    what the machine has).

    dagster-ray's lifecycle runs it: :meth:`connect` starts (or reuses) the cluster, :meth:`delete`
    (called by dagster-ray's ``cleanup`` under ``lifecycle.cleanup``, default ``always``) stops it,
    and :meth:`on_cleanup` removes what a cleanup without delete left.
    """

    lifecycle: Lifecycle = Field(default=_lazy(), description=_LAZY_FIELD_DESCRIPTION)

    num_cpus: int | None = Field(default=None, description="CPUs the local cluster offers (default: all)")
    num_gpus: int | None = Field(
        default=None, description="GPUs the local cluster offers (default: detected)"
    )
    include_dashboard: bool = Field(default=False, description="Start Ray's dashboard (port 8265)")
    keep_alive: bool = Field(
        default=False,
        description=(
            "Keep the cluster up after the step and reuse it for later steps of the same process (one "
            "Ray start per process instead of one per step: in-process test suites, notebooks). It is "
            "shut down when the process exits."
        ),
    )

    _temp_dir: str | None = PrivateAttr(default=None)

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        return "local"

    @property
    def name(self) -> str:
        return "private local Ray"

    @property
    def workers_on_this_machine(self) -> bool:
        return True

    def _settings(self) -> str:
        return repr(
            (self.num_cpus, self.num_gpus, self.include_dashboard, sorted(self.ray_init_options.items()))
        )

    def connect(self, context: Any) -> Any:
        """Start the private cluster (``ray.init(address="local")`` in a fresh temp dir), or reuse the
        one a previous step of this process kept."""
        import ray

        for key, value in _LOCAL_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        settings = self._settings()
        if self.keep_alive:
            kept = KEPT_CLUSTERS.reusable(settings)
            if kept is not None:
                self._context = kept
                return self._context
        if ray.is_initialized():  # a previous step of this process left it up: start clean
            ray.shutdown()
        KEPT_CLUSTERS.forget()
        # Short path: Ray's Unix socket paths must fit in 107 bytes.
        self._temp_dir = tempfile.mkdtemp(prefix="ray-ad-", dir="/tmp")
        options: dict[str, Any] = {
            "address": "local",
            "_temp_dir": self._temp_dir,
            "include_dashboard": self.include_dashboard,
            "log_to_driver": False,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            **self.ray_init_options,
        }
        runtime_env = dict(options.pop("runtime_env", None) or {})
        env_vars = {**dict(runtime_env.get("env_vars") or {}), **self.get_env_vars_to_inject()}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        if runtime_env:
            options["runtime_env"] = runtime_env
        self._context = ray.init(**options)
        if self.keep_alive:
            KEPT_CLUSTERS.keep(
                KeptCluster(settings, self._context, self._temp_dir, ray.get_runtime_context().gcs_address)
            )
        return self._context

    def delete(self, context: Any) -> None:
        """Stop the cluster this step started; a kept one stays up for the next step of this process."""
        import ray

        if KEPT_CLUSTERS.holds(self._context):
            self._context, self._temp_dir = None, None
            return
        try:
            if self._context is not None and ray.is_initialized():  # only the cluster this step started
                ray.shutdown()
        finally:
            self._context = None
            self._remove_temp_dir()

    def on_cleanup(self, context: Any, *, deleted: bool) -> None:
        # Without delete (lifecycle.cleanup never / on_exception), dagster-ray disconnected, which for a
        # local cluster stops it: only its temp dir is left.
        # (No log line: a lazy resource that never connected has nothing to report.)
        if not deleted and not KEPT_CLUSTERS.holds(self._context):
            self._remove_temp_dir()
        self._context = None

    def _remove_temp_dir(self) -> None:
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


class RemoteRay(RayResource):
    """An existing Ray cluster reached by address; nothing is created or deleted.

    ``address``: ``ray://head:10001`` (Ray Client, from outside the cluster) or ``auto`` /
    ``head:6379`` (from a node of the cluster). The cluster's workers need this project installed
    (same version) and, for an OSS lake, their own ``OSS_*`` variables or RAM role: shards are read
    by the teacher actors themselves, and credentials are never shipped through Ray.
    """

    address: str = Field(description="ray://host:10001, auto, or host:port")
    shared_filesystem: bool = Field(
        default=False,
        description=(
            "Every node mounts this machine's local raw and lake directories at the same paths (index, "
            "clean and shards may then run there as Ray tasks with local stores)"
        ),
    )
    lifecycle: Lifecycle = Field(default=_lazy(), description=_LAZY_FIELD_DESCRIPTION)

    @property
    def workers_on_this_machine(self) -> bool:
        return False

    def connect(self, context: Any) -> Any:
        KEPT_CLUSTERS.shutdown()  # a private local cluster kept by an earlier step of this process
        return super().connect(context)

    @property
    def host(self) -> str:
        rest = self.address.split("://", 1)[-1]
        return rest.rsplit(":", 1)[0] if ":" in rest else rest

    @property
    def ray_address(self) -> str:
        return self.address

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


def _kuberay_resource() -> RayResource:
    from dagster_ray.kuberay import KubeRayCluster
    from dagster_ray.kuberay.configs import RayClusterConfig

    spec_path = env_registry.KUBERAY_CLUSTER.get()
    kwargs: dict[str, Any] = {}
    if spec_path:
        import yaml

        with open(spec_path, encoding="utf-8") as fh:
            kwargs["ray_cluster"] = RayClusterConfig(**(yaml.safe_load(fh) or {}))
    image = env_registry.KUBERAY_IMAGE.get()
    if image:
        kwargs["image"] = image
    return KubeRayCluster(lifecycle=_lazy(), **kwargs)


def make_ray_resource(spec: str | None = None) -> RayResource:
    """The Ray resource for ``spec`` (default ``$ASR_DISTILL_RAY``): see the module docstring."""
    value = (spec if spec is not None else env_registry.RAY.raw() or "").strip()
    if value in ("", "local"):
        cpus = env_registry.RAY_NUM_CPUS.get()
        return PrivateLocalRay(num_cpus=int(cpus) if cpus else None)
    if value == "kuberay":
        return _kuberay_resource()
    if value == "auto" or "://" in value or ":" in value:
        return RemoteRay(address=value)
    raise dg.DagsterInvalidDefinitionError(
        f"{RAY_ENV} must be 'local', 'kuberay', 'auto' or a cluster address (ray://host:10001), not {value!r}"
    )


__all__ = [
    "CPU_STAGE_EXECUTORS",
    "KEPT_CLUSTERS",
    "RAY_ENV",
    "KeptCluster",
    "KeptClusters",
    "PrivateLocalRay",
    "RemoteRay",
    "cpu_stage_executor",
    "ensure_connected",
    "make_ray_resource",
    "shares_filesystem",
    "workers_on_this_machine",
]


# -- index, clean, segment and shards on the cluster---------------------------------------------------------
CPU_STAGE_EXECUTORS = ("auto", "local", "ray")
CPU_STAGE_EXECUTOR_DOC = (
    "Where the stage's per-file work runs: 'local' = a process pool on this step's machine; 'ray' = "
    "Ray tasks (1 CPU each) on the `ray_cluster` resource's cluster; 'auto' (default) = Ray only when "
    "that cluster is remote (ASR_DISTILL_RAY = an address or kuberay), else the local pool (no Ray "
    "cluster is started for these stages)."
)


def shares_filesystem(resource: RayResource) -> bool:
    """Whether the cluster's workers see this machine's local directories at the same paths.

    True for the private local cluster; for a remote one only when the user says so (the resource's
    ``shared_filesystem`` field, or ``ASR_DISTILL_RAY_SHARED_FS=1``).
    """
    if workers_on_this_machine(resource) or getattr(resource, "shared_filesystem", False):
        return True
    return (env_registry.RAY_SHARED_FS.get() or "").strip().lower() in ("1", "true", "yes")


def cpu_stage_executor(
    choice: str, resource: RayResource, stores: dict[str, Any], context: Any, stage: str
) -> Any:
    """The executor of a CPU stage (index, clean, shards) by the selection rule above.

    Returns None for the stage's local pool, or a :class:`~asr_distill.stages._raypool.RayTasks`
    after connecting to the cluster. On a remote cluster the stores travel without credentials (each
    worker reopens an OSS store with its own ``OSS_*`` variables or RAM role); on the private local
    one they travel as opened here. A local-directory store with a remote cluster is refused unless
    the cluster shares the filesystem (:func:`shares_filesystem`).
    """
    from asr_distill.stages._raypool import RayTasks
    from asr_distill.storage import LocalStorage

    if choice not in CPU_STAGE_EXECUTORS:
        raise dg.Failure(
            description=f"executor must be one of {', '.join(CPU_STAGE_EXECUTORS)}, not {choice!r}",
            allow_retries=False,
        )
    remote = not workers_on_this_machine(resource)
    if choice == "local" or (choice == "auto" and not remote):
        return None
    if remote and not shares_filesystem(resource):
        local = [
            f"{role} store {store.uri}" for role, store in stores.items() if isinstance(store, LocalStorage)
        ]
        if local:
            raise dg.Failure(
                description=(
                    f"{stage}: the {' and the '.join(local)} is a local directory, which the workers of "
                    f"{resource.display_name} cannot read. Use oss:// stores, run the stage with "
                    f"executor='local', or set {env_registry.RAY_SHARED_FS.name}=1 if every Ray node "
                    "mounts these directories at the same paths."
                ),
                allow_retries=False,
            )
    ensure_connected(resource, context)
    where = "its workers' own OSS_* credentials" if remote else "the stores as configured for this run"
    context.log.info(f"{stage}: per-file work as Ray tasks on {resource.display_name} ({where})")
    return RayTasks(ship_stores=not remote)
