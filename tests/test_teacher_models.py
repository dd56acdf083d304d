"""The model cache: split models assembled once, atomically, hash-checked, safe under concurrent first use."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from asr_distill.teachers import models
from asr_distill.teachers.base import TeacherLoadError
from asr_distill.teachers.models import (
    MARKER,
    WHISPER_BASE,
    ModelPart,
    ModelPartError,
    SplitModel,
    ensure_model_dir,
    model_cache_root,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_model(tmp: Path, sizes: tuple[int, int] = (300_000, 123_457)) -> tuple[SplitModel, bytes]:
    """A two-part model of random bytes (files in ``tmp/src``), like the shipped one but small."""
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    blobs = [os.urandom(n) for n in sizes]
    parts = []
    for i, blob in enumerate(blobs, 1):
        path = src / f"model.bin.part{i}"
        path.write_bytes(blob)
        parts.append(ModelPart(f"fake_part{i}", f"data/model.bin.part{i}", len(blob), _sha(blob), str(path)))
    cfg = b'{"fake": true}\n'
    (src / "config.json").write_bytes(cfg)
    side = ModelPart("fake_part1", "data/config.json", len(cfg), _sha(cfg), str(src / "config.json"))
    whole = b"".join(blobs)
    return SplitModel("fake", len(whole), _sha(whole), tuple(parts), (side,)), whole


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".tmp"))


def test_assembles_once_with_marker_and_never_rehashes(tmp_path: Path, monkeypatch) -> None:
    model, whole = _fake_model(tmp_path)
    root = tmp_path / "cache"
    target = ensure_model_dir(model, root=root)
    assert target == root / "fake" / model.model_bin_sha256[:16]
    assert (target / "model.bin").read_bytes() == whole
    assert (target / "config.json").read_bytes() == b'{"fake": true}\n'
    marker = json.loads((target / MARKER).read_text())
    assert marker["sha256"] == model.model_bin_sha256 and marker["size"] == len(whole)
    assert _leftovers(root) == []

    # A later use trusts the marker and the sizes: nothing is read or hashed again.
    def boom(*a, **k):
        raise AssertionError("re-assembled or re-hashed")

    monkeypatch.setattr(models, "_write_tmp", boom)
    monkeypatch.setattr(models.hashlib, "sha256", boom)
    assert ensure_model_dir(model, root=root) == target


def test_a_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    model, whole = _fake_model(tmp_path)
    root = tmp_path / "cache"
    target = ensure_model_dir(model, root=root)
    with open(target / "model.bin", "r+b") as fh:  # cut short (a disk filled up, say)
        fh.truncate(1000)
    assert ensure_model_dir(model, root=root) == target
    assert (target / "model.bin").read_bytes() == whole


def test_truncated_part_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    model, _ = _fake_model(tmp_path)
    part2 = Path(model.parts[1].path_override or "")
    part2.write_bytes(part2.read_bytes()[:-10])
    root = tmp_path / "cache"
    with pytest.raises(ModelPartError) as err:
        ensure_model_dir(model, root=root)
    msg = str(err.value)
    assert "fake_part2/data/model.bin.part2" in msg and "truncated" in msg
    assert model.parts[1].sha256 in msg and str(model.parts[1].size) in msg
    assert not (model.cache_dir(root) / "model.bin").exists() and _leftovers(root) == []


def test_corrupted_part_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    model, _ = _fake_model(tmp_path)
    part1 = Path(model.parts[0].path_override or "")
    data = bytearray(part1.read_bytes())
    data[5000] ^= 0xFF  # same size, other content
    part1.write_bytes(bytes(data))
    root = tmp_path / "cache"
    with pytest.raises(ModelPartError) as err:
        ensure_model_dir(model, root=root)
    msg = str(err.value)
    assert "fake_part1/data/model.bin.part1" in msg and "corrupted" in msg
    assert f"expected {model.parts[0].sha256}" in msg
    target = model.cache_dir(root)
    assert not (target / "model.bin").exists() and not (target / MARKER).exists()
    assert _leftovers(root) == []


def test_missing_wheel_names_the_package(tmp_path: Path) -> None:
    model = SplitModel(
        "ghost", 1, "0" * 64, (ModelPart("asr_distill_no_such_wheel", "data/x", 1, "0" * 64),), ()
    )
    with pytest.raises(TeacherLoadError, match="asr-distill-no-such-wheel==1.0.0"):
        ensure_model_dir(model, root=tmp_path)


def _first_use(model: SplitModel, root: str, log: str, barrier, out) -> None:
    real = models._assemble

    def counted(m, target):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # widen the window in which the others arrive
        real(m, target)

    models._assemble = counted
    barrier.wait()
    path = ensure_model_dir(model, root=Path(root))
    out.put(_sha((path / "model.bin").read_bytes()))


def test_concurrent_first_use_assembles_once(tmp_path: Path) -> None:
    model, whole = _fake_model(tmp_path)
    ctx = mp.get_context("fork")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    log = tmp_path / "assembled.log"
    procs = [
        ctx.Process(target=_first_use, args=(model, str(tmp_path / "cache"), str(log), barrier, out))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * n
    assert sorted(out.get(timeout=5) for _ in range(n)) == [_sha(whole)] * n
    assert len(log.read_text().split()) == 1  # one process assembled, three waited and found it done


def test_cache_root_comes_from_one_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASR_DISTILL_CACHE", str(tmp_path / "c"))
    assert model_cache_root() == tmp_path / "c" / "models"
    monkeypatch.delenv("ASR_DISTILL_CACHE")
    assert model_cache_root() == Path.home() / ".cache" / "asr_distill" / "models"


def test_shipped_parts_reassemble_to_the_pinned_hash() -> None:
    """The real wheels: assembled once into the project cache (reused by later runs), hashed here once."""
    target = ensure_model_dir(WHISPER_BASE)
    h = hashlib.sha256()
    with open(target / "model.bin", "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    assert (
        h.hexdigest()
        == WHISPER_BASE.model_bin_sha256
        == ("d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9")
    )
    assert (target / "model.bin").stat().st_size == 145_217_532
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (target / name).is_file()
    assert sum(p.size for p in WHISPER_BASE.parts) == WHISPER_BASE.model_bin_size
