"""pandera schema of the ``audio_index`` table, validated batch by batch (bounded memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors

from asr_distill.data_quality.bounds import Bounds
from asr_distill.stages.index.schema import (
    AUDIO_EXTENSIONS,
    CHANNELS,
    PROBE_ERRORS,
    SAMPLE_RATE_HZ,
    SIDECAR_ERRORS,
)
from asr_distill.storage import Storage


def _probed_within(column: str, bounds: Bounds) -> pa.Check:
    """Rows without a probe error have ``column`` within ``bounds`` (errored rows: header values as read;
    a missing value is probed_rows_complete's to report)."""
    return pa.Check(
        lambda df: df["probe_error"].notna() | df[column].between(bounds.min, bounds.max).fillna(True),
        name=f"probed_{column}_in_{bounds.min}_{bounds.max}",
    )


AUDIO_INDEX_PANDERA = pa.DataFrameSchema(
    {
        "partition": pa.Column(str, nullable=False),
        "key": pa.Column(str, nullable=False, checks=pa.Check.str_length(min_value=1)),
        "size": pa.Column("int64", pa.Check.ge(0), nullable=False),
        "etag": pa.Column(str, nullable=True),
        "mtime": pa.Column("datetime64[us, UTC]", nullable=True),
        "extension": pa.Column(str, pa.Check.isin(sorted(AUDIO_EXTENSIONS)), nullable=False),
        "container": pa.Column(str, nullable=True),
        "codec": pa.Column(str, nullable=True),
        "sample_rate": pa.Column("Int32", nullable=True),
        "channels": pa.Column("Int16", nullable=True),
        "frames": pa.Column("Int64", pa.Check.ge(0), nullable=True),
        "duration_s": pa.Column(float, pa.Check.ge(0), nullable=True),
        "header_duration_s": pa.Column(float, pa.Check.ge(0), nullable=True),
        "text": pa.Column(str, nullable=True),
        "language": pa.Column(str, nullable=True),
        "speaker": pa.Column(str, nullable=True),
        "sidecar_key": pa.Column(str, nullable=True),
        "sidecar_error": pa.Column(str, pa.Check.isin(sorted(SIDECAR_ERRORS)), nullable=True),
        "probe_error": pa.Column(str, pa.Check.isin(sorted(PROBE_ERRORS)), nullable=True),
        "probe_detail": pa.Column(str, nullable=True),
    },
    checks=[
        # A row without a probe error has every audio property; a row with one names a reason.
        pa.Check(
            lambda df: (
                df["probe_error"].notna()
                | (
                    df["sample_rate"].notna()
                    & df["channels"].notna()
                    & df["frames"].notna()
                    & df["duration_s"].notna()
                )
            ),
            name="probed_rows_complete",
        ),
        pa.Check(lambda df: df["probe_error"].isna() | df["probe_detail"].notna(), name="errors_have_detail"),
        _probed_within("sample_rate", SAMPLE_RATE_HZ),
        _probed_within("channels", CHANNELS),
        # Keys inside their partition's prefix: the YAML check audio_index__key_in_partition.
    ],
    strict=True,
    ordered=True,
)


def validate_index_file(path: str | Path, batch_rows: int = 50_000) -> tuple[int, pd.DataFrame | None]:
    """Validate a Parquet index in batches; returns (rows checked, failure cases or None)."""
    pf = pq.ParquetFile(path)
    rows = 0
    failures: list[pd.DataFrame] = []
    for batch in pf.iter_batches(batch_size=batch_rows):
        df = batch.to_pandas(types_mapper=_nullable_ints)
        rows += len(df)
        try:
            AUDIO_INDEX_PANDERA.validate(df, lazy=True)
        except SchemaErrors as exc:
            failures.append(exc.failure_cases)
    if pf.metadata.num_rows == 0:
        try:
            AUDIO_INDEX_PANDERA.validate(pf.read().to_pandas(types_mapper=_nullable_ints), lazy=True)
        except SchemaErrors as exc:
            failures.append(exc.failure_cases)
    return rows, (pd.concat(failures, ignore_index=True) if failures else None)


def validate_index_object(
    store: Storage, key: str, sample_rows: int = 10
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The first ``sample_rows`` failure cases of the index object ``key`` (as text) and its counts; a
    missing object is one problem."""
    if not store.exists(key):
        return [{"problem": f"not written: {store.url(key)}"}], {"rows_validated": 0, "failure_cases": 0}
    with store.local_copy(key, suffix=".parquet") as path:
        rows, failures = validate_index_file(path)
    if failures is None:
        return [], {"rows_validated": rows, "failure_cases": 0}
    sample = failures.head(sample_rows).astype(str).to_dict("records")
    return sample, {"rows_validated": rows, "failure_cases": len(failures)}


def _nullable_ints(t):  # type: ignore[no-untyped-def]
    import pyarrow as pa_

    mapping = {pa_.int16(): pd.Int16Dtype(), pa_.int32(): pd.Int32Dtype(), pa_.int64(): pd.Int64Dtype()}
    return mapping.get(t)
