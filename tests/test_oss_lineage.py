"""The whole lineage (``distill_job``: every stage and every check) with raw and lake on OSS.

Generic over the lineage: whatever assets, checks and resources ``build_definitions`` holds at run time
are run through its ``distill_job`` (raw and lake swapped for ours), against the OSS-protocol test
server on 127.0.0.1 (moto + OSS layer, signatures checked). One partition, ``mixed``, holds two
prefixes of the demo corpus (``en_conversational/`` and ``broken/``), so that each run sees good
audio in every format and every kind of bad input; it is uploaded once, and every run writes to a
fresh lake root.

* all four (raw, lake) combinations of local disk and OSS succeed, gate on the same checks and
  write the same lake objects: byte for byte for the same raw store; decoded and compared by value
  across raw stores, because index rows legitimately record the raw object's version (an OSS ETag
  and Last-Modified versus a file's mtime with no ETag) and the listing fingerprint derived from it;
* injected 503s and connection resets change nothing in the output; a permanent 403 fails the run
  naming bucket and key, and leaves no output behind;
* the secret (and a wrong secret) never reaches the run's records: events, run config and tags,
  metadata, snapshots, compute logs, error messages, any byte of the instance's directory.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._serdes import serialize_value
from oss_server import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    STS_ACCESS_KEY_ID,
    STS_ACCESS_KEY_SECRET,
    STS_TOKEN,
    FaultConfig,
    OSSTestServer,
)
from oss_server.upload import upload_tree

from asr_distill.assets import ALL_ASSETS
from asr_distill.definitions import build_definitions
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.resources import PrivateLocalRay, StorageResource, make_storage_resource
from asr_distill.storage import LocalStorage, Storage

pytest_plugins = ["oss_server.fixtures"]

PARTITION = "mixed"
SUBSETS = ("en_conversational", "broken")  # demo-corpus prefixes copied below PARTITION
RAW_BUCKET = "lineage-raw"
LAKE_BUCKET = "lineage-lake"
RAW_ROOT = "corpus"
# Columns / schema metadata that record the raw object's version: they differ between raw backends.
RAW_VERSION_COLUMN = re.compile(r"(^|_)(etag|mtime)($|_)")
RAW_VERSION_METADATA = re.compile(rb"fingerprint")
# Columns that once differed between raw backends (FFmpeg names its input in error messages; the probe
# now drops the name): checked to be identical by test_probe_details_do_not_depend_on_the_raw_backend.
KNOWN_RAW_BACKEND_DIFFERENCES: dict[str, tuple[tuple[str, str], ...]] = {"probe_detail": ()}
# Enough attempts that a run of injected faults cannot exhaust them by chance (0.2**10 per request).
FAULT_ATTEMPTS = 10


# Runs record the OSS backend's retry warnings in their event log (as users should configure it).
INSTANCE_SETTINGS = {"python_logs": {"managed_python_loggers": ["asr_distill.storage.oss"]}}


@pytest.fixture()
def disk_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(overrides=INSTANCE_SETTINGS, temp_dir=str(home)) as instance:
        yield instance


@dataclass
class Lineage:
    """The server, the uploaded raw corpus and helpers to run ``distill_job`` on any pair of stores."""

    server: OSSTestServer
    local_raw: LocalStorage
    tmp: Path
    instance: dg.DagsterInstance
    uploaded: dict[str, int] = field(default_factory=dict)
    _lakes: int = 0

    @property
    def oss_raw_uri(self) -> str:
        return f"oss://{RAW_BUCKET}/{RAW_ROOT}"

    def new_lake_uri(self, kind: str) -> str:
        """A fresh lake root (never reused, so no run can see another's output)."""
        self._lakes += 1
        if kind == "oss":
            return f"oss://{LAKE_BUCKET}/lake-{self._lakes:03d}"
        return str(self.tmp / f"lake-{self._lakes:03d}")

    def resource(self, uri: str, **overrides: Any) -> StorageResource:
        """A StorageResource with the test credentials as plain values (OSS), or a local one."""
        if not uri.startswith("oss://"):
            return StorageResource(uri=uri)
        fields: dict[str, Any] = {
            "endpoint": self.server.endpoint,
            "region": self.server.region,
            "access_key_id": ACCESS_KEY_ID,
            "access_key_secret": ACCESS_KEY_SECRET,
        }
        fields.update(overrides)
        return StorageResource(uri=uri, **fields)

    def store(self, uri: str) -> Storage:
        return self.resource(uri).get()

    def run(
        self,
        raw: str,
        lake: str,
        partition: str,
        *,
        instance: dg.DagsterInstance | None = None,
        defs: dg.Definitions | None = None,
        job: str = "distill_job",
        **resource_overrides: Any,
    ) -> dg.ExecuteInProcessResult:
        """Run one of the project's jobs (``distill_job``: the whole lineage) for one partition, raw and
        lake swapped for ours."""
        if defs is None:
            defs = with_stores(
                build_definitions(raw=raw, lake=lake),
                raw=self.resource(raw, **resource_overrides),
                lake=self.resource(lake, **resource_overrides),
            )
        instance = instance or self.instance
        if partition not in instance.get_dynamic_partitions(raw_prefix_partitions.name):
            instance.add_dynamic_partitions(raw_prefix_partitions.name, [partition])
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False
        )


