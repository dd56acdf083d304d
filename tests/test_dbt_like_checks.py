"""The declarative checks engine: YAML validation, every test type, thresholds, and a Dagster run."""

import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_distill import lake
from asr_distill.dbt_like_checks import (
    CHECKS_DIR,
    CheckSpecError,
    Threshold,
    build_asset_checks,
    default_check_files,
    load_check_specs,
    run_check_sql,
)
from asr_distill.dbt_like_checks.engine import run_check_per_partition
from asr_distill.resources.storage import StorageResource
from asr_distill.storage import LocalStorage, Storage

TABLES = ("dlc_items", "dlc_other", "dlc_cleaned", "dlc_quarantine")


def _resolver(table: str):
    """Every ``<table>/<partition>/*.parquet`` object of a partition (or of all partitions)."""

    def resolve(store: Storage, partition: str | None) -> list[str]:
        prefix = f"{table}/" if partition is None else f"{table}/{partition}/"
        return [o.key for o in store.iter_objects(prefix) if o.key.endswith(".parquet")]

    return resolve


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    for table in TABLES:
        monkeypatch.setitem(lake._TABLES, table, _resolver(table))
    root = tmp_path / "lake"
    root.mkdir()
    return LocalStorage(root)


def write(store: Storage, table: str, partition: str, columns: dict, part: str = "part-0") -> None:
    with store.staged_file(f"{table}/{partition}/{part}.parquet") as path:
        pq.write_table(pa.table(columns), path)


def load(tmp_path: Path, text: str, name: str = "checks.yaml", **kwargs):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_check_specs([path], **kwargs)


def items_yaml(body: str, asset_extra: str = "") -> str:
    """A check file for asset ``dlc_items`` with ``body`` (already indented for the entry) appended."""
    return "version: 1\nassets:\n  - asset: dlc_items\n" + asset_extra + body


def column_test(column: str, test_yaml: str) -> str:
    """A file with one column test; ``test_yaml`` is the test entry (no leading ``- ``)."""
    test = textwrap.indent(textwrap.dedent(test_yaml).strip(), " " * 10)[10:]
    return items_yaml(f"    columns:\n      - name: {column}\n        tests:\n          - {test}\n")


def table_test(test_yaml: str) -> str:
    test = textwrap.indent(textwrap.dedent(test_yaml).strip(), " " * 6)[6:]
    return items_yaml(f"    tests:\n      - {test}\n")


def run_one(tmp_path: Path, store: Storage, text: str, partition: str | None = "p1"):
    (spec,) = load(tmp_path, text)
    return run_check_sql(spec, store, partition)


ITEMS = {
    "key": ["a", "b", "b", "c", None, "d"],
    "v": [1, 2, 11, 3, None, 0],
    "ref": [1, 2, 9, None, 3, 2],
    "kind": ["x", "y", "z", "x", "O'Brien", "x"],
}


@pytest.fixture
def items(store: LocalStorage) -> LocalStorage:
    write(store, "dlc_items", "p1", ITEMS)
    write(store, "dlc_other", "p1", {"id": [1, 2, 3]})
    return store


# -- every test type, passing and failing -------------------------------------------------------------
def test_not_null(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("key", "not_null"))
    assert (out.status, out.failures, out.rows_considered) == ("error", 1, 6)
    assert out.spec.name == "dlc_items__key__not_null" and out.spec.blocking
    assert "| NULL |" in out.sample_markdown() and "O'Brien" in out.sample_markdown()
    ok = run_one(tmp_path, items, column_test("kind", "not_null"))
    assert (ok.status, ok.failures, ok.rows_considered) == ("pass", 0, 6)
    assert ok.sample_markdown() == ""


def test_unique_single_and_combination(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("key", "unique"))
    # Both rows of the duplicated key fail; the NULL key is ignored.
    assert (out.status, out.failures, out.extra["duplicate_keys"]) == ("error", 2, 1)
    assert [r[0] for r in out.sample_rows] == ["b", "b"]
    assert run_one(tmp_path, items, column_test("kind", "unique")).failures == 3  # three "x"
    assert run_one(tmp_path, items, column_test("v", "unique")).status == "pass"
    combo = run_one(tmp_path, items, table_test("unique: {columns: [key, kind]}"))
    assert combo.spec.name == "dlc_items__key_kind__unique"
    assert (combo.status, combo.failures) == ("pass", 0)
    write(items, "dlc_items", "p9", {"a": [1, 1, 1, None, None], "b": ["x", "x", "y", "x", "x"]})
    combo = run_one(tmp_path, items, table_test("unique: {columns: [a, b]}"), partition="p9")
    assert (combo.status, combo.failures, combo.extra["duplicate_keys"]) == ("error", 2, 1)  # (1, x) twice
    assert combo.sample_rows == ((1, "x"), (1, "x"))


