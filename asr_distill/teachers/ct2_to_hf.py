"""Convert a CTranslate2 Whisper model directory into a Hugging Face Whisper checkpoint.

The project ships Whisper only in CTranslate2 format (``model.bin`` + ``config.json`` + ``tokenizer.json``
+ ``vocabulary.txt``). vLLM and transformers read Hugging Face checkpoints. This module inverts
CTranslate2's Whisper conversion with numpy alone, so the same weights run on every backend:

* ``model.bin`` (binary version 6): ``u32 version``, a string (``u16`` length with the NUL, bytes, NUL)
  naming the spec, ``u32 revision``, ``u32 count``, then per variable: name, ``u8`` rank, ``u32`` dims,
  ``u8`` dtype id (float32, int8, int16, int32, float16, bfloat16), ``u32`` byte count, raw bytes; then
  ``u32`` alias count and (alias, target) string pairs. Little-endian throughout.
* Layout: self-attention Q/K/V fused into ``linear_0`` (Whisper's K projection has no bias: its slice of
  the fused bias is zero), cross-attention Q in ``linear_0`` and K/V fused in ``linear_1``, the output
  projection in the last linear; ``gamma``/``beta`` are layer-norm weight/bias; ``ffn/linear_0|1`` are
  ``fc1``/``fc2``; the output projection is an alias of the token embedding (tied). Int8 weights carry a
  per-row ``<name>_scale`` (value = int8 / scale) and are dequantised to float32.

Output (written into a temporary directory beside the target and renamed into place, so a partial
checkpoint is never visible): ``model.safetensors`` (written here with numpy: an 8-byte header length,
a JSON header with sorted keys, the raw tensors; bit-exact float16 when the source is float16),
``config.json``, ``generation_config.json``, ``preprocessor_config.json``, ``tokenizer.json`` (the
source's, with Whisper's timestamp tokens from ``vocabulary.txt`` added so every model id decodes),
``tokenizer_config.json``, ``vocab.json``, ``merges.txt``, ``special_tokens_map.json``, and
``ct2_to_hf_manifest.json`` (sha256 of every source and output file, converter version). Every output
byte is a function of the source bytes: a re-run writes identical files.

Run once into the project's cache, never at import time::

    python -m asr_distill.teachers.ct2_to_hf --src DIR [--out DIR]   # default: the cache (see cache_root)
    python -m asr_distill.teachers.ct2_to_hf --verify DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONVERTER_VERSION = 2
MANIFEST = "ct2_to_hf_manifest.json"
SOURCE_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
SUPPORTED_BINARY_VERSIONS = (6,)

# CTranslate2's DataType enum order (include/ctranslate2/types.h); bfloat16 is read as uint16.
_CT2_DTYPES: tuple[np.dtype, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    np.dtype("<u2"),
)
_BFLOAT16 = 5
_SAFETENSORS_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i4"): "I32"}


class ConversionError(RuntimeError):
    """The source is not a CTranslate2 Whisper model this converter understands, or a check failed."""


# -- reading model.bin ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ct2Model:
    spec: str
    revision: int
    binary_version: int
    variables: Mapping[str, np.ndarray]  # aliases resolved (an alias maps to its target's array)
    dtypes: Mapping[str, str]  # variable name -> CTranslate2 dtype name


_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (memory-mapped: the arrays are read-only views of the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    try:
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    data = memoryview(buf)
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ConversionError(f"{path}: truncated at byte {pos}")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return int(value)

    def string() -> str:
        nonlocal pos
        n = take("<H")
        if n == 0 or pos + n > len(data) or data[pos + n - 1] != 0:
            raise ConversionError(f"{path}: malformed string at byte {pos}")
        text = bytes(data[pos : pos + n - 1]).decode("utf-8")
        pos += n
        return text

    version = take("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ConversionError(
            f"{path}: CTranslate2 binary version {version} (this converter reads {SUPPORTED_BINARY_VERSIONS})"
        )
    spec = string()
    revision = take("<I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        type_id = take("<B")
        if type_id >= len(_CT2_DTYPES):
            raise ConversionError(f"{path}: variable {name} has unknown dtype id {type_id}")
        nbytes = take("<I")
        dtype = _CT2_DTYPES[type_id]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != nbytes or pos + nbytes > len(data):
            raise ConversionError(f"{path}: variable {name}: {nbytes} bytes do not hold {shape} {dtype}")
        variables[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).reshape(shape)
        dtypes[name] = _DTYPE_NAMES[type_id]
        pos += nbytes
    for _ in range(take("<I")):
        alias, target = string(), string()
        if target not in variables:
            raise ConversionError(f"{path}: alias {alias} points to missing {target}")
        variables[alias] = variables[target]
        dtypes[alias] = dtypes[target]
    if pos != len(data):
        raise ConversionError(f"{path}: {len(data) - pos} trailing bytes after the variables")
    return Ct2Model(spec, revision, version, variables, dtypes)


def _as_float(model: Ct2Model, name: str) -> np.ndarray:
    """A weight as float16/float32 (int8/int16 dequantised with ``<name>_scale``; bfloat16 widened)."""
    try:
        value = model.variables[name]
    except KeyError:
        raise ConversionError(f"the model has no variable {name}") from None
    kind = model.dtypes[name]
    if kind in ("float16", "float32"):
        return value
    if kind == "bfloat16":
        return (value.astype(np.uint32) << 16).view(np.float32)
    if kind in ("int8", "int16"):
        scale = model.variables.get(f"{name}_scale")
        if scale is None:
            raise ConversionError(f"{name} is {kind} without a {name}_scale")
        scale = np.asarray(scale, dtype=np.float32)
        scale = scale.reshape(-1, *([1] * (value.ndim - 1))) if scale.ndim else scale
        return value.astype(np.float32) / scale
    raise ConversionError(f"{name}: unexpected dtype {kind} for a weight")


def _scalar(model: Ct2Model, name: str) -> int:
    value = model.variables.get(name)
    if value is None or value.size != 1:
        raise ConversionError(f"the model has no scalar {name}")
    return int(value.reshape(()))


def _layer_count(model: Ct2Model, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    if n == 0:
        raise ConversionError(f"no {stack} layers found")
    return n


# -- the weight mapping ------------------------------------------------------------------------------
def _split_rows(value: np.ndarray, parts: int, what: str) -> list[np.ndarray]:
    if value.shape[0] % parts:
        raise ConversionError(f"{what}: {value.shape[0]} rows do not split into {parts}")
    return list(np.split(value, parts, axis=0))


def _check_zero_bias(bias: np.ndarray, what: str) -> None:
    if np.any(bias != 0):
        raise ConversionError(f"{what}: the K projection bias is not zero; this is not Whisper's layout")


def _attention(model: Ct2Model, src: str, dst: str, *, cross: bool) -> Iterator[tuple[str, np.ndarray]]:
    w = lambda n: _as_float(model, f"{src}/{n}")  # noqa: E731
    if cross:
        q_w, q_b = w("linear_0/weight"), w("linear_0/bias")
        k_w, v_w = _split_rows(w("linear_1/weight"), 2, f"{src}/linear_1/weight")
        k_b, v_b = _split_rows(w("linear_1/bias"), 2, f"{src}/linear_1/bias")
    else:
        q_w, k_w, v_w = _split_rows(w("linear_0/weight"), 3, f"{src}/linear_0/weight")
        q_b, k_b, v_b = _split_rows(w("linear_0/bias"), 3, f"{src}/linear_0/bias")
    _check_zero_bias(k_b, src)
    out = "linear_1" if not cross else "linear_2"
    yield f"{dst}.q_proj.weight", q_w
    yield f"{dst}.q_proj.bias", q_b
    yield f"{dst}.k_proj.weight", k_w
    yield f"{dst}.v_proj.weight", v_w
    yield f"{dst}.v_proj.bias", v_b
    yield f"{dst}.out_proj.weight", w(f"{out}/weight")
    yield f"{dst}.out_proj.bias", w(f"{out}/bias")


def _layer_norm(model: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", _as_float(model, f"{src}/gamma")
    yield f"{dst}.bias", _as_float(model, f"{src}/beta")


def _linear(model: Ct2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", _as_float(model, f"{src}/weight")
    yield f"{dst}.bias", _as_float(model, f"{src}/bias")


def whisper_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """Hugging Face ``WhisperForConditionalGeneration`` tensors (``proj_out`` tied, so not stored)."""
    if model.spec != "WhisperSpec":
        raise ConversionError(f"not a Whisper model: spec {model.spec!r}")
    tied = model.variables.get("decoder/projection/weight")
    if tied is not None and tied is not model.variables["decoder/embeddings/weight"]:
        raise ConversionError("the output projection is not tied to the token embedding")
    out: dict[str, np.ndarray] = {}

    def put(items: Iterator[tuple[str, np.ndarray]]) -> None:
        for k, v in items:
            out[k] = v

    e, d = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        put(_linear(model, f"encoder/{conv}", f"{e}.{conv}"))
    out[f"{e}.embed_positions.weight"] = _as_float(model, "encoder/position_encodings/encodings")
    for i in range(_layer_count(model, "encoder")):
        s, t = f"encoder/layer_{i}", f"{e}.layers.{i}"
        put(_attention(model, f"{s}/self_attention", f"{t}.self_attn", cross=False))
        put(_layer_norm(model, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm"))
        put(_linear(model, f"{s}/ffn/linear_0", f"{t}.fc1"))
        put(_linear(model, f"{s}/ffn/linear_1", f"{t}.fc2"))
        put(_layer_norm(model, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm"))
    put(_layer_norm(model, "encoder/layer_norm", f"{e}.layer_norm"))
    out[f"{d}.embed_tokens.weight"] = _as_float(model, "decoder/embeddings/weight")
    out[f"{d}.embed_positions.weight"] = _as_float(model, "decoder/position_encodings/encodings")
    for i in range(_layer_count(model, "decoder")):
        s, t = f"decoder/layer_{i}", f"{d}.layers.{i}"
        put(_attention(model, f"{s}/self_attention", f"{t}.self_attn", cross=False))
        put(_layer_norm(model, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm"))
        put(_attention(model, f"{s}/attention", f"{t}.encoder_attn", cross=True))
        put(_layer_norm(model, f"{s}/attention/layer_norm", f"{t}.encoder_attn_layer_norm"))
        put(_linear(model, f"{s}/ffn/linear_0", f"{t}.fc1"))
        put(_linear(model, f"{s}/ffn/linear_1", f"{t}.fc2"))
        put(_layer_norm(model, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm"))
    put(_layer_norm(model, "decoder/layer_norm", f"{d}.layer_norm"))
    # one float dtype for the whole checkpoint: float16 stays bit-exact; anything dequantised is float32
    dtype = np.float16 if all(v.dtype == np.float16 for v in out.values()) else np.float32
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in out.items()}


# -- safetensors (numpy) ------------------------------------------------------------------------------
def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """The safetensors layout: u64 header size, JSON header (sorted, space-padded to 8 bytes), data."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    names = sorted(tensors)
    for name in names:
        arr = tensors[name]
        kind = _SAFETENSORS_DTYPES.get(arr.dtype.newbyteorder("<"))
        if kind is None:
            raise ConversionError(f"{name}: no safetensors dtype for {arr.dtype}")
        header[name] = {
            "dtype": kind,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name in names:
            fh.write(
                np.ascontiguousarray(tensors[name]).astype(tensors[name].dtype.newbyteorder("<")).tobytes()
            )
        fh.flush()
        os.fsync(fh.fileno())


# -- configs and tokenizer ---------------------------------------------------------------------------
def _token_id(vocab: Mapping[str, int], token: str) -> int:
    if token not in vocab:
        raise ConversionError(f"the tokenizer has no {token}")
    return vocab[token]


def _tokenizer_files(src: Path, vocab_size: int) -> tuple[dict[str, Any], list[str]]:
    """The source ``tokenizer.json`` with the timestamp tokens added, checked against ``vocabulary.txt``."""
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    ids = (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if ids and ids[-1] == "":
        ids.pop()
    if len(ids) != vocab_size:
        raise ConversionError(f"vocabulary.txt has {len(ids)} tokens, the model {vocab_size}")
    added = {int(t["id"]): t for t in tok.get("added_tokens", [])}
    bpe = tok["model"]["vocab"]
    known = {int(i): s for s, i in bpe.items()} | {i: t["content"] for i, t in added.items()}
    for i, s in known.items():
        if i < vocab_size and ids[i] != s:
            raise ConversionError(
                f"tokenizer.json and vocabulary.txt disagree on id {i}: {s!r} vs {ids[i]!r}"
            )
    for i in range(vocab_size):
        if i not in known:  # Whisper's timestamp tokens <|0.00|>..<|30.00|>: present in the model only
            added[i] = {
                "id": i,
                "content": ids[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
    tok["added_tokens"] = [added[i] for i in sorted(added)]
    return tok, ids


def _configs(model: Ct2Model, ct2_config: Mapping[str, Any], vocab: Mapping[str, int]) -> dict[str, Any]:
    emb = model.variables["decoder/embeddings/weight"]
    conv1 = model.variables["encoder/conv1/weight"]
    d_model = int(emb.shape[1])
    vocab_size = int(emb.shape[0])
    enc_layers, dec_layers = _layer_count(model, "encoder"), _layer_count(model, "decoder")
    ffn = int(model.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0])
    eot = _token_id(vocab, "<|endoftext|>")
    sot = _token_id(vocab, "<|startoftranscript|>")
    no_ts = _token_id(vocab, "<|notimestamps|>")
    multilingual = vocab_size >= 51865
    lang_ids = [int(i) for i in ct2_config.get("lang_ids", [])] if multilingual else []
    id_to_token = {i: s for s, i in vocab.items()}
    suppress = [int(i) for i in ct2_config.get("suppress_ids", [])]
    begin_suppress = [int(i) for i in ct2_config.get("suppress_ids_begin", [eot])]
    heads = [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": d_model,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": _scalar(model, "encoder/num_heads"),
        "decoder_attention_heads": _scalar(model, "decoder/num_heads"),
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": int(model.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "num_hidden_layers": enc_layers,
        "num_mel_bins": int(conv1.shape[1]),
        "max_source_positions": int(model.variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(model.variables["decoder/position_encodings/encodings"].shape[0]),
        "vocab_size": vocab_size,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "is_encoder_decoder": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "torch_dtype": "float16"
        if model.variables["decoder/embeddings/weight"].dtype == np.float16
        else "float32",
    }
    generation = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "max_length": config["max_target_positions"],
        "begin_suppress_tokens": begin_suppress,
        "suppress_tokens": suppress,
        "no_timestamps_token_id": no_ts,
        "alignment_heads": heads,
        "is_multilingual": multilingual,
        "return_timestamps": False,
    }
    if multilingual:
        generation["lang_to_id"] = {id_to_token[i]: i for i in lang_ids}
        generation["task_to_id"] = {
            "transcribe": _token_id(vocab, "<|transcribe|>"),
            "translate": _token_id(vocab, "<|translate|>"),
        }
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": config["num_mel_bins"],
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    return {"config": config, "generation": generation, "preprocessor": preprocessor}


def _tokenizer_config(tok: Mapping[str, Any]) -> dict[str, Any]:
    decoder = {
        str(t["id"]): {
            k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for t in tok["added_tokens"]
    }
    return {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        "add_prefix_space": False,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,  # transformers 5 ignores True for BPE (with a warning)
        "errors": "replace",
        "model_max_length": 1024,
        "added_tokens_decoder": decoder,
    }


# -- hashing, manifest, atomic write -----------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_digest(src: str | Path) -> dict[str, str]:
    src = Path(src)
    missing = [n for n in SOURCE_FILES if not (src / n).is_file()]
    if missing:
        raise ConversionError(f"{src} is not a CTranslate2 Whisper directory: missing {', '.join(missing)}")
    return {n: sha256_file(src / n) for n in SOURCE_FILES}


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_checkpoint(src: Path, out: Path, sources: Mapping[str, str]) -> None:
    model = read_ct2_model(src / "model.bin")
    tensors = whisper_state_dict(model)
    vocab_size = int(model.variables["decoder/embeddings/weight"].shape[0])
    tok, ids = _tokenizer_files(src, vocab_size)
    vocab = {s: i for i, s in enumerate(ids)}
    cfgs = _configs(model, json.loads((src / "config.json").read_text(encoding="utf-8")), vocab)
    metadata = {"format": "pt", "converted_by": f"asr_distill.teachers.ct2_to_hf v{CONVERTER_VERSION}"}
    metadata["source_model_bin_sha256"] = sources["model.bin"]
    write_safetensors(out / "model.safetensors", tensors, metadata)
    _dump_json(out / "config.json", cfgs["config"])
    _dump_json(out / "generation_config.json", cfgs["generation"])
    _dump_json(out / "preprocessor_config.json", cfgs["preprocessor"])
    _dump_json(out / "tokenizer.json", tok)
    _dump_json(out / "tokenizer_config.json", _tokenizer_config(tok))
    _dump_json(
        out / "special_tokens_map.json",
        {k: "<|endoftext|>" for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
    )
    _dump_json(out / "vocab.json", dict(sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])))
    merges = tok["model"]["merges"]
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")


def output_digest(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST}


def verify(out: str | Path) -> dict[str, Any]:
    """Check every file of a converted checkpoint against its manifest; returns the manifest."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{out}: no readable {MANIFEST}: {exc}") from exc
    actual = output_digest(out)
    if actual != manifest.get("files"):
        bad = sorted(set(actual.items()) ^ set(manifest.get("files", {}).items()))
        raise ConversionError(f"{out}: files do not match the manifest: {sorted({n for n, _ in bad})}")
    return manifest


def cache_root() -> Path:
    """``$ASR_DISTILL_CACHE/hf`` or ``~/.cache/asr_distill/hf``: beside the model cache, same setting."""
    from asr_distill.teachers.models import model_cache_root

    return model_cache_root().parent / "hf"


def default_out_dir(src: str | Path, sources: Mapping[str, str] | None = None) -> Path:
    sources = sources or source_digest(src)
    return cache_root() / f"whisper-ct2-{sources['model.bin'][:16]}-v{CONVERTER_VERSION}"


def convert(
    src: str | Path, out: str | Path | None = None, *, expected_model_bin_sha256: str | None = None
) -> Path:
    """Convert ``src`` into ``out`` (default: the cache) unless a verified conversion of it is there.

    Atomic: written into a temporary directory beside ``out`` and renamed into place.
    """
    src = Path(src)
    sources = source_digest(src)
    if expected_model_bin_sha256 and sources["model.bin"] != expected_model_bin_sha256.lower():
        raise ConversionError(
            f"{src}/model.bin sha256 {sources['model.bin']} != expected {expected_model_bin_sha256}"
        )
    out = Path(out) if out is not None else default_out_dir(src, sources)
    if out.exists():
        try:
            manifest = verify(out)
        except ConversionError:
            manifest = None
        if (
            manifest
            and manifest.get("sources") == sources
            and manifest.get("converter_version") == CONVERTER_VERSION
        ):
            return out
        if manifest is None and any(out.iterdir()):
            raise ConversionError(f"{out} exists and is not a verified conversion: remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_checkpoint(src, tmp, sources)
        manifest = {"converter_version": CONVERTER_VERSION, "sources": sources, "files": output_digest(tmp)}
        _dump_json(tmp / MANIFEST, manifest)
        tmp.chmod(0o755)
        if out.exists():  # a stale conversion (other source or converter version)
            stale = out.with_name(f".{out.name}.stale-{os.getpid()}")
            out.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:
            if out.exists():  # a concurrent run won: use its result if it verifies
                verify(out)
                return out
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m asr_distill.teachers.ct2_to_hf", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--src", help="CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json, ...)"
    )
    ap.add_argument("--out", help="output directory (default: a folder in the project's cache)")
    ap.add_argument("--expected-sha256", help="sha256 of the source model.bin")
    ap.add_argument("--verify", metavar="DIR", help="check a converted checkpoint against its manifest")
    args = ap.parse_args(argv)
    try:
        if args.verify:
            m = verify(args.verify)
            print(f"ok: {len(m['files'])} files match {Path(args.verify) / MANIFEST}")
            return 0
        if not args.src:
            ap.error("--src is required (or --verify DIR)")
        out = convert(args.src, args.out, expected_model_bin_sha256=args.expected_sha256)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