def with_stores(defs: dg.Definitions, *, raw: StorageResource, lake: StorageResource) -> dg.Definitions:
    """The same definitions (assets, checks, jobs, other resources) with other raw and lake stores.

    The private local Ray cluster is kept between runs of this test process (``keep_alive``): one Ray
    start for the module instead of one per run; the labels still run on a real local cluster.
    """
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        executor=defs.executor,
        loggers=defs.loggers,
        resources={
            **(defs.resources or {}),
            "raw": raw,
            "lake": lake,
            "ray_cluster": PrivateLocalRay(num_cpus=2, keep_alive=True),
        },
    )


@pytest.fixture(scope="module")
def lineage(oss_server_session, demo_corpus, tmp_path_factory) -> Iterator[Lineage]:
    """Partition ``mixed`` on local disk and in the OSS raw bucket; one on-disk instance for the combinations."""
    server = oss_server_session
    server.faults = FaultConfig()
    for bucket in (RAW_BUCKET, LAKE_BUCKET):
        server.create_bucket(bucket)
    corpus, _ = demo_corpus
    tmp = tmp_path_factory.mktemp("oss_lineage")
    local_raw = LocalStorage(tmp / "raw")
    for subset in SUBSETS:
        for obj in corpus.iter_objects(f"{subset}/"):
            local_raw.write_file(f"{PARTITION}/{obj.key}", corpus.local_path(obj.key))
    home = tmp / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(overrides=INSTANCE_SETTINGS, temp_dir=str(home)) as instance:
        lin = Lineage(server=server, local_raw=local_raw, tmp=tmp, instance=instance)
        lin.uploaded = upload_tree(server, RAW_BUCKET, local_raw, prefixes=[PARTITION], root=RAW_ROOT)
        try:
            yield lin
        finally:
            server.faults = FaultConfig()


@dataclass
class LineageRun:
    lake_uri: str
    result: dg.ExecuteInProcessResult
    objects: dict[str, bytes]
    whole_lineage: bool = field(default=True, kw_only=True)  # False: the CPU stages only


LOCATION_FILES = re.compile(
    r"^training_manifests/[^/]+/(lhotse/.*\.jsonl\.gz|nemo/.*tarred_audio_filepaths\.txt)$"
)


def lake_objects(store: Storage) -> dict[str, bytes]:
    """Every object of a lake, with the lake's own location taken out where a trainer needs it: the
    Lhotse cuts (``command`` sources name the shard by path or URL) and the NeMo tar lists (tar paths).
    Two lakes at different places differ there and only there; those files' sha256/size in
    ``_MANIFEST.json`` are dropped for the same reason."""
    roots = sorted(
        {store.url(""), store.url("x")[:-1], getattr(store, "uri", "")} - {""}, key=len, reverse=True
    )
    out: dict[str, bytes] = {}
    for o in store.iter_objects(""):
        data = store.read_bytes(o.key)
        if LOCATION_FILES.match(o.key):
            text = (gzip.decompress(data) if o.key.endswith(".gz") else data).decode()
            for root in roots:
                text = text.replace(root.rstrip("/"), "<lake>")
            data = text.encode()
        elif o.key.startswith("training_manifests/") and o.key.endswith("/_MANIFEST.json"):
            record = json.loads(data)
            for entry in record.get("files", []):
                if LOCATION_FILES.match(entry["key"]):
                    entry.pop("blake3", None)
                    entry.pop("size", None)
            data = json.dumps(record, sort_keys=True).encode()
        out[o.key] = data
    return out