def test_accepted_values(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("kind", 'accepted_values: {values: [x, y, "O\'Brien"]}'))
    assert (out.status, out.failures) == ("error", 1)
    assert out.sample_rows[0][3] == "z"
    ok = run_one(tmp_path, items, column_test("kind", 'accepted_values: {values: [x, y, z, "O\'Brien"]}'))
    assert ok.passed
    # NULLs are not failures; numbers compare as numbers.
    nums = run_one(tmp_path, items, column_test("v", "accepted_values: {values: [0, 1, 2, 3], quote: false}"))
    assert (nums.status, nums.failures) == ("error", 1)


def test_accepted_range(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("v", "accepted_range: {min_value: 0, max_value: 10}"))
    assert (out.status, out.failures, out.sample_rows[0][1]) == ("error", 1, 11)
    excl = run_one(
        tmp_path, items, column_test("v", "accepted_range: {min_value: 0, max_value: 11, inclusive: false}")
    )
    assert excl.failures == 2  # 0 and 11 are on the open bounds
    assert run_one(tmp_path, items, column_test("v", "accepted_range: {min_value: 0}")).passed
    sql_bound = run_one(
        tmp_path, items, column_test("v", 'accepted_range: {max_value: "(select max(id) from dlc_other)"}')
    )
    assert sql_bound.failures == 1 and sql_bound.objects == {"dlc_items": 1, "dlc_other": 1}


def test_multi_partition_runs_apply_thresholds_per_partition(tmp_path: Path, store: LocalStorage) -> None:
    """In a run covering several partitions, a percentage threshold holds for each partition: one bad
    prefix (100 % failing) cannot hide among good ones (under 50 % over the union)."""
    write(store, "dlc_items", "good", {"v": list(range(10))})
    write(store, "dlc_items", "bad", {"v": [99, 98]})
    (spec,) = load(tmp_path, table_test('expression_is_true: {expression: "v < 10", error_if: ">50%"}'))
    assert (
        run_check_sql(spec, store, ["good", "bad"]).status == "warn"
    )  # the union: 2 of 12 rows, not an error
    out = run_check_per_partition(spec, store, ["good", "bad"])
    assert (out.status, out.failures, out.rows_considered) == ("error", 2, 12)
    assert out.partitions == ("good", "bad") and out.objects == {"dlc_items": 2}
    assert out.extra["partitions_failing"] == "bad (error: 2)"
    assert out.sample_columns[0] == "partition" and {r[0] for r in out.sample_rows} == {"bad"}
    assert "1 of 2 partitions failing" in out.message
    good = run_check_per_partition(spec, store, ["good"])
    assert good.passed and good.partitions == ("good",)
    (warn,) = load(
        tmp_path, table_test('expression_is_true: {expression: "v < 10", warn_if: ">0", error_if: ">100%"}')
    )
    assert run_check_per_partition(warn, store, ["good", "bad"]).status == "warn"


def test_relationships(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("ref", "relationships: {to: dlc_other, field: id}"))
    assert out.spec.name == "dlc_items__ref__relationships_dlc_other"
    assert (out.status, out.failures, out.sample_rows[0][2]) == ("error", 1, 9)
    ok = run_one(
        tmp_path,
        items,
        column_test("v", 'relationships: {to: dlc_other, field: id, where: "v between 1 and 3"}'),
    )
    assert (ok.status, ok.rows_considered) == ("pass", 3)


