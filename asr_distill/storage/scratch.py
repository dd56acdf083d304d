"""Local scratch folders of reads and writes through remote stores, and the sweep of killed processes' ones.

Copies of objects (``local_copy``/``versioned_copy`` of a remote store), files staged for upload
(``open_write``/``staged_file``) and the stages' read-ahead live in folders of the machine's temporary
directory named ``asrd-<kind>-<host tag>.<pid>.<process start>.<random>``. A process killed by SIGKILL
(or the OOM killer) cannot remove its folder; :func:`sweep_scratch` removes those whose process is gone
and that were not modified for ``max_age_s``, never a live process's (the same rule as the lake's
``.asrd-tmp-*`` temporaries, :meth:`asr_distill.storage.local.LocalStorage.sweep_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base imports this module: the sweep imports it when it runs
    from asr_distill.storage.base import SweepResult

KINDS = ("copy", "write", "stage", "readahead")
_NAME = re.compile(r"^asrd-(?:" + "|".join(KINDS) + r")-([0-9a-f]{8})\.(\d+)\.(\d+)\.")


def scratch_prefix(kind: str) -> str:
    """The ``prefix`` for :func:`tempfile.mkdtemp` / ``TemporaryDirectory`` of a scratch folder."""
    from asr_distill.storage.local import owner_tag

    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}")
    return f"asrd-{kind}-{owner_tag()}."


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def sweep_scratch(max_age_s: float, root: str | os.PathLike[str] | None = None) -> SweepResult:
    """Remove scratch folders of dead processes of this host not modified for ``max_age_s`` seconds."""
    from asr_distill.storage.base import SweepResult
    from asr_distill.storage.local import owner_alive

    result = SweepResult()
    base = Path(root if root is not None else tempfile.gettempdir())
    now = time.time()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return result
    for entry in entries:
        m = _NAME.match(entry.name)
        if m is None or not entry.is_dir(follow_symlinks=False):
            continue
        if owner_alive(m.group(1), int(m.group(2)), int(m.group(3))) is not False:
            result.kept += 1  # alive, or another host's (a shared temporary directory): not ours to judge
            continue
        try:
            newest = max(
                [entry.stat(follow_symlinks=False).st_mtime]
                + [p.stat().st_mtime for p in Path(entry.path).iterdir()]
            )
        except OSError:
            continue  # removed meanwhile
        if now - newest < max_age_s:
            result.kept += 1
            continue
        size = _size(Path(entry.path))
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            result.removed += 1
            result.removed_bytes += size
            if len(result.sample) < 10:
                result.sample.append(entry.path)
    return result