# Stages that read only the lake: their inputs and outputs are the same whichever store raw is on.
LAKE_ONLY_STAGES = ("teacher_labels", "training_manifests")


def lake_only_stage(name: str) -> str | None:
    """The lake-only stage a lake key (``<asset>/...``) or a check (``<asset>:<check>``) belongs to."""
    stage = re.split(r"[/:]", name, maxsplit=1)[0]
    return stage if stage in LAKE_ONLY_STAGES else None


@pytest.fixture(scope="module")
def combos(lineage: Lineage) -> dict[tuple[str, str], LineageRun]:
    """The lineage with (raw, lake) in all four combinations of local disk and OSS (plain-value credentials).

    (local, local) and (oss, oss) run the whole lineage (``distill_job``); the mixed two run the stages
    that read raw (``cpu_stages_job``: index, clean, shards). Labels and manifests read only the lake,
    so they run once against each kind of lake; running them again with the other raw store would
    repeat the same work (a teacher on Ray) with the same inputs.
    """
    runs: dict[tuple[str, str], LineageRun] = {}
    for raw_kind in ("local", "oss"):
        raw = lineage.local_raw.uri if raw_kind == "local" else lineage.oss_raw_uri
        for lake_kind in ("local", "oss"):
            lake = lineage.new_lake_uri(lake_kind)
            whole = raw_kind == lake_kind
            result = lineage.run(raw, lake, PARTITION, job="distill_job" if whole else "cpu_stages_job")
            runs[raw_kind, lake_kind] = LineageRun(
                lake, result, lake_objects(lineage.store(lake)), whole_lineage=whole
            )
    return runs


def comparable(a: LineageRun, b: LineageRun) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The objects of two runs that both produced: all of them, or the CPU stages' when one run had
    only those. The run with the whole lineage must hold exactly the other's objects plus labels and
    manifests."""
    if a.whole_lineage == b.whole_lineage:
        return a.objects, b.objects
    whole, part = (a, b) if a.whole_lineage else (b, a)
    cpu = {k: v for k, v in whole.objects.items() if not lake_only_stage(k)}
    assert sorted(cpu) == sorted(part.objects), "the CPU stages wrote different objects"
    assert {lake_only_stage(k) for k in whole.objects} - {None} == set(LAKE_ONLY_STAGES)
    return (cpu, part.objects) if whole is a else (part.objects, cpu)


def env_wired(uri: str, **overrides: Any) -> StorageResource:
    """``make_storage_resource(uri)`` (credentials as ``dg.EnvVar``) with some fields overridden."""
    base = make_storage_resource(uri)
    assert isinstance(base.access_key_secret, dg.EnvVar)
    fields = {name: getattr(base, name) for name in type(base).model_fields}
    fields.update(overrides)
    return StorageResource(**fields)


def _env_for(monkeypatch: pytest.MonkeyPatch, server: OSSTestServer, secret: str) -> None:
    monkeypatch.setenv("OSS_ENDPOINT", server.endpoint)
    monkeypatch.setenv("OSS_REGION", server.region)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", STS_ACCESS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", secret)
    monkeypatch.setenv("OSS_SECURITY_TOKEN", STS_TOKEN)


@dataclass
class FaultRun(LineageRun):
    instance: dg.DagsterInstance
    stats: dict[str, int]


@pytest.fixture(scope="module")
def fault_run(lineage: Lineage, tmp_path_factory) -> Iterator[FaultRun]:
    """Raw and lake on OSS wired as in production (``build_definitions`` + ``OSS_*``, STS credentials),
    with about 20% of requests failing (503, reset before or after execution, reset mid-body), recorded
    in an on-disk instance of its own."""
    lake = lineage.new_lake_uri("oss")
    home = tmp_path_factory.mktemp("fault_run_home")
    server = lineage.server
    with dg.instance_for_test(overrides=INSTANCE_SETTINGS, temp_dir=str(home)) as instance:
        with pytest.MonkeyPatch.context() as mp:
            _env_for(mp, server, STS_ACCESS_KEY_SECRET)
            defs = with_stores(
                build_definitions(raw=lineage.oss_raw_uri, lake=lake),
                raw=env_wired(lineage.oss_raw_uri, max_attempts=FAULT_ATTEMPTS),
                lake=env_wired(lake, max_attempts=FAULT_ATTEMPTS),
            )
            server.stats.clear()
            server.faults = FaultConfig(
                seed=20261122,
                error_rate=0.10,
                reset_rate=0.05,
                reset_mid_body_rate=0.05,
                lost_response_rate=0.03,
            )
            try:
                result = lineage.run("", "", PARTITION, instance=instance, defs=defs)
            finally:
                server.faults = FaultConfig()
            stats = dict(server.stats)
        # Read back with the plain-value test credentials, outside the OSS_* environment of the run.
        yield FaultRun(lake, result, lake_objects(lineage.store(lake)), instance, stats)


# -- helpers ----------------------------------------------------------------------------------
def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Every message in the error chains of the run's step failures."""
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                out.append(error.message)
                error = error.cause
    return out


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {
        e.event_specific_data.materialization.asset_key
        for e in result.all_events
        if e.is_step_materialization
    }


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": (e.passed, e.severity.value)
        for e in result.get_asset_check_evaluations()
    }


