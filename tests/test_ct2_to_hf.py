"""The CTranslate2 -> Hugging Face Whisper converter, on the shipped tiny.en model.

Without torch: the conversion is checked against ``model.bin`` itself (re-fusing the written tensors gives
back CTranslate2's variables bit for bit), it is deterministic, atomic, hash-checked and refuses bad input.
With torch + transformers importable (the separate vLLM environment, see ``make test-vllm``): transformers'
Whisper on the converted checkpoint transcribes speech with the same text as faster-whisper on the original.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from asr_distill.teachers import ct2_to_hf as conv
from asr_distill.teachers.faster_whisper import bundled_model_path


@pytest.fixture(scope="module")
def src() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv.convert(src, tmp_path_factory.mktemp("hf") / "tiny-en")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """An independent reader (the format is documented: u64 header size, JSON header, data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    kinds = {"F16": np.float16, "F32": np.float32}
    out = {}
    for name, meta in header.items():
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=kinds[meta["dtype"]]).reshape(
            meta["shape"]
        )
    return out


def test_reader_parses_the_shipped_model(src: Path) -> None:
    m = conv.read_ct2_model(src)
    assert (m.spec, m.binary_version) == ("WhisperSpec", 6)
    assert m.variables["decoder/projection/weight"] is m.variables["decoder/embeddings/weight"]  # tied alias
    assert m.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert m.dtypes["encoder/layer_0/self_attention/linear_0/weight"] == "float16"


def test_written_tensors_refuse_into_the_original_variables(src: Path, converted: Path) -> None:
    """The inversion is exact: fusing the Hugging Face tensors back gives model.bin's arrays bit for bit."""
    m = conv.read_ct2_model(src)
    t = read_safetensors(converted / "model.safetensors")
    assert "proj_out.weight" not in t  # tied to the embedding, as transformers saves Whisper
    zeros = np.zeros(384, np.float16)
    for i in range(4):
        for stack, attn in (("encoder", "self_attention"), ("decoder", "self_attention")):
            p = f"model.{stack}.layers.{i}.self_attn"
            fused_w = np.concatenate(
                [t[f"{p}.q_proj.weight"], t[f"{p}.k_proj.weight"], t[f"{p}.v_proj.weight"]]
            )
            fused_b = np.concatenate([t[f"{p}.q_proj.bias"], zeros, t[f"{p}.v_proj.bias"]])
            s = f"{stack}/layer_{i}/{attn}"
            assert np.array_equal(fused_w, m.variables[f"{s}/linear_0/weight"])
            assert np.array_equal(fused_b, m.variables[f"{s}/linear_0/bias"])
            assert np.array_equal(t[f"{p}.out_proj.weight"], m.variables[f"{s}/linear_1/weight"])
        p, s = f"model.decoder.layers.{i}.encoder_attn", f"decoder/layer_{i}/attention"
        assert np.array_equal(t[f"{p}.q_proj.weight"], m.variables[f"{s}/linear_0/weight"])
        kv = np.concatenate([t[f"{p}.k_proj.weight"], t[f"{p}.v_proj.weight"]])
        assert np.array_equal(kv, m.variables[f"{s}/linear_1/weight"])
        assert np.array_equal(t[f"{p}.out_proj.bias"], m.variables[f"{s}/linear_2/bias"])
        assert np.array_equal(
            t[f"model.decoder.layers.{i}.fc2.weight"], m.variables[f"decoder/layer_{i}/ffn/linear_1/weight"]
        )
    assert np.array_equal(t["model.decoder.embed_tokens.weight"], m.variables["decoder/embeddings/weight"])
    assert np.array_equal(t["model.encoder.conv1.weight"], m.variables["encoder/conv1/weight"])
    n_ct2 = sum(v.size for k, v in m.variables.items() if v.ndim and k != "decoder/projection/weight")
    zero_k_bias = 4 * 2 * 384 + 4 * 384  # self-attention (both stacks) + cross-attention K biases
    assert sum(v.size for v in t.values()) == n_ct2 - zero_k_bias


def test_configs_describe_tiny_en(converted: Path) -> None:
    cfg = json.loads((converted / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["vocab_size"]) == (
        384,
        4,
        4,
        51864,
    )
    assert (cfg["decoder_start_token_id"], cfg["eos_token_id"], cfg["num_mel_bins"]) == (50257, 50256, 80)
    gen = json.loads((converted / "generation_config.json").read_text())
    assert gen["is_multilingual"] is False and gen["no_timestamps_token_id"] == 50362
    tok = json.loads((converted / "tokenizer.json").read_text())
    ids = {t["id"]: t["content"] for t in tok["added_tokens"]}
    assert ids[50363] == "<|0.00|>" and ids[51863] == "<|30.00|>" and len(ids) == 51864 - 50256


def test_conversion_is_deterministic_verified_and_not_redone(
    src: Path, converted: Path, tmp_path: Path
) -> None:
    manifest = conv.verify(converted)
    assert manifest["sources"]["model.bin"].startswith("1a5afae0")
    again = conv.convert(src, tmp_path / "again")
    assert conv.output_digest(again) == conv.output_digest(converted)
    before = (again / "model.safetensors").stat().st_mtime_ns
    assert conv.convert(src, again) == again  # verified and current: not rewritten
    assert (again / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_tampered_output_is_detected_and_not_reused(src: Path, converted: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(converted, out)
    with open(out / "config.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(conv.ConversionError, match=r"config\.json"):
        conv.verify(out)
    with pytest.raises(conv.ConversionError, match="not a verified conversion"):
        conv.convert(src, out)


def test_bad_sources_fail_clearly(src: Path, tmp_path: Path) -> None:
    with pytest.raises(conv.ConversionError, match="missing model.bin"):
        conv.convert(tmp_path, tmp_path / "out")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = (bad / "model.bin").read_bytes()
    (bad / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(conv.ConversionError, match="bytes do not hold|truncated"):
        conv.convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (bad / "model.bin").write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(conv.ConversionError, match="binary version 3"):
        conv.read_ct2_model(bad)
    with pytest.raises(conv.ConversionError, match="expected"):
        conv.convert(src, tmp_path / "out", expected_model_bin_sha256="0" * 64)


def test_cli(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert conv.main(["--src", str(src), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o")
    assert conv.main(["--verify", str(tmp_path / "o")]) == 0
    assert conv.main(["--verify", str(tmp_path)]) == 2


# -- with transformers (the separate vLLM environment) -----------------------------------------------
HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


@pytest.mark.skipif(
    not HAVE_TORCH, reason="torch and transformers are not installed (make test-vllm has them)"
)
def test_transformers_transcribes_like_faster_whisper(src: Path, converted: Path) -> None:
    from asr_distill.hf_parity import compare
    from tests.labels_material import SENTENCES, espeak

    clips = [(f"s{i}", espeak(text)) for i, text in enumerate(SENTENCES)]
    report = compare(src, converted, clips)
    assert report.agreement >= 0.95, report.mismatches
