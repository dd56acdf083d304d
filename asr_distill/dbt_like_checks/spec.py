"""Parse and validate the YAML check files into :class:`CheckSpec` objects (no Dagster here).

Every problem is reported as ``<file>, line <n>: <what>`` (1-based lines from the YAML node
marks); all problems found in all files are raised together in one :class:`CheckSpecError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from asr_distill.dbt_like_checks import sqlutil

Severity = Literal["error", "warn"]
Scope = Literal["same", "all"]

TEST_NAMES = (
    "not_null",
    "unique",
    "accepted_values",
    "accepted_range",
    "relationships",
    "row_count",
    "expression_is_true",
)
_COLUMN_TESTS = frozenset(TEST_NAMES) - {"row_count"}
_TABLE_TESTS = frozenset({"unique", "row_count", "expression_is_true"})
_COMMON_ARGS = ("where", "severity", "error_if", "warn_if", "description", "name", "partition")
_TEST_ARGS: dict[str, tuple[str, ...]] = {
    "not_null": (),
    "unique": ("columns",),
    "accepted_values": ("values", "quote"),
    "accepted_range": ("min_value", "max_value", "inclusive"),
    "relationships": ("to", "field"),
    "row_count": ("min", "max", "equals"),
    "expression_is_true": ("expression",),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")  # Dagster's rule for names and asset key parts
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
NamedValue = int | float | str | tuple[str | int | float, ...]
_STR_TAG = "tag:yaml.org,2002:str"


class CheckSpecError(ValueError):
    """One or more problems in check files; each names the file and the 1-based line."""

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = list(problems)
        lines = [_format_problem(*p) for p in self.problems]
        if len(lines) == 1:
            text = lines[0]
        else:
            text = f"{len(lines)} problems in check files:\n" + "\n".join(f"  {line}" for line in lines)
        super().__init__(text)


def _format_problem(path: str, line: int | None, message: str) -> str:
    return f"{path}, line {line}: {message}" if line is not None else f"{path}: {message}"


_THRESHOLD_RE = re.compile(r"^\s*(>=|<=|==|!=|=|>|<)\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Threshold:
    """A dbt-style condition on the failure count (``">0"``, ``">=10"``) or rate (``">5%"``)."""

    op: str
    value: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> Threshold:
        match = _THRESHOLD_RE.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(
                f"bad threshold {text!r}: expected an operator (>, >=, <, <=, ==, !=) and a number, "
                "optionally followed by %, e.g. '>0', '>=10', '!=0', '>5%'"
            )
        op, number, pct = match.groups()
        value = float(number)
        if pct and value > 100:
            raise ValueError(f"bad threshold {text!r}: a percentage cannot exceed 100%")
        return cls("==" if op == "=" else op, value, bool(pct))

    def __str__(self) -> str:
        number = int(self.value) if self.value.is_integer() else self.value
        return f"{self.op}{number}{'%' if self.percent else ''}"

    def matches(self, failures: int, considered: int) -> bool:
        """Whether the condition holds; a percentage is of ``considered`` (0% when nothing is)."""
        observed = (100.0 * failures / considered if considered else 0.0) if self.percent else failures
        return {
            ">": observed > self.value,
            ">=": observed >= self.value,
            "<": observed < self.value,
            "<=": observed <= self.value,
            "==": observed == self.value,
            "!=": observed != self.value,
        }[self.op]


DEFAULT_THRESHOLD = Threshold("!=", 0.0)


@dataclass(frozen=True)
class CheckSpec:
    """One generic test on one asset: compiled to one Dagster asset check."""

    name: str
    asset_key: tuple[str, ...]
    table: str
    test: str
    column: str | None
    args: Mapping[str, Any] = field(default_factory=dict)
    where: str | None = None
    severity: Severity = "error"
    error_if: Threshold = DEFAULT_THRESHOLD
    warn_if: Threshold = DEFAULT_THRESHOLD
    description: str | None = None
    table_scope: Scope = "same"  # how the asset's own table is read
    other_scope: Scope = "same"  # how other tables this test reads are read
    source: str = "<memory>"
    line: int = 0

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    @property
    def asset_path(self) -> str:
        return "/".join(self.asset_key)

    def summary(self) -> str:
        """A one-line human description of what the test asserts."""
        col = f"`{self.column}`" if self.column else None
        a = self.args
        if self.test == "not_null":
            text = f"{col} is never null"
        elif self.test == "unique":
            text = ", ".join(f"`{c}`" for c in a["columns"]) + (
                " is unique" if len(a["columns"]) == 1 else " are unique together"
            )
        elif self.test == "accepted_values":
            text = f"{col} is one of {list(a['values'])!r}"
        elif self.test == "accepted_range":
            lo = "" if a["min_value"] is None else f"{a['min_value']} {'<=' if a['inclusive'] else '<'} "
            hi = "" if a["max_value"] is None else f" {'<=' if a['inclusive'] else '<'} {a['max_value']}"
            text = f"{lo}{col}{hi}"
        elif self.test == "relationships":
            text = f"every {col} exists in `{a['to']}.{a['field']}`"
        elif self.test == "row_count":
            parts = []
            if a["equals"] is not None:
                parts.append(f"== {a['equals']}")
            if a["min"] is not None:
                parts.append(f">= {a['min']}")
            if a["max"] is not None:
                parts.append(f"<= {a['max']}")
            text = "row count " + " and ".join(parts)
        else:
            text = f"{col + ' ' if col else ''}{a['expression']} is true"
        if self.where:
            text += f" (where {self.where})"
        return f"{self.table}: {text}"


# -- parsing --------------------------------------------------------------------------------------------
class _Bad(Exception):
    """Internal: a problem was recorded; abandon the current entry."""


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _STR_TAG:
        return repr(node.value)
    if node.tag == "tag:yaml.org,2002:timestamp":
        return f"the date/time {node.value} (quote it to make it a string)"
    return str(node.value or "null")


class _FileParser:
    def __init__(
        self, path: Path, problems: list[tuple[str, int | None, str]], values: Mapping[str, NamedValue]
    ) -> None:
        self.path = path
        self.problems = problems
        self.values = values
        self.loader: yaml.SafeLoader | None = None
        self.known: set[str] | None = None

    # -- reporting and node helpers -----------------------------------------------------------------
    def bad(self, node: yaml.Node | None, message: str) -> _Bad:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append((str(self.path), line, message))
        return _Bad()

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.bad(node, f"{what} must be a mapping, got {_describe(node)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.bad(key_node, "YAML merge keys (<<) are not supported in check files")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                raise self.bad(key_node, f"keys of {what} must be strings, got {_describe(key_node)}")
            if key_node.value in out:
                first = out[key_node.value][0].start_mark.line + 1
                raise self.bad(
                    key_node, f"duplicate key {key_node.value!r} in {what} (first at line {first})"
                )
            out[key_node.value] = (key_node, value_node)
        return out

    def keys(
        self,
        node: yaml.Node,
        items: Mapping[str, tuple[yaml.Node, yaml.Node]],
        what: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> None:
        allowed = tuple(allowed)
        for key, (key_node, _) in items.items():
            if key not in allowed:
                hint = f"; allowed: {', '.join(allowed)}" if allowed else "; it takes no arguments"
                raise self.bad(key_node, f"unknown key {key!r} in {what}{hint}")
        for key in required:
            if key not in items:
                raise self.bad(node, f"{what} is missing the required key {key!r}")

    def value(self, node: yaml.Node) -> Any:
        assert self.loader is not None
        return self.loader.construct_object(node, deep=True)

    def string(self, node: yaml.Node, what: str, *, sql: bool = False) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG:
            raise self.bad(node, f"{what} must be a string, got {_describe(node)}")
        text = node.value
        if not text.strip():
            raise self.bad(node, f"{what} must not be empty")
        if "\x00" in text:
            raise self.bad(node, f"{what} contains a NUL character")
        if sql:
            text = self.render(node, text, what)
            self.sql(node, text, what)
        return text

    def render(self, node: yaml.Node, text: str, what: str) -> str:
        """``text`` with each ``{{ name }}`` replaced by the SQL literal of that named value."""

        def literal(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                known = ", ".join(sorted(self.values)) or "none"
                raise self.bad(node, f"{what}: unknown named value {{{{ {name} }}}} (known: {known})")
            return _sql_literal(self.values[name])

        rendered = _PLACEHOLDER_RE.sub(literal, text)
        if "{{" in rendered:
            raise self.bad(node, f"{what}: a placeholder must read {{{{ name }}}} (letters, digits and _)")
        return rendered

    def sql(self, node: yaml.Node, text: str, what: str) -> set[str]:
        try:
            tables = sqlutil.check_expression(text)
        except sqlutil.SqlFragmentError as exc:
            raise self.bad(node, f"{what} is not a valid SQL expression: {exc}") from None
        if self.known is not None:
            unknown = sorted(t for t in tables if t not in self.known)
            if unknown:
                raise self.bad(
                    node,
                    f"{what} reads {', '.join(map(repr, unknown))}, not a known lake table "
                    f"(known: {', '.join(sorted(self.known))})",
                )
        return tables

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise self.bad(node, f"{what} must be true or false, got {_describe(node)}")
        return value

    def integer(self, node: yaml.Node, what: str) -> int:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.bad(node, f"{what} must be a non-negative integer, got {_describe(node)}")
        return value

    def number_or_sql(self, node: yaml.Node, what: str) -> int | float | str:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or value is None or not isinstance(value, int | float | str):
            raise self.bad(node, f"{what} must be a number or a SQL expression string, got {_describe(node)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.bad(node, f"{what} must be a finite number, got {_describe(node)}")
        if isinstance(value, str):
            whole = _PLACEHOLDER_RE.fullmatch(value.strip())
            named = self.values.get(whole.group(1)) if whole else None
            if isinstance(named, int | float) and not isinstance(named, bool):
                return named  # a named bound alone stays a number
            return self.string(node, what, sql=True)
        return value

    def name_list(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.bad(node, f"{what} must not be empty")
        names = tuple(self.string(item, f"an entry of {what}") for item in items)
        if len(set(names)) != len(names):
            raise self.bad(node, f"{what} lists a column twice")
        return names

    def table_name(self, node: yaml.Node, what: str) -> str:
        name = self.string(node, what)
        if not sqlutil.is_valid_table_name(name):
            raise self.bad(
                node,
                f"{what} {name!r} is not a valid lake table name (letters, digits and _, not starting "
                f"with a digit or {sqlutil.RESERVED_PREFIX!r})",
            )
        if self.known is not None and name.lower() not in self.known:
            raise self.bad(
                node, f"{what} {name!r} is not a known lake table (known: {', '.join(sorted(self.known))})"
            )
        return name

    def scope(self, node: yaml.Node, what: str) -> Scope:
        value = self.string(node, what)
        if value not in ("same", "all"):
            raise self.bad(node, f"{what} must be 'same' or 'all', got {value!r}")
        return value  # type: ignore[return-value]

    # -- the file -------------------------------------------------------------------------------------
    def parse(self, known_tables: Iterable[str] | None) -> list[CheckSpec]:
        self.known = {t.lower() for t in known_tables} if known_tables is not None else None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.bad(None, f"cannot read check file: {exc}")
            return []
        self.loader = yaml.SafeLoader(text)
        try:
            try:
                root = self.loader.get_single_node()
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                line = mark.line + 1 if mark is not None else None
                reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
                self.problems.append((str(self.path), line, f"invalid YAML: {reason}"))
                return []
            except yaml.YAMLError as exc:
                self.problems.append((str(self.path), None, f"invalid YAML: {exc}"))
                return []
            if root is None:
                self.problems.append(
                    (str(self.path), 1, "empty check file: expected `version: 1` and `assets:`")
                )
                return []
            try:
                top = self.mapping(root, "the check file")
                self.keys(root, top, "the check file", ("version", "assets"), ("version", "assets"))
                version_node = top["version"][1]
                version = self.value(version_node) if isinstance(version_node, yaml.ScalarNode) else None
                if isinstance(version, bool) or version != 1:
                    raise self.bad(version_node, f"unsupported version {_describe(version_node)}; expected 1")
                assets_node = top["assets"][1]
                if not isinstance(assets_node, yaml.SequenceNode):
                    raise self.bad(assets_node, f"`assets` must be a list, got {_describe(assets_node)}")
            except _Bad:
                return []
            specs: list[CheckSpec] = []
            for entry in assets_node.value:
                try:
                    specs.extend(self.asset_entry(entry))
                except _Bad:
                    continue
            return specs
        finally:
            self.loader.dispose()

    def asset_entry(self, node: yaml.Node) -> list[CheckSpec]:
        what = "an `assets` entry"
        items = self.mapping(node, what)
        self.keys(
            node, items, what, ("asset", "table", "partition", "description", "tests", "columns"), ("asset",)
        )
        asset_node = items["asset"][1]
        asset = self.string(asset_node, "`asset`")
        key = tuple(asset.split("/"))
        bad_parts = [p for p in key if not _NAME_RE.match(p)]
        if bad_parts:
            raise self.bad(
                asset_node,
                f"`asset` {asset!r} is not a valid Dagster asset key: each '/'-separated part must match "
                f"[A-Za-z0-9_]+ (bad: {', '.join(map(repr, bad_parts))})",
            )
        if "table" in items:
            table = self.table_name(items["table"][1], "`table`")
        else:
            table = key[-1]
            if not sqlutil.is_valid_table_name(table):
                raise self.bad(asset_node, f"cannot use {table!r} as a table name; set `table:` explicitly")
            if self.known is not None and table.lower() not in self.known:
                raise self.bad(
                    asset_node,
                    f"the default table {table!r} (from `asset`) is not a known lake table; set `table:` "
                    f"(known: {', '.join(sorted(self.known))})",
                )
        scope = self.scope(items["partition"][1], "`partition`") if "partition" in items else "same"
        if "description" in items:
            self.string(items["description"][1], "`description`")
        base = {"asset_key": key, "table": table, "table_scope": scope}

        specs: list[CheckSpec] = []
        if "tests" in items:
            for test_node in self.test_list(items["tests"][1], "table `tests`"):
                try:
                    specs.append(self.test(test_node, base, column=None))
                except _Bad:
                    continue
        if "columns" in items:
            columns_node = items["columns"][1]
            if not isinstance(columns_node, yaml.SequenceNode):
                raise self.bad(columns_node, f"`columns` must be a list, got {_describe(columns_node)}")
            for col_node in columns_node.value:
                try:
                    col_items = self.mapping(col_node, "a `columns` entry")
                    self.keys(
                        col_node, col_items, "a `columns` entry", ("name", "description", "tests"), ("name",)
                    )
                    column = self.string(col_items["name"][1], "column `name`")
                    if "description" in col_items:
                        self.string(col_items["description"][1], "`description`")
                    tests = (
                        self.test_list(col_items["tests"][1], "column `tests`")
                        if "tests" in col_items
                        else []
                    )
                except _Bad:
                    continue
                for test_node in tests:
                    try:
                        specs.append(self.test(test_node, base, column=column))
                    except _Bad:
                        continue
        return specs

    def test_list(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.bad(node, f"{what} must be a list, got {_describe(node)}")
        return list(node.value)

    def test(self, node: yaml.Node, base: dict[str, Any], column: str | None) -> CheckSpec:
        # `- not_null` or `- unique: {...}` / `- unique:` (null arguments).
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
            name_node, args_node = node, None
        elif isinstance(node, yaml.MappingNode) and len(node.value) == 1:
            name_node, args_node = node.value[0]
            if not isinstance(name_node, yaml.ScalarNode) or name_node.tag != _STR_TAG:
                raise self.bad(name_node, f"a test name must be a string, got {_describe(name_node)}")
        elif isinstance(node, yaml.MappingNode) and len(node.value) > 1:
            keys = ", ".join(repr(k.value) for k, _ in node.value)
            raise self.bad(
                node,
                f"a test entry must have exactly one key, the test name; found {keys} "
                "(indent the arguments under the test name)",
            )
        else:
            raise self.bad(
                node,
                "a test must be a test name or a mapping of one test name to its arguments, got "
                + _describe(node),
            )
        test = name_node.value
        if test not in TEST_NAMES:
            raise self.bad(name_node, f"unknown test {test!r}; known tests: {', '.join(TEST_NAMES)}")
        if column is not None and test not in _COLUMN_TESTS:
            raise self.bad(name_node, f"{test!r} is a table-level test: put it under the asset's `tests`")
        if column is None and test not in _TABLE_TESTS:
            raise self.bad(name_node, f"{test!r} is a column-level test: put it under a column's `tests`")
        what = f"the arguments of {test!r}"
        if args_node is None or (
            isinstance(args_node, yaml.ScalarNode) and args_node.tag == "tag:yaml.org,2002:null"
        ):
            items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
            args_node = name_node
        else:
            items = self.mapping(args_node, what)
        specific = _TEST_ARGS[test]
        if test == "unique" and column is not None:
            specific = ()
        required = {
            "accepted_values": ("values",),
            "relationships": ("to", "field"),
            "expression_is_true": ("expression",),
            "unique": ("columns",) if column is None else (),
        }.get(test, ())
        self.keys(args_node, items, what, specific + _COMMON_ARGS, required)

        def node_of(key: str) -> yaml.Node:
            return items[key][1]

        # -- common arguments --
        where = self.string(node_of("where"), "`where`", sql=True) if "where" in items else None
        severity = "error"
        if "severity" in items:
            severity = self.string(node_of("severity"), "`severity`").lower()
            if severity not in ("error", "warn"):
                raise self.bad(node_of("severity"), f"`severity` must be 'error' or 'warn', got {severity!r}")
        thresholds = {}
        for key in ("error_if", "warn_if"):
            thresholds[key] = DEFAULT_THRESHOLD
            if key in items:
                text = self.string(node_of(key), f"`{key}`")
                try:
                    thresholds[key] = Threshold.parse(text)
                except ValueError as exc:
                    raise self.bad(node_of(key), f"`{key}`: {exc}") from None
                if test == "row_count" and thresholds[key].percent:
                    raise self.bad(
                        node_of(key), f"`{key}`: percentages make no sense for row_count (0 or 1 failure)"
                    )
        description = self.string(node_of("description"), "`description`") if "description" in items else None
        other_scope = self.scope(node_of("partition"), "`partition`") if "partition" in items else "same"

        # -- test-specific arguments --
        args: dict[str, Any] = {}
        if test == "unique":
            args["columns"] = (
                (column,) if column is not None else self.name_list(node_of("columns"), "`columns`")
            )
        elif test == "accepted_values":
            values_node = node_of("values")
            if not isinstance(values_node, yaml.SequenceNode) or not values_node.value:
                raise self.bad(
                    values_node, f"`values` must be a non-empty list, got {_describe(values_node)}"
                )
            quote = self.boolean(node_of("quote"), "`quote`") if "quote" in items else True
            values = []
            for item in values_node.value:
                value = self.value(item) if isinstance(item, yaml.ScalarNode) else None
                if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise self.bad(
                        item, f"a `values` entry must be a string or a number, got {_describe(item)}"
                    )
                if isinstance(value, float) and not math.isfinite(value):
                    raise self.bad(item, f"a `values` entry must be finite, got {_describe(item)}")
                if isinstance(value, str) and not quote:
                    self.sql(item, value, "an unquoted `values` entry")
                values.append(value)
            args.update(values=tuple(values), quote=quote)
        elif test == "accepted_range":
            if "min_value" not in items and "max_value" not in items:
                raise self.bad(args_node, "accepted_range needs `min_value`, `max_value` or both")
            for key in ("min_value", "max_value"):
                args[key] = self.number_or_sql(node_of(key), f"`{key}`") if key in items else None
            args["inclusive"] = (
                self.boolean(node_of("inclusive"), "`inclusive`") if "inclusive" in items else True
            )
            lo, hi = args["min_value"], args["max_value"]
            if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
                raise self.bad(args_node, f"accepted_range: min_value {lo} is greater than max_value {hi}")
        elif test == "relationships":
            args["to"] = self.table_name(node_of("to"), "`to`")
            args["field"] = self.string(node_of("field"), "`field`")
        elif test == "row_count":
            if not items.keys() & {"min", "max", "equals"}:
                raise self.bad(args_node, "row_count needs `min`, `max` or `equals`")
            if "equals" in items and items.keys() & {"min", "max"}:
                raise self.bad(node_of("equals"), "row_count takes either `equals` or `min`/`max`, not both")
            for key in ("min", "max"):
                args[key] = self.integer(node_of(key), f"`{key}`") if key in items else None
            if args["min"] is not None and args["max"] is not None and args["min"] > args["max"]:
                raise self.bad(args_node, f"row_count: min {args['min']} is greater than max {args['max']}")
            args["equals"] = None
            if "equals" in items:
                eq_node = node_of("equals")
                value = self.value(eq_node) if isinstance(eq_node, yaml.ScalarNode) else None
                if isinstance(value, str):
                    args["equals"] = self.string(eq_node, "`equals`", sql=True)
                else:
                    args["equals"] = self.integer(eq_node, "`equals`")
        elif test == "expression_is_true":
            args["expression"] = self.render(
                node_of("expression"), self.string(node_of("expression"), "`expression`"), "`expression`"
            )
            if column is not None:
                self.sql(
                    node_of("expression"),
                    f"{sqlutil.quote_ident(column)} {args['expression']}",
                    "`expression`",
                )
            else:
                self.sql(node_of("expression"), args["expression"], "`expression`")

        if "name" in items:
            check_name = self.string(node_of("name"), "`name`")
            if not _NAME_RE.match(check_name):
                raise self.bad(
                    node_of("name"), f"`name` {check_name!r} must match [A-Za-z0-9_]+ (a Dagster name)"
                )
        else:
            check_name = _default_name(base["table"], test, column, args)
        return CheckSpec(
            name=check_name,
            test=test,
            column=column,
            args=args,
            where=where,
            severity=severity,  # type: ignore[arg-type]
            error_if=thresholds["error_if"],
            warn_if=thresholds["warn_if"],
            description=description,
            other_scope=other_scope,  # type: ignore[arg-type]
            source=str(self.path),
            line=node.start_mark.line + 1,
            **base,
        )


def _sql_literal(value: NamedValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_sql_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return sqlutil.quote_str(value)
    return sqlutil.number_literal(value)


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _default_name(table: str, test: str, column: str | None, args: Mapping[str, Any]) -> str:
    """``<table>__<column(s)>__<test>`` (``__<test>_<to>`` for relationships), Dagster-safe."""
    if test == "unique" and column is None:
        subject = "_".join(args["columns"])
    else:
        subject = column
    suffix = f"{test}_{args['to']}" if test == "relationships" else test
    parts = [table, subject, suffix] if subject is not None else [table, suffix]
    return "__".join(_sanitize(p) for p in parts)


def load_check_specs(
    paths: Iterable[Path | str],
    *,
    known_tables: Iterable[str] | None = None,
    values: Mapping[str, NamedValue] | None = None,
) -> list[CheckSpec]:
    """Parse and validate check files, in the order given; raise :class:`CheckSpecError` on any problem.

    With ``known_tables`` (e.g. ``asr_distill.lake.registered_tables()``), every table a test names or
    reads must be one of them; without it, tables are only resolved when a check runs. ``values`` are
    the names a SQL string may reference as ``{{ name }}`` (default: the project's bounds and reason
    lists, :data:`asr_distill.data_quality.named.CHECK_VALUES`).
    """
    if values is None:
        from asr_distill.data_quality.named import CHECK_VALUES  # imports the stage schemas

        values = CHECK_VALUES
    problems: list[tuple[str, int | None, str]] = []
    specs: list[CheckSpec] = []
    known = list(known_tables) if known_tables is not None else None
    for path in paths:
        specs.extend(_FileParser(Path(path), problems, values).parse(known))
    seen: dict[tuple[tuple[str, ...], str], CheckSpec] = {}
    for spec in specs:
        key = (spec.asset_key, spec.name)
        if key in seen:
            first = seen[key]
            problems.append(
                (
                    spec.source,
                    spec.line,
                    f"check name {spec.name!r} for asset {spec.asset_path!r} is already used by the test at "
                    f"{first.source}, line {first.line}; give one of them a distinct `name:`",
                )
            )
        else:
            seen[key] = spec
    if problems:
        raise CheckSpecError(problems)
    return specs