def assert_gates_passed(result: dg.ExecuteInProcessResult, what: str) -> None:
    """The run succeeded, every selected asset materialised, every check ran, no blocking check failed."""
    assert result.success, f"{what}: run failed: {failure_messages(result)[:3]}"
    layer = result.job_def.asset_layer
    assert materialized_keys(result) == set(layer.selected_asset_keys), what
    evaluations = result.get_asset_check_evaluations()
    expected_checks = {
        k for k in layer.asset_graph.asset_check_keys if k.asset_key in layer.selected_asset_keys
    }
    assert {dg.AssetCheckKey(e.asset_key, e.check_name) for e in evaluations} == expected_checks, what
    assert evaluations, f"{what}: no check ran"
    gating = [
        e.check_name
        for e in evaluations
        if e.blocking and not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert not gating, f"{what}: blocking checks failed: {gating}"


def _normalise_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise_json(v) for k, v in value.items() if not RAW_VERSION_COLUMN.search(str(k))}
    if isinstance(value, list):
        return [_normalise_json(v) for v in value]
    return value


def _with_known_differences_fixed(table: pa.Table) -> pa.Table:
    for column, replacements in KNOWN_RAW_BACKEND_DIFFERENCES.items():
        if column in table.column_names:
            values = table.column(column).to_pylist()
            for old, new in replacements:
                values = [v.replace(old, new) if isinstance(v, str) else v for v in values]
            index = table.schema.get_field_index(column)
            table = table.set_column(
                index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
            )
    return table


MANIFEST_VERSION = re.compile(r"^training_manifests/([0-9a-f]{16})/")


def without_manifest_version(objects: dict[str, bytes]) -> dict[str, bytes]:
    """The lake with the manifest version taken out, for comparing lakes built from different raw
    backends: the version hashes the index and kept tables, whose raw-object version columns (etag,
    mtime) differ by backend by design. Version names in keys become ``<version>``; ``_MANIFEST.json``
    and ``latest.json`` lose the fields derived from it (version, input hashes, file hashes)."""
    out: dict[str, bytes] = {}
    for key, data in objects.items():
        norm = MANIFEST_VERSION.sub("training_manifests/<version>/", key)
        if norm.endswith("/_MANIFEST.json") or norm == "training_manifests/latest.json":
            record = json.loads(data)
            for field in ("version", "inputs", "files", "prefix", "record"):
                record.pop(field, None)
            data = json.dumps(record, sort_keys=True).encode()
        out[norm] = data
    return out


def decoded_without_raw_versions(key: str, data: bytes, *, fix_known: bool = True) -> Any:
    """An object's content with the raw objects' version fields taken out (Parquet, JSON), else bytes."""
    if key.endswith(".parquet"):
        table = pq.read_table(pa.BufferReader(data))
        if fix_known:
            table = _with_known_differences_fixed(table)
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if not RAW_VERSION_METADATA.search(k)}
        table = table.drop_columns([c for c in table.column_names if RAW_VERSION_COLUMN.search(c)])
        table = table.replace_schema_metadata(meta)
        order = [
            (c, "ascending") for c in table.column_names if not pa.types.is_nested(table.schema.field(c).type)
        ]
        return table.sort_by(order) if order else table
    if key.endswith(".json"):
        return _normalise_json(json.loads(data))
    if key.endswith(".jsonl"):
        return [_normalise_json(json.loads(line)) for line in data.splitlines() if line.strip()]
    return data


