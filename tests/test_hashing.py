"""The hashing owner (BLAKE3), its verify command, and the clean stage's one-read source hash."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from blake3 import blake3

from asr_distill import checksum, hashing
from asr_distill.stages.clean import CleanConfig, analyze_clip
from asr_distill.stages.clean import core as clean_core
from asr_distill.storage import LocalStorage
from tests.helpers import REPO_ROOT

# BLAKE3's published test vectors (BLAKE3-team/BLAKE3 test_vectors/test_vectors.json): input of
# ``input_len`` bytes 0, 1, ..., 250, 0, 1, ...; the first 32 bytes of the extended output.
VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2049: "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
    4097: "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995",
    7169: "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
}


def _vector_input(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@pytest.mark.parametrize("n", sorted(VECTORS))
def test_known_blake3_vectors(n: int, tmp_path: Path) -> None:
    data = _vector_input(n)
    expected = VECTORS[n]
    assert len(expected) == hashing.HEX_CHARS
    assert hashing.bytes_hex(data) == expected
    path = tmp_path / "v.bin"
    path.write_bytes(data)
    assert hashing.path_hex(path) == expected
    assert hashing.file_hex(io.BytesIO(data)) == expected
    assert hashing.object_hex(LocalStorage(tmp_path), "v.bin") == expected


def test_pcm_hash_is_the_same_however_the_signal_is_cut() -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32767, size=100_003, dtype=np.int16)
    whole = hashing.pcm_hex(pcm)
    assert whole == blake3(pcm.astype("<i2").tobytes()).hexdigest()
    for block in (1, 7, 4096, 65_536):
        h = hashing.PcmHasher()
        for i in range(0, len(pcm), block):
            h.update(pcm[i : i + block])
        assert h.hexdigest() == whole and h.samples == len(pcm)
    with pytest.raises(TypeError, match="int16"):
        hashing.PcmHasher().update(pcm.astype(np.float32))


def _read_pattern(reader: io.RawIOBase | io.BufferedReader, size: int, ops: list[tuple[str, int]]) -> None:
    for op, arg in ops:
        if op == "seek":
            reader.seek(arg)
        elif op == "seek_end":
            reader.seek(arg, os.SEEK_END)
        else:
            reader.read(arg)


@pytest.mark.parametrize(
    "ops",
    [
        [("read", 1 << 30)],  # straight through
        [("read", 12), ("seek", 0), ("read", 100), ("read", 1 << 30)],  # header re-read
        [("seek_end", -500), ("read", 500), ("seek", 0), ("read", 1 << 30)],  # trailer first (m4a moov)
        [("read", 1000), ("seek", 50_000), ("read", 2000)],  # skips ahead, never reads the end
        [("seek", 123), ("read", 10)],  # nothing hashed by the consumer
        [],
    ],
)
@pytest.mark.parametrize("buffered", [False, True])
def test_hashing_reader_with_seeks_equals_the_whole_file(
    tmp_path: Path, ops: list[tuple[str, int]], buffered: bool
) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as raw:
        reader = hashing.HashingReader(raw)
        consumer = reader.buffered(4096) if buffered else reader
        _read_pattern(consumer, len(data), ops)  # type: ignore[arg-type]
        pos = reader.tell()
        assert reader.finish() == blake3(data).hexdigest() == reader.finish()
        assert reader.tell() == pos  # the consumer's position is untouched
    if ops == [("read", 1 << 30)]:
        assert reader.finish_bytes == 0 and reader.raw_bytes == len(data)


def test_hashing_reader_is_what_soundfile_and_pyav_read(tmp_path: Path) -> None:
    import av

    x = (0.1 * np.sin(np.arange(48_000) / 10)).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, 16_000)
    data = (tmp_path / "a.flac").read_bytes()
    with open(tmp_path / "a.flac", "rb", buffering=0) as raw:
        reader = hashing.HashingReader(raw)
        with sf.SoundFile(reader) as f:
            assert len(f.read(dtype="float32")) == len(x)
        assert reader.finish() == blake3(data).hexdigest()
    with open(tmp_path / "a.flac", "rb", buffering=0) as raw:
        reader = hashing.HashingReader(raw)
        with av.open(reader) as c:
            assert sum(f.samples for f in c.decode(audio=0)) == len(x)
        assert reader.finish() == blake3(data).hexdigest()


# -- the clean stage: source_blake3 from the decoder's own read ------------------------------------------
class _Recording(hashing.HashingReader):
    made: list[_Recording] = []

    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        _Recording.made.append(self)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_clean_source_hash_is_the_files_blake3_from_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    rate = 22_050
    x = (0.2 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)).astype(np.float32)
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III"}[fmt]
    sf.write(tmp_path / f"c.{fmt}", x, rate, subtype=subtype)
    data = (tmp_path / f"c.{fmt}").read_bytes()
    _Recording.made = []
    monkeypatch.setattr(clean_core, "HashingReader", _Recording)

    def second_read(*_: Any) -> str:
        raise AssertionError("the source was hashed by a second read")

    monkeypatch.setattr(hashing, "path_hex", second_read)
    monkeypatch.setattr(hashing, "object_hex", second_read)
    row = {"partition": "p", "key": f"c.{fmt}", "extension": fmt}
    out = analyze_clip(row, LocalStorage(tmp_path), CleanConfig())
    assert out["decode_error"] is None and out["num_samples"] > 0
    assert out["source_blake3"] == blake3(data).hexdigest()
    [reader] = _Recording.made
    # the decoder read every byte (nothing left for finish()); beyond that only re-reads of the local
    # copy after the decoder's seeks (headers, the length probe), at most a few read-buffer lengths
    assert reader.finish_bytes == 0
    assert len(data) <= reader.raw_bytes <= len(data) + 4 * hashing.DECODER_BUFFER


def test_clean_hashes_the_source_even_when_it_is_not_decoded(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file" * 100)
    store = LocalStorage(tmp_path)
    out = analyze_clip({"partition": "p", "key": "bad.wav", "extension": "wav"}, store, CleanConfig())
    assert out["decode_error"] is not None
    assert out["source_blake3"] == blake3((tmp_path / "bad.wav").read_bytes()).hexdigest()
    probed = {"partition": "p", "key": "bad.wav", "extension": "wav", "probe_error": "unrecognised_format"}
    assert analyze_clip(probed, store, CleanConfig())["source_blake3"] == out["source_blake3"]


# -- the verify command ----------------------------------------------------------------------------------
def _run(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "asr_distill.checksum", *args],
        cwd=cwd,
        env=env,
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_checksum_command_prints_b3sum_lines_and_checks_them(tmp_path: Path) -> None:
    files = {"a": b"hi\n", "sub/b.bin": os.urandom(3 << 20), "we ird\\name": b"x", "x\nx": b"q"}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    res = _run(*files, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    expected = [checksum.format_line(blake3(data).hexdigest(), name) for name, data in files.items()]
    assert (
        res.stdout.splitlines()
        == [
            f"{blake3(b'hi' + bytes([10])).hexdigest()}  a",
            f"{blake3(files['sub/b.bin']).hexdigest()}  sub/b.bin",
            "\\" + f"{blake3(b'x').hexdigest()}  we ird\\\\name",
            "\\" + f"{blake3(b'q').hexdigest()}  x\\nx",
        ]
        == expected
    )
    (tmp_path / "list.b3").write_text(res.stdout)
    ok = _run("--check", "list.b3", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["a: OK", "sub/b.bin: OK", "\\we ird\\\\name: OK", "\\x\\nx: OK"]
    (tmp_path / "sub/b.bin").write_bytes(b"changed")
    (tmp_path / "a").unlink()
    bad = _run("--check", "list.b3", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[:2] == ["a: FAILED (No such file or directory)", "sub/b.bin: FAILED"]
    assert "did NOT match" in bad.stderr
    stdin = _run("-", cwd=tmp_path, stdin=b"hi\n")
    assert stdin.stdout == f"{blake3(b'hi' + bytes([10])).hexdigest()}  -\n"
    if shutil.which("b3sum"):  # the reference tool, where installed, prints the same lines
        ref = subprocess.run(["b3sum", "x\nx", "we ird\\name"], cwd=tmp_path, capture_output=True, text=True)
        assert ref.stdout == _run("x\nx", "we ird\\name", cwd=tmp_path).stdout


def test_checksum_parse_rejects_malformed_lines() -> None:
    assert checksum.parse_line("A" * 64 + "  p") == ("a" * 64, "p")
    for line in ("nothex  p", "a" * 63 + "  p", "\\" + "a" * 64 + "  bad\\tescape", "a" * 64 + "  p\ufffd"):
        with pytest.raises(ValueError):
            checksum.parse_line(line)


def test_checksum_command_checks_a_partitions_shards(tmp_path: Path) -> None:
    import pyarrow as pa

    from asr_distill.lake import shard_layout
    from asr_distill.tableio import write_table

    lake = LocalStorage(tmp_path)
    sl = shard_layout("p")
    keys = [sl.shard_key("bucket-00.0-05.0", i) for i in range(2)]
    blobs = [os.urandom(5000), os.urandom(7000)]
    for key, blob in zip(keys, blobs, strict=True):
        lake.write_bytes(key, blob)
    table = pa.table(
        {
            "shard_key": keys,
            "blake3": [blake3(b).hexdigest() for b in blobs],
            "size": [len(b) for b in blobs],
        }
    )
    write_table(lake, sl.shards_key, table)
    ok = _run("--shards", str(tmp_path), "p", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert [line.rsplit(": ", 1)[1] for line in ok.stdout.splitlines()] == ["OK", "OK"]
    lake.write_bytes(keys[1], b"tampered")
    bad = _run("--shards", str(tmp_path), "p", "--quiet", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout.splitlines() == [f"{lake.url(keys[1])}: FAILED"]


def test_tables_from_before_blake3_fail_with_a_clear_message() -> None:
    import pyarrow as pa

    from asr_distill.stages.segment.core import _tasks
    from asr_distill.stages.shards import ShardConfig
    from asr_distill.stages.shards.plan import ShardPlanError, plan_partition

    old = pa.table(
        {"key": ["p/a.wav"], "partition": ["p"], "num_samples": [16_000], "pcm_sha256": ["0" * 64]}
    )
    with pytest.raises(ShardPlanError, match="predates BLAKE3"):
        plan_partition(old, "p", ShardConfig())
    with pytest.raises(ShardPlanError, match="predates BLAKE3"):
        plan_partition(old.to_pylist(), "p", ShardConfig())
    with pytest.raises(ValueError, match="predates BLAKE3"):  # the check comes before the fingerprint is used
        list(_tasks(old.to_pylist(), "p", None, None, {}))  # type: ignore[arg-type]


def test_other_partitions_tables_from_before_blake3_are_skipped_and_named(tmp_path: Path) -> None:
    import pyarrow as pa

    from asr_distill.stages.clean import load_known_hashes
    from asr_distill.tableio import write_table

    lake = LocalStorage(tmp_path)
    write_table(
        lake, "old/kept.parquet", pa.table({"partition": ["a"], "key": ["a/x.wav"], "pcm_sha256": ["1" * 64]})
    )
    write_table(
        lake, "new/kept.parquet", pa.table({"partition": ["b"], "key": ["b/y.wav"], "pcm_blake3": ["2" * 64]})
    )
    stale: list[str] = []
    known = load_known_hashes(lake, ["old/kept.parquet", "new/kept.parquet"], stale)
    assert known == {"2" * 64: ("b", "b/y.wav")} and stale == ["old/kept.parquet"]
