"""English-only Whisper (``*.en``) through the vLLM backend: no language or task token in the prompt.

Found on the real engine (tests/test_vllm_engine.py): tiny.en given
``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` ends the transcript at once (empty text for
every clip); ``<|startoftranscript|><|notimestamps|>`` is what it was trained on and what faster-whisper sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from asr_distill.teachers.vllm_backend import (
    VllmConfig,
    VllmTeacher,
    build_prompt,
    whisper_decoder_prompt,
    whisper_is_multilingual,
)


class Tok:
    eos_token_id = 50256

    def convert_tokens_to_ids(self, token: str) -> int:
        return 50259 + abs(hash(token)) % 99


class Engine:
    def __init__(self) -> None:
        self.prompts: list[dict] = []

    def get_tokenizer(self) -> Tok:
        return Tok()

    def generate(self, prompts, params=None, use_tqdm=True):
        self.prompts.extend(prompts)
        done = SimpleNamespace(text=" Hello.", token_ids=[15496, 13, 50256], cumulative_logprob=-0.3)
        done.logprobs, done.finish_reason = None, "stop"
        return [SimpleNamespace(outputs=[done]) for _ in prompts]


def model_dir(tmp_path: Path, vocab_size: int) -> str:
    d = tmp_path / f"whisper-{vocab_size}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "whisper", "vocab_size": vocab_size}))
    return str(d)


def test_multilingual_is_told_by_vocabulary_or_name(tmp_path: Path) -> None:
    assert whisper_is_multilingual(model_dir(tmp_path, 51864)) is False
    assert whisper_is_multilingual(model_dir(tmp_path, 51865)) is True
    assert whisper_is_multilingual("openai/whisper-tiny.en") is False
    assert whisper_is_multilingual("openai/whisper-large-v3") is True


def test_english_only_prompt(tmp_path: Path) -> None:
    assert whisper_decoder_prompt("en", multilingual=False) == "<|startoftranscript|><|notimestamps|>"
    assert whisper_decoder_prompt(None, multilingual=False) == "<|startoftranscript|><|notimestamps|>"
    with pytest.raises(ValueError, match="English-only"):
        whisper_decoder_prompt("ja", multilingual=False)
    p = build_prompt("whisper", np.zeros(8, np.float32), language="en", multilingual=False)
    assert p["decoder_prompt"]["prompt"] == "<|startoftranscript|><|notimestamps|>"


@pytest.mark.parametrize("language", ["en", None])
def test_teacher_sends_the_english_only_prompt(tmp_path: Path, language: str | None) -> None:
    engine = Engine()
    t = VllmTeacher(VllmConfig(model=model_dir(tmp_path, 51864), language=language), engine=engine)
    (r,) = t.transcribe([("k", np.full(16_000, 0.01, np.float32))])
    assert r.ok and r.text == "Hello." and r.language == "en" and r.num_tokens == 2
    assert [p["decoder_prompt"]["prompt"] for p in engine.prompts] == [
        "<|startoftranscript|><|notimestamps|>"
    ]
    assert t.fingerprint_fields()["prompt"] == "<|startoftranscript|><|notimestamps|>"
    assert t.fingerprint_fields()["decoding"]["detect_language"] is False


def test_english_only_model_refuses_another_language(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="English-only"):
        VllmTeacher(VllmConfig(model=model_dir(tmp_path, 51864), language="fr"), engine=Engine())


def test_multilingual_prompt_is_unchanged(tmp_path: Path) -> None:
    engine = Engine()
    t = VllmTeacher(VllmConfig(model=model_dir(tmp_path, 51865), language="en"), engine=engine)
    t.transcribe([("k", np.full(16_000, 0.01, np.float32))])
    assert engine.prompts[0]["decoder_prompt"]["prompt"] == (
        "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    )