def raw_version_cells(objects: dict[str, bytes]) -> dict[tuple[str, str], list[Any]]:
    """(object, column) -> values of the raw-version columns of every Parquet object, in row order."""
    out: dict[tuple[str, str], list[Any]] = {}
    for key, data in objects.items():
        if key.endswith(".parquet"):
            table = pq.read_table(pa.BufferReader(data))
            for column in table.column_names:
                if RAW_VERSION_COLUMN.search(column):
                    out[key, column] = table.column(column).to_pylist()
    return out


def canonical(value: Any) -> str:
    """A comparable text form (NaN equals NaN, timestamps and bytes as text)."""
    if isinstance(value, pa.Table):
        value = {"schema": str(value.schema), "rows": value.to_pylist()}
    return json.dumps(value, sort_keys=True, default=repr)


# -- all four combinations ------------------------------------------------------------------------
def test_distill_job_covers_every_stage():
    defs = build_definitions(raw="/nonexistent/raw", lake="/nonexistent/lake")
    selected = defs.resolve_job_def("distill_job").asset_layer.selected_asset_keys
    graph = defs.resolve_asset_graph()
    stages = {key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable}
    assert {key for a in ALL_ASSETS for key in getattr(a, "keys", ())} >= stages
    assert stages and stages <= selected, f"stages left out of distill_job: {sorted(stages - selected)}"


def test_every_combination_succeeds_with_the_same_checks(combos):
    for (raw_kind, lake_kind), run in combos.items():
        assert_gates_passed(run.result, f"raw={raw_kind} lake={lake_kind}")
        assert run.objects, f"raw={raw_kind} lake={lake_kind}: nothing in the lake"
    reference = check_outcomes(combos["local", "local"].result)
    assert check_outcomes(combos["oss", "oss"].result) == reference
    cpu_checks = {name: v for name, v in reference.items() if not lake_only_stage(name)}
    assert cpu_checks and len(cpu_checks) < len(reference)
    for combo in (("local", "oss"), ("oss", "local")):
        assert check_outcomes(combos[combo].result) == cpu_checks, f"checks differ for raw/lake = {combo}"


def test_same_raw_gives_byte_identical_lakes(combos):
    for raw_kind in ("local", "oss"):
        local, remote = comparable(combos[raw_kind, "local"], combos[raw_kind, "oss"])
        assert sorted(local) == sorted(remote), raw_kind
        for key in local:
            assert local[key] == remote[key], f"raw={raw_kind}: {key} differs between a local and an OSS lake"


def test_local_and_oss_raw_give_the_same_lake_content(combos, lineage):
    oss_raw = lineage.store(lineage.oss_raw_uri)
    listed = {o.key: o.size for o in oss_raw.iter_objects("")}
    assert listed == {o.key: o.size for o in lineage.local_raw.iter_objects("")} == lineage.uploaded
    from_local, from_oss = map(
        without_manifest_version, comparable(combos["local", "local"], combos["oss", "local"])
    )
    assert sorted(from_local) == sorted(from_oss)
    for key in from_local:
        a = canonical(decoded_without_raw_versions(key, from_local[key]))
        b = canonical(decoded_without_raw_versions(key, from_oss[key]))
        assert a == b, f"{key} differs between a local and an OSS raw store"

    # What was left out is the raw object's version, exactly as each raw store reports it.
    stores = {"local": lineage.local_raw, "oss": oss_raw}
    for raw_kind, store in stores.items():
        objects = combos[raw_kind, "local"].objects
        index_key = next(k for k in objects if k.startswith("audio_index/"))
        table = pq.read_table(pa.BufferReader(objects[index_key]))
        for row in table.select(["key", "etag", "mtime"]).to_pylist():
            info = store.stat(row["key"])
            assert row["etag"] == info.etag, (raw_kind, row["key"])
            assert row["mtime"].timestamp() == pytest.approx(info.mtime, abs=1e-3), (raw_kind, row["key"])
        assert (raw_kind == "oss") == all(e is not None for e in table.column("etag").to_pylist())
    assert raw_version_cells(from_local) != raw_version_cells(from_oss)


