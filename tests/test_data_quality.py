"""One definition per data-quality invariant: named values in check files, shared bounds, one combiner."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_distill import lake
from asr_distill.data_quality.combine import Finding, combine
from asr_distill.data_quality.named import CHECK_VALUES
from asr_distill.dbt_like_checks import CheckSpecError, default_check_files, load_check_specs, run_check_sql
from asr_distill.stages.clean.schema import REASONS
from asr_distill.stages.index.schema import AUDIO_INDEX_SCHEMA, CHANNELS, SAMPLE_RATE_HZ
from asr_distill.stages.index.validation import validate_index_file
from asr_distill.storage import LocalStorage


def _load(tmp_path: Path, text: str, **kwargs):
    path = tmp_path / "checks.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_check_specs([path], **kwargs)


RANGE = """\
    version: 1
    assets:
      - asset: audio_index
        columns:
          - name: sample_rate
            tests:
              - accepted_range: {min_value: "{{ lo }}", max_value: "{{lo}} * 2", where: "x in {{ names }}"}
    """


def test_named_values_render_as_numbers_and_sql_literals(tmp_path: Path) -> None:
    (spec,) = _load(tmp_path, RANGE, values={"lo": 8000, "names": ("a", "it's")})
    assert spec.args["min_value"] == 8000  # alone: stays a number
    assert spec.args["max_value"] == "8000 * 2"  # inside SQL: its literal
    assert spec.where == "x in ['a', 'it''s']"


def test_unknown_or_malformed_named_value_is_a_file_error_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(
        CheckSpecError, match=r"line 7: `min_value`: unknown named value \{\{ lo \}\} \(known: names\)"
    ):
        _load(tmp_path, RANGE, values={"names": ("a",)})
    bad = RANGE.replace("{{ lo }}", "{{ lo-x }}")
    with pytest.raises(CheckSpecError, match=r"line 7: `min_value`: a placeholder must read"):
        _load(tmp_path, bad, values={"lo": 1, "names": ("a",)})


def test_shipped_checks_take_bounds_and_reasons_from_the_code() -> None:
    specs = {s.name: s for s in load_check_specs(default_check_files())}
    rate = specs["audio_index__sample_rate__accepted_range"].args
    assert (rate["min_value"], rate["max_value"]) == tuple(SAMPLE_RATE_HZ)
    channels = specs["audio_index__channels__accepted_range"].args
    assert (channels["min_value"], channels["max_value"]) == tuple(CHANNELS)
    reasons = specs["quarantine__reasons_are_known"].args["expression"]
    assert reasons == "list_has_all([" + ", ".join(f"'{r}'" for r in REASONS) + "], reasons)"
    assert CHECK_VALUES["quarantine_reasons"] == tuple(REASONS)
    # No check file repeats a bound or a reason code by hand.
    for path in default_check_files():
        text = path.read_text(encoding="utf-8")
        assert str(SAMPLE_RATE_HZ.max) not in text and "'ctc_infeasible'" not in text, path


def _index_rows(rates: list[int | None], errors: list[str | None]) -> pa.Table:
    rows = []
    for i, (rate, error) in enumerate(zip(rates, errors, strict=True)):
        ok = error is None
        rows.append(
            {
                "partition": "p",
                "key": f"p/{i}.wav",
                "size": 100,
                "extension": "wav",
                "sample_rate": rate,
                "channels": 1 if ok else None,
                "frames": 16 if ok else None,
                "duration_s": 0.5 if ok else None,
                "probe_error": error,
                "probe_detail": "detail" if error else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=AUDIO_INDEX_SCHEMA)


@pytest.mark.parametrize(
    ("rate", "passes"),
    [
        (SAMPLE_RATE_HZ.min, True),
        (SAMPLE_RATE_HZ.max, True),
        (SAMPLE_RATE_HZ.min - 1, False),
        (SAMPLE_RATE_HZ.max + 1, False),
    ],
)
def test_pandera_and_yaml_agree_on_the_sample_rate_bound(tmp_path: Path, rate: int, passes: bool) -> None:
    store = LocalStorage(tmp_path / "lake")
    # A readable row at ``rate``; an errored row's header value is not bounded by either check.
    table = _index_rows([rate, 1], [None, "no_audio_data"])
    with store.staged_file(lake.audio_index_key("p")) as path:
        pq.write_table(table, path)
    (spec,) = [
        s
        for s in load_check_specs(default_check_files())
        if s.name == "audio_index__sample_rate__accepted_range"
    ]
    yaml_outcome = run_check_sql(spec, store, "p")
    _, failures = validate_index_file(store.root / lake.audio_index_key("p"))
    assert yaml_outcome.passed is passes
    assert (failures is None) is passes, failures


def test_combine_takes_the_worst_status_and_keeps_rows_per_partition() -> None:
    findings = {
        "a": Finding("pass", 0, 10, "ok", metadata={"checked": 10}),
        "b": Finding("warn", 1, 5, "one", rows=("b1",), metadata={"checked": 5}),
        "c": Finding("error", 2, 5, "two", rows=("c1", "c2"), metadata={"checked": 5, "v": "x"}),
    }
    run = combine(["a", "b", "c"], findings.__getitem__)
    assert run.status == "error" and not run.passed
    assert (run.failures, run.considered) == (3, 20)
    assert run.rows == [("c", "c1"), ("c", "c2"), ("b", "b1")]  # worst partitions first
    assert run.failing_summary == "c (error: 2), b (warn: 1)"
    assert run.message == "2 of 3 partitions failing; c: two; b: one"
    assert run.totals() == {"checked": 20}
    assert run.metadata_columns() == ["checked", "v"]
    assert combine(["a"], findings.__getitem__).message == "passed in all 1 partitions"
    with pytest.raises(ValueError, match="at least one partition"):
        combine([], findings.__getitem__)
