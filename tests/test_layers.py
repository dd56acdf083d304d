"""Lower layers never import upward: teachers, audio and storage know nothing of stages, assets or resources."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "asr_distill"
UPPER = ("asr_distill.stages", "asr_distill.assets", "asr_distill.resources", "asr_distill.definitions")


def _imports(path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["teachers", "audio", "storage"])
def test_lower_layers_do_not_import_upward(layer: str) -> None:
    upward = {
        str(path.relative_to(REPO_ROOT)): sorted(n for n in _imports(path) if n.startswith(UPPER))
        for path in sorted((PACKAGE / layer).rglob("*.py"))
    }
    assert {k: v for k, v in upward.items() if v} == {}


def test_oss_backend_is_imported_only_for_oss_uris() -> None:
    """Local runs never import oss2: the ``asr_distill.storage.oss`` package loads on the first ``oss://``."""
    import subprocess
    import sys

    code = (
        "import sys, asr_distill.storage as s, asr_distill.resources.storage as r\n"
        "r.make_storage_resource('/tmp/x').backend_options(); s.open_storage('/tmp/x')\n"
        "assert 'oss2' not in sys.modules and 'asr_distill.storage.oss' not in sys.modules\n"
        "import asr_distill.storage.oss as oss\n"
        "assert s._BACKENDS['oss'] is oss._from_uri\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)