def test_probe_details_do_not_depend_on_the_raw_backend(combos):
    from_local, from_oss = map(
        without_manifest_version, comparable(combos["local", "local"], combos["oss", "local"])
    )
    for key in from_local:
        a = decoded_without_raw_versions(key, from_local[key], fix_known=False)
        b = decoded_without_raw_versions(key, from_oss[key], fix_known=False)
        if isinstance(a, pa.Table):
            for column in KNOWN_RAW_BACKEND_DIFFERENCES:
                if column in a.column_names:
                    assert a.column(column).to_pylist() == b.column(column).to_pylist(), (key, column)


# -- faults -------------------------------------------------------------------------------------
def test_lineage_survives_503s_and_resets(fault_run, combos):
    assert_gates_passed(fault_run.result, "under injected faults")
    clean = combos["oss", "oss"].objects
    assert sorted(fault_run.objects) == sorted(clean)
    for key, data in clean.items():
        assert fault_run.objects[key] == data, f"{key} differs from the fault-free run"
    stats = fault_run.stats
    assert stats.get("503", 0) > 0, stats
    assert stats.get("reset", 0) + stats.get("reset_mid_body", 0) + stats.get("lost_response", 0) > 0, stats


def _assert_clear_denial(result: dg.ExecuteInProcessResult, bucket: str) -> None:
    assert not result.success
    messages = failure_messages(result)
    denial = [m for m in messages if "AccessDenied" in m]
    assert denial, f"no access-denied error in {messages[:3]}"
    assert f"(bucket '{bucket}" in denial[0] and ", key '" in denial[0], denial[0]
    assert not materialized_keys(result)


def test_permanent_403_fails_clearly_with_no_output(lineage):
    # Everything refused: the run stops at the first request; a local lake gets no file at all.
    lake = lineage.new_lake_uri("local")
    with lineage.server.injected(deny_all=True):
        result = lineage.run(lineage.oss_raw_uri, lake, PARTITION)
    _assert_clear_denial(result, RAW_BUCKET)  # the lake is local: the raw bucket is the only one
    assert not [p for p in Path(lake).rglob("*") if p.is_file()]

    # Read-only credentials on the lake: the stage does its work, the upload is refused, nothing appears.
    lake = lineage.new_lake_uri("oss")
    mark = lineage.server.mark()
    with lineage.server.injected(deny=lambda method, bucket, key: bucket == LAKE_BUCKET and method == "PUT"):
        result = lineage.run(lineage.oss_raw_uri, lake, PARTITION)
    _assert_clear_denial(result, LAKE_BUCKET)
    assert any(c.method == "PUT" and c.fault == "deny" for c in lineage.server.calls_since(mark))
    assert lake_objects(lineage.store(lake)) == {}


def test_403_on_raw_reads_fails_the_run_not_the_rows(lineage):
    # A RAM policy with oss:ListObjects but without oss:GetObject on the raw bucket.
    lake = lineage.new_lake_uri("local")
    with lineage.server.injected(
        deny=lambda method, bucket, key: bucket == RAW_BUCKET and method == "GET" and bool(key)
    ):
        result = lineage.run(lineage.oss_raw_uri, lake, PARTITION)
    assert not [p for p in Path(lake).rglob("*") if p.is_file()], "an index of unreadable rows was written"
    _assert_clear_denial(result, RAW_BUCKET)


# -- secrets ------------------------------------------------------------------------------------
def _sqlite_texts(path: Path) -> Iterator[tuple[str, str]]:
    """Every cell of every table of a SQLite file as text (zlib-compressed blobs inflated)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for row in con.execute(f'select * from "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        with contextlib.suppress(zlib.error):
                            cell = zlib.decompress(cell)
                        yield f"{path.name}:{table}", cell.decode("utf-8", "replace")
                    elif isinstance(cell, str):
                        yield f"{path.name}:{table}", cell
    finally:
        con.close()


def instance_files_text(root: Path) -> dict[str, str]:
    """Every file under an instance's directory as text; SQLite databases cell by cell as well."""
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        out[str(path)] = raw.decode("utf-8", "replace")
        if raw.startswith(b"SQLite format 3"):
            out[f"{path} (cells)"] = "\n".join(text for _, text in _sqlite_texts(path))
    return out


