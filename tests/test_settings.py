"""Every environment variable is declared once (asr_distill/settings.py) and the README's table matches it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from asr_distill import settings
from asr_distill.resources.ray import make_ray_resource
from asr_distill.resources.teacher import make_teacher_resource
from asr_distill.stages.discovery import settings_from_env
from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "asr_distill"
ENV_NAME = re.compile(r"^(?:ASR_DISTILL|OSS)_[A-Z0-9_]+$")


def _readme_table() -> list[tuple[str, ...]]:
    """The rows of the README table whose header is the settings table's header."""
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    header = "| " + " | ".join(settings.TABLE_HEADER) + " |"
    assert lines.count(header) == 1, "the README has exactly one table of environment variables"
    start = lines.index(header) + 2  # header, separator
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(tuple(cell.strip() for cell in line.strip().strip("|").split(" | ")))
    return rows


def test_readme_table_matches_the_registry() -> None:
    rows = _readme_table()
    names = [row[0].strip("`") for row in rows]
    assert names == list(settings.REGISTRY), "README rows and registry entries differ (names or order)"
    for (_, default, secret, doc), s in zip(rows, settings.REGISTRY.values(), strict=True):
        assert default == s.shown_default, s.name
        assert secret == ("yes" if s.secret else "no"), s.name
        assert doc == s.doc, s.name
    # The generated table is what the README holds, byte for byte.
    assert settings.markdown_table() in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_secrets_are_exactly_the_oss_credentials() -> None:
    secret = {s.name for s in settings.REGISTRY.values() if s.secret}
    assert secret == {"OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SECURITY_TOKEN"}


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_every_variable_is_named_only_in_the_settings_module() -> None:
    """No module spells a project variable's name as a string: they all take it from the registry."""
    spelled: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "settings.py":
            continue
        for value in _string_constants(path):
            if ENV_NAME.match(value):
                spelled.setdefault(value, []).append(str(path.relative_to(REPO_ROOT)))
    assert spelled == {}


def test_declared_defaults_are_the_code_defaults() -> None:
    """Setting each variable to its declared default changes nothing."""
    declared = {name: s.default for name, s in settings.REGISTRY.items() if s.default is not None}
    sensor = {k: v for k, v in declared.items() if k.startswith("ASR_DISTILL_SENSOR_")}
    assert len(sensor) == 8
    assert settings_from_env(sensor) == settings_from_env({})


def test_teacher_and_ray_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in settings.REGISTRY.values():
        monkeypatch.delenv(s.name, raising=False)
    unset = (make_teacher_resource(), type(make_ray_resource()))
    for s in (settings.TEACHER, settings.TEACHER_OPTIONS, settings.TEACHER_CPUS, settings.RAY):
        monkeypatch.setenv(s.name, s.default or "")
    assert (make_teacher_resource(), type(make_ray_resource())) == unset


def test_values_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ASR_DISTILL_LAKE", raising=False)
    assert settings.lake_uri() == str(Path("data/lake").resolve())
    monkeypatch.setenv("ASR_DISTILL_LAKE", str(tmp_path))
    assert settings.lake_uri() == str(tmp_path)
    monkeypatch.setenv("ASR_DISTILL_LAKE", "oss://bucket/lake")
    assert settings.lake_uri() == "oss://bucket/lake"
    monkeypatch.setenv("ASR_DISTILL_EXECUTOR", "")
    assert settings.executor_name() == "in_process"  # empty counts as unset
    assert settings.EXECUTOR.get({"ASR_DISTILL_EXECUTOR": " k8s "}) == " k8s "
    assert settings.EXECUTOR.raw({}) is None