def test_relationships_target_missing_is_a_failure(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", ITEMS)
    out = run_one(tmp_path, store, column_test("ref", "relationships: {to: dlc_other, field: id}"))
    assert out.status == "error" and "dlc_other" in out.problem and "no output" in out.problem


def test_row_count_bounds(tmp_path: Path, items: LocalStorage) -> None:
    assert run_one(tmp_path, items, table_test("row_count: {min: 1, max: 6}")).passed
    low = run_one(tmp_path, items, table_test("row_count: {min: 7}"))
    assert (low.status, low.failures, low.extra["row_count"]) == ("error", 1, 6)
    assert "6 < min 7" in low.message
    high = run_one(tmp_path, items, table_test('row_count: {max: 2, where: "v > 0"}'))
    assert (high.failures, high.extra["row_count"]) == (1, 4)
    assert run_one(tmp_path, items, table_test("row_count: {equals: 6}")).passed


def test_row_count_equals_expression_over_other_tables(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", {"k": list(range(5))})
    write(store, "dlc_cleaned", "p1", {"k": [0, 1, 2]})
    write(store, "dlc_quarantine", "p1", {"k": [3, 4]})
    text = table_test(
        'row_count: {equals: "(select count(*) from dlc_cleaned) + (select count(*) from dlc_quarantine)"}'
    )
    ok = run_one(tmp_path, store, text)
    assert ok.passed and ok.extra == {"row_count": 5, "expected": 5}
    assert ok.objects == {"dlc_items": 1, "dlc_cleaned": 1, "dlc_quarantine": 1}
    write(store, "dlc_quarantine", "p1", {"k": [9]}, part="part-1")  # one row too many downstream
    bad = run_one(tmp_path, store, text)
    assert (bad.status, bad.failures, bad.extra) == ("error", 1, {"row_count": 5, "expected": 6})
    assert "5 != expected 6" in bad.message


def test_expression_is_true(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, table_test('expression_is_true: {expression: "v < 10"}'))
    assert (out.status, out.failures) == ("error", 2)  # 11 fails, and NULL is not TRUE
    col = run_one(tmp_path, items, column_test("v", 'expression_is_true: {expression: "< 10"}'))
    assert (col.status, col.failures, col.rows_considered) == ("error", 1, 6)  # NULL v skipped
    assert run_one(tmp_path, items, column_test("v", 'expression_is_true: {expression: ">= 0"}')).passed


# -- where, thresholds, severity -----------------------------------------------------------------------
def test_where_filters_first(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("key", 'unique: {where: "v < 10"}'))
    assert (out.status, out.failures, out.rows_considered) == ("pass", 0, 4)


@pytest.mark.parametrize(
    ("thresholds", "status"),
    [
        ('warn_if: ">0", error_if: ">=3"', "warn"),  # 2 failures
        ('warn_if: ">0", error_if: ">=2"', "error"),
        ('warn_if: ">5", error_if: ">=3"', "pass"),
        ('warn_if: ">30%", error_if: ">50%"', "warn"),  # 2 of 6 = 33%
        ('warn_if: ">40%", error_if: ">50%"', "pass"),
        ('error_if: ">=33%"', "error"),
        ('error_if: "==2"', "error"),
        ('severity: warn, error_if: ">0"', "warn"),  # warn severity never errors
        ('severity: warn, warn_if: ">2"', "pass"),
    ],
)
def test_thresholds(tmp_path: Path, items: LocalStorage, thresholds: str, status: str) -> None:
    out = run_one(tmp_path, items, table_test(f'expression_is_true: {{expression: "v < 10", {thresholds}}}'))
    assert out.failures == 2 and out.rows_considered == 6
    assert out.status == status
    assert out.spec.blocking == ("severity: warn" not in thresholds)


def test_threshold_parsing() -> None:
    assert str(Threshold.parse(" >= 10 ")) == ">=10"
    assert Threshold.parse("=0") == Threshold("==", 0.0)
    pct = Threshold.parse(">5%")
    assert pct.percent and pct.matches(6, 100) and not pct.matches(5, 100) and not pct.matches(0, 0)
    assert Threshold.parse("!=0").matches(1, 1) and not Threshold.parse("!=0").matches(0, 5)
    for bad in ("0", "> x", ">-1", ">5%%", "gt 5", ">150%", ""):
        with pytest.raises(ValueError, match="threshold"):
            Threshold.parse(bad)


# -- tables and partitions ------------------------------------------------------------------------------
def test_missing_output_is_a_failure_with_the_test_severity(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("key", "not_null"), partition="p2")
    assert out.status == "error" and not out.passed
    assert "did not write its output" in out.problem and "'p2'" in out.problem
    warn = run_one(tmp_path, items, column_test("key", "not_null: {severity: warn}"), partition="p2")
    assert warn.status == "warn"


def test_partition_scopes(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", {"key": ["a", "b"], "ref": [1, 2]})
    write(store, "dlc_items", "p2", {"key": ["b", "c"], "ref": [3, 3]})
    write(store, "dlc_other", "p1", {"id": [1, 2]})
    write(store, "dlc_other", "p2", {"id": [3]})
    assert run_one(tmp_path, store, column_test("key", "unique"), partition="p1").passed
    # Across all partitions "b" is duplicated: an unpartitioned run, or `partition: all` on the entry.
    assert run_one(tmp_path, store, column_test("key", "unique"), partition=None).failures == 2
    text = items_yaml("    columns:\n      - name: key\n        tests: [unique]\n", "    partition: all\n")
    assert run_one(tmp_path, store, text, partition="p1").failures == 2
    # Other tables: same partition by default, every partition with `partition: all` on the test.
    same = run_one(tmp_path, store, column_test("ref", "relationships: {to: dlc_other, field: id}"), "p2")
    assert same.passed
    write(store, "dlc_items", "p3", {"key": ["z"], "ref": [1]})
    write(store, "dlc_other", "p3", {"id": [7]})
    assert (
        run_one(
            tmp_path, store, column_test("ref", "relationships: {to: dlc_other, field: id}"), "p3"
        ).failures
        == 1
    )
    every = run_one(
        tmp_path, store, column_test("ref", "relationships: {to: dlc_other, field: id, partition: all}"), "p3"
    )
    assert every.passed and every.objects == {"dlc_items": 1, "dlc_other": 3}
    # Several partitions at once (a partition range run).
    assert run_one(tmp_path, store, column_test("key", "unique"), partition=["p1", "p2"]).failures == 2


def test_several_objects_are_unioned_by_name(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", {"key": ["a"], "v": [1]}, part="part-0")
    write(store, "dlc_items", "p1", {"key": ["b"], "extra": ["e"]}, part="part-1")
    out = run_one(tmp_path, store, column_test("v", "not_null"))
    assert (out.failures, out.rows_considered, out.objects) == (1, 2, {"dlc_items": 2})
    assert out.sample_columns == ("key", "v", "extra")


def test_glob_characters_in_keys_are_read_literally(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p*", {"key": ["a", "a"]})
    write(store, "dlc_items", "px", {"key": ["b"]})
    out = run_one(tmp_path, store, column_test("key", "unique"), partition="p*")
    assert (out.failures, out.rows_considered) == (2, 2)


def test_remote_store_objects_are_copied(tmp_path: Path, items: LocalStorage) -> None:
    class NoLocalPaths(LocalStorage):
        def local_path(self, key: str) -> Path | None:
            return None

    out = run_one(
        tmp_path, NoLocalPaths(items.root), column_test("ref", "relationships: {to: dlc_other, field: id}")
    )
    assert (out.status, out.failures) == ("error", 1)


def test_names_are_quoted(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", {'we"ird col': [1, None], "select": [1, 1]})
    out = run_one(tmp_path, store, column_test("'we\"ird col'", "not_null"))
    assert (out.failures, out.spec.name) == (1, "dlc_items__we_ird_col__not_null")
    assert run_one(tmp_path, store, column_test('"select"', "unique")).failures == 2


def test_sql_and_table_problems_fail_without_raising(tmp_path: Path, items: LocalStorage) -> None:
    out = run_one(tmp_path, items, column_test("no_such_column", "not_null"))
    assert out.status == "error" and "no_such_column" in out.problem
    unknown = run_one(tmp_path, items, table_test('row_count: {equals: "(select count(*) from nowhere)"}'))
    assert (
        unknown.status == "error" and "'nowhere'" in unknown.problem and "not a lake table" in unknown.problem
    )


def test_sample_is_deterministic_and_capped(tmp_path: Path, store: LocalStorage) -> None:
    keys = [f"k{i % 7}" for i in range(40)]
    write(store, "dlc_items", "p1", {"key": keys[:20], "i": list(range(20))}, part="part-1")
    write(store, "dlc_items", "p1", {"key": keys[20:], "i": list(range(20, 40))}, part="part-0")
    first = run_one(tmp_path, store, column_test("key", "unique"))
    assert first.failures == 40 and len(first.sample_rows) == 5
    assert first.sample_rows == (("k0", 0), ("k0", 7), ("k0", 14), ("k0", 21), ("k0", 28))
    assert all(
        run_one(tmp_path, store, column_test("key", "unique")).sample_rows == first.sample_rows
        for _ in range(3)
    )


def test_markdown_cells_are_escaped(tmp_path: Path, store: LocalStorage) -> None:
    write(store, "dlc_items", "p1", {"t": ["a|b\nc", "x" * 200], "b": [b"\x00\x01", None]})
    out = run_one(tmp_path, store, table_test('expression_is_true: {expression: "false"}'))
    md = out.sample_markdown()
    assert "a\\|b c" in md and "<2 bytes>" in md and "x" * 80 not in md
    assert all(line.count("|") - line.count("\\|") == 3 for line in md.splitlines())


# -- validation at load ----------------------------------------------------------------------------------
GOOD_HEAD = "version: 1\nassets:\n  - asset: dlc_items\n"

INVALID = [
    ("version: 1\nassets:\n  - asset: dlc_items\n    tests: [row_count: {min: 1}\n", 5, "invalid YAML"),
    ("version: 1\nassets:\n\t- asset: x\n", 3, "invalid YAML"),
    (GOOD_HEAD + "    columns:\n      - name: key\n        tests: [not_nul]\n", 6, "unknown test 'not_nul'"),
    (
        GOOD_HEAD
        + "    columns:\n      - name: key\n        tests:\n          - accepted_values: {quote: true}\n",
        7,
        "missing the required key 'values'",
    ),
    (
        GOOD_HEAD + "    columns:\n      - name: key\n        tests:\n          - not_null: {column: key}\n",
        7,
        "unknown key 'column'",
    ),
    (GOOD_HEAD + "    tests:\n      - row_count:\n          min: -1\n", 6, "non-negative integer"),
    (
        GOOD_HEAD + "    tests:\n      - row_count:\n          min: 1\n          max: many\n",
        7,
        "non-negative integer",
    ),
    (
        GOOD_HEAD + "    columns:\n      - name: v\n        tests:\n          - accepted_range:\n"
        '              min_value: 1\n              inclusive: "yes"\n',
        9,
        "true or false",
    ),
    (
        GOOD_HEAD
        + "    columns:\n      - name: v\n        tests:\n          - accepted_values: {values: 3}\n",
        7,
        "non-empty list",
    ),
    (GOOD_HEAD + '    tests:\n      - row_count: {min: 1, error_if: "more than 3"}\n', 5, "bad threshold"),
    (GOOD_HEAD + '    tests:\n      - row_count: {min: 1, warn_if: ">5%"}\n', 5, "percentages"),
    (GOOD_HEAD + "    owner: me\n", 4, "unknown key 'owner'"),
    ("version: 1\nassets: []\nextra: 1\n", 3, "unknown key 'extra'"),
    ("version: 2\nassets: []\n", 1, "unsupported version"),
    ("assets: []\n", 1, "missing the required key 'version'"),
    (GOOD_HEAD + "    table: dlc_items\n    table: other\n", 5, "duplicate key 'table'"),
    (GOOD_HEAD + "    tests: [not_null]\n", 4, "column-level test"),
    (GOOD_HEAD + "    columns:\n      - name: v\n        tests: [row_count]\n", 6, "table-level test"),
    (
        GOOD_HEAD + '    columns:\n      - name: v\n        tests:\n          - not_null: {where: "v >"}\n',
        7,
        "not a valid SQL expression",
    ),
    (
        GOOD_HEAD
        + '    columns:\n      - name: v\n        tests:\n          - not_null: {where: "1; drop table x"}\n',
        7,
        "not a valid SQL expression",
    ),
    (
        GOOD_HEAD
        + '    columns:\n      - name: v\n        tests:\n          - relationships: {to: "x; --", field: id}\n',
        7,
        "not a valid lake table name",
    ),
    (
        GOOD_HEAD
        + "    columns:\n      - name: v\n        tests:\n          - not_null: {severity: fatal}\n",
        7,
        "'error' or 'warn'",
    ),
    ("version: 1\nassets:\n  - asset: bad-key/x\n", 3, "not a valid Dagster asset key"),
    (GOOD_HEAD + "    tests:\n      - unique\n", 5, "missing the required key 'columns'"),
    (
        GOOD_HEAD
        + "    columns:\n      - name: d\n        tests:\n          - accepted_values: {values: [2024-01-01]}\n",
        7,
        "quote it",
    ),
    (GOOD_HEAD + "    tests:\n      - row_count: {}\n", 5, "needs `min`, `max` or `equals`"),
    (GOOD_HEAD + "    tests:\n      - row_count: {min: 1, equals: 3}\n", 5, "either `equals` or `min`/`max`"),
    (
        GOOD_HEAD
        + "    columns:\n      - name: v\n        tests:\n          - accepted_range: {min_value: 5, max_value: 1}\n",
        7,
        "greater than max_value",
    ),
    (GOOD_HEAD + '    tests:\n      - row_count: {min: 1, name: "has space"}\n', 5, "must match"),
    (
        GOOD_HEAD + "    columns:\n      - name: v\n        tests:\n          - not_null: {severity: warn}\n"
        "          - not_null\n",
        8,
        "already used",
    ),
    (GOOD_HEAD + "    tests:\n      - row_count:\n        min: 1\n", 5, "exactly one key"),
    ("", 1, "empty check file"),
    ("- 1\n", 1, "must be a mapping"),
]


@pytest.mark.parametrize(("text", "line", "message"), INVALID)
def test_invalid_check_files_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad_checks.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CheckSpecError) as info:
        load_check_specs([path])
    assert f"{path}, line {line}: " in str(info.value)
    assert message in str(info.value)


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text(GOOD_HEAD + "    columns:\n      - name: key\n        tests: [not_null, nope]\n")
    second = tmp_path / "b.yaml"
    second.write_text(GOOD_HEAD + "    columns:\n      - name: key\n        tests: [not_null]\n")
    with pytest.raises(CheckSpecError) as info:
        load_check_specs([first, second])
    problems = info.value.problems
    assert [(Path(p).name, line) for p, line, _ in problems] == [("a.yaml", 6), ("b.yaml", 6)]
    assert "unknown test 'nope'" in problems[0][2]
    assert f"already used by the test at {first}, line 6" in problems[1][2]


def test_known_tables_are_enforced_when_given(tmp_path: Path, store: LocalStorage) -> None:
    text = column_test("ref", "relationships: {to: dlc_other, field: id}")
    assert len(load(tmp_path, text, known_tables=lake.registered_tables())) == 1
    with pytest.raises(CheckSpecError, match=r"line 7: .*'dlc_other' is not a known lake table"):
        load(tmp_path, text, known_tables=["dlc_items"])
    expr = table_test('row_count: {equals: "(select count(*) from dlc_nowhere)"}')
    with pytest.raises(CheckSpecError, match=r"line 5: .*reads 'dlc_nowhere'"):
        load(tmp_path, expr, known_tables=lake.registered_tables())
    with pytest.raises(CheckSpecError, match=r"line 3: the default table 'dlc_items'"):
        load(tmp_path, GOOD_HEAD, known_tables=["dlc_other"])


def test_default_check_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = default_check_files()
    assert all(p.suffix == ".yaml" and p.parent == CHECKS_DIR for p in files)
    load_check_specs(files)  # whatever ships must load
    import asr_distill.dbt_like_checks as pkg

    monkeypatch.setattr(pkg, "CHECKS_DIR", tmp_path / "missing")
    assert default_check_files() == []
    monkeypatch.setattr(pkg, "CHECKS_DIR", tmp_path)
    (tmp_path / "b.yaml").write_text("version: 1\nassets: []\n")
    (tmp_path / "a.yaml").write_text("version: 1\nassets: []\n")
    (tmp_path / "c.yaml.disabled").write_text("nope")
    assert [p.name for p in default_check_files()] == ["a.yaml", "b.yaml"]


def test_readme_example_is_valid(tmp_path: Path) -> None:
    """The YAML example the README gives for the check format loads as it is."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Declarative checks") :]
    block = section[
        section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))
    ]
    example = tmp_path / "example.yaml"
    example.write_text(block)
    names = [s.name for s in load_check_specs([example])]
    assert "audio_index__probe_error_rate" in names
    assert "audio_index__key__unique" in names


def test_engine_runs_without_importing_dagster() -> None:
    code = (
        "import sys\n"
        "from asr_distill.dbt_like_checks import load_check_specs, run_check_sql, default_check_files\n"
        "assert 'dagster' not in sys.modules, 'dagster was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# -- Dagster wiring --------------------------------------------------------------------------------------
def test_build_asset_checks_names_and_blocking(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        "version: 1\nassets:\n  - asset: group/dlc_items\n    table: dlc_items\n"
        "    columns:\n      - name: key\n        tests: [unique, {not_null: {severity: warn}}]\n",
    )
    (checks,) = build_asset_checks(specs)  # one step per asset, one check per test
    by_name = {s.name: s for s in checks.check_specs}
    assert sorted(by_name) == ["dlc_items__key__not_null", "dlc_items__key__unique"]
    assert all(s.asset_key == dg.AssetKey(["group", "dlc_items"]) for s in by_name.values())
    assert by_name["dlc_items__key__unique"].blocking and not by_name["dlc_items__key__not_null"].blocking


PARTS = dg.DynamicPartitionsDefinition(name="dlc_test_parts")
DATA = {
    "good": {"key": ["a", "b"], "v": [1, 2]},
    "dupes": {"key": ["a", "a"], "v": [1, 2]},  # fails the blocking unique check
    "negative": {"key": ["a", "b"], "v": [1, -2]},  # fails only the warn check
}


@dg.asset(partitions_def=PARTS, key="dlc_items")
def dlc_items_asset(context: dg.AssetExecutionContext, lake: StorageResource) -> None:
    write(lake.get(), "dlc_items", context.partition_key, DATA[context.partition_key])


@dg.asset(partitions_def=PARTS, deps=[dlc_items_asset])
def dlc_downstream(context: dg.AssetExecutionContext, lake: StorageResource) -> None:
    lake.get().write_bytes(f"dlc_downstream/{context.partition_key}/done", b"ok")


CHECKS_YAML = """\
version: 1
assets:
  - asset: dlc_items
    tests:
      - row_count: {min: 1}
    columns:
      - name: key
        tests: [not_null, unique]
      - name: v
        tests:
          - accepted_range: {min_value: 0, severity: warn}
"""


@pytest.mark.parametrize("partitioned_checks", [False, True], ids=["run-partition", "partitioned-checks"])
@pytest.mark.parametrize(
    ("partition", "downstream_runs", "failed"),
    [
        ("good", True, {}),
        ("dupes", False, {"dlc_items__key__unique": dg.AssetCheckSeverity.ERROR}),
        ("negative", True, {"dlc_items__v__accepted_range": dg.AssetCheckSeverity.WARN}),
    ],
)
def test_dagster_run_blocking(
    tmp_path: Path,
    store: LocalStorage,
    partitioned_checks: bool,
    partition: str,
    downstream_runs: bool,
    failed: dict,
) -> None:
    specs = load(tmp_path, CHECKS_YAML)
    checks = build_asset_checks(specs, partitions_def=PARTS if partitioned_checks else None)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTS.name, [partition])
    result = dg.materialize(
        [dlc_items_asset, dlc_downstream, *checks],
        resources={"lake": StorageResource(uri=str(store.root))},
        partition_key=partition,
        instance=instance,
        raise_on_error=False,
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {s.name for s in specs}
    assert {name: e.severity for name, e in evaluations.items() if not e.passed} == failed
    for evaluation in evaluations.values():
        meta = evaluation.metadata
        assert meta["partition"].value == partition
        assert "rows_considered" in meta and "sql" in meta and "failures" in meta
        if not evaluation.passed:
            assert meta["failures"].value == (2 if partition == "dupes" else 1)
            assert "|" in meta["sample_failing_rows"].value
    materialized = {m.asset_key for m in result.asset_materializations_for_node("dlc_downstream")}
    assert (dg.AssetKey("dlc_downstream") in materialized) is downstream_runs
    assert store.exists(f"dlc_downstream/{partition}/done") is downstream_runs
    assert result.success is downstream_runs