def run_records_text(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """What the instance recorded about a run: events (incl. metadata and errors), run config, tags."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    records = {
        "events": "\n".join(serialize_value(e) for e in instance.all_logs(run_id)),
        "run_config": json.dumps(run.run_config, default=str),
        "tags": json.dumps(dict(run.tags)),
        "run": serialize_value(run),
    }
    if run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        records["execution_plan_snapshot"] = serialize_value(plan)
    return records


def compute_logs_text(instance: dg.DagsterInstance) -> dict[str, str]:
    root = Path(instance.root_directory)
    return {str(p): p.read_text("utf-8", "replace") for p in root.rglob("*") if p.suffix in (".out", ".err")}


def metadata_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for event in result.all_events:
        if event.is_step_materialization:
            parts.append(repr(event.event_specific_data.materialization.metadata))
    parts += [repr(e.metadata) + str(e.description) for e in result.get_asset_check_evaluations()]
    return "\n".join(parts)


def _where(secret: str, texts: dict[str, str]) -> list[str]:
    return [name for name, text in texts.items() if secret in text]


def test_env_var_secrets_appear_nowhere_in_the_run_records(fault_run):
    """The production wiring (``OSS_*`` variables, STS) under faults, so that error paths are recorded too."""
    instance, result = fault_run.instance, fault_run.result
    records = run_records_text(instance, result.run_id)
    logs = compute_logs_text(instance)
    # The search is exercised: retry warnings (which carry the failed request) were recorded.
    assert "retrying" in records["events"] and any("retrying" in text for text in logs.values())
    texts = {
        **records,
        "metadata": metadata_text(result),
        **logs,
        **instance_files_text(Path(instance.root_directory)),
    }
    assert RAW_BUCKET in texts["events"] and any(RAW_BUCKET in text for text in logs.values())
    for secret in (STS_ACCESS_KEY_SECRET, STS_TOKEN):
        assert not _where(secret, texts), f"secret found in {_where(secret, texts)}"


def test_wrong_secret_fails_without_echoing_any_secret(lineage, disk_instance, monkeypatch):
    instance = disk_instance
    wrong = "wr0ng-S3cret-" + os.urandom(6).hex()
    _env_for(monkeypatch, lineage.server, wrong)
    defs = build_definitions(raw=lineage.oss_raw_uri, lake=lineage.new_lake_uri("oss"))
    result = lineage.run("", "", PARTITION, instance=instance, defs=defs)
    assert not result.success
    messages = failure_messages(result)
    assert any("SignatureDoesNotMatch" in m and "(bucket 'lineage-" in m for m in messages), messages[:3]
    assert any("OSS_ACCESS_KEY_SECRET" in m for m in messages)  # the hint names the variable, not its value
    failures = [
        serialize_value(e)
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.is_failure
    ]
    assert failures and any("SignatureDoesNotMatch" in f for f in failures)
    texts = {
        "failure_events": "\n".join(failures),
        "error_messages": "\n".join(messages),
        **run_records_text(instance, result.run_id),
        **compute_logs_text(instance),
        **instance_files_text(Path(instance.root_directory)),
    }
    for secret in (wrong, STS_ACCESS_KEY_SECRET, STS_TOKEN, ACCESS_KEY_SECRET):
        assert not _where(secret, texts), f"secret found in {_where(secret, texts)}"


def test_plain_value_secret_stays_out_of_events_config_metadata_and_logs(combos, lineage):
    """Credentials given to StorageResource as plain values (as the combinations above do)."""
    run = combos["oss", "oss"].result
    texts = {
        **run_records_text(lineage.instance, run.run_id),
        "metadata": metadata_text(run),
        **compute_logs_text(lineage.instance),
    }
    assert compute_logs_text(lineage.instance), "no compute logs were captured"
    assert not _where(ACCESS_KEY_SECRET, texts), f"secret found in {_where(ACCESS_KEY_SECRET, texts)}"
    # On disk it is only in the job snapshots (inflated SQLite cells): this test passes the secret to
    # StorageResource as a plain value, which Dagster keeps in the job snapshot; the README tells users
    # to pass secrets only as dg.EnvVar (the env-var run above leaves no trace at all).
    on_disk = _where(ACCESS_KEY_SECRET, instance_files_text(Path(lineage.instance.root_directory)))
    assert all(name.endswith("runs.db (cells)") for name in on_disk), on_disk
