"""pandera schema of the ``audio_index`` table, validated batch by batch (bounded memory)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors

from asr_distill.stages.index.schema import AUDIO_EXTENSIONS, PROBE_ERRORS, SIDECAR_ERRORS

_ok = "probe_error.isna()"

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
        "sample_rate": pa.Column("Int32", pa.Check.in_range(1, 1_000_000), nullable=True),
        "channels": pa.Column("Int16", pa.Check.ge(1), nullable=True),
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
            lambda df: df["probe_error"].notna()
            | (df["sample_rate"].notna() & df["channels"].notna() & df["frames"].notna() & df["duration_s"].notna()),
            name="probed_rows_complete",
        ),
        pa.Check(lambda df: df["probe_error"].isna() | df["probe_detail"].notna(), name="errors_have_detail"),
        pa.Check(
            lambda df: pd.Series(
                [k.startswith(p + "/") for k, p in zip(df["key"], df["partition"], strict=True)], index=df.index
            ),
            name="key_in_partition",
        ),
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


def _nullable_ints(t):  # type: ignore[no-untyped-def]
    import pyarrow as pa_

    mapping = {pa_.int16(): pd.Int16Dtype(), pa_.int32(): pd.Int32Dtype(), pa_.int64(): pd.Int64Dtype()}
    return mapping.get(t)
