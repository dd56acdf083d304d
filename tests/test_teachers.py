"""Teachers: the faster-whisper default on real synthesized speech, and the vLLM backend at the
``LLM.generate`` boundary (a fake engine: vLLM cannot run on these machines)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf

from asr_distill.stages.labels.quality import normalize_text
from asr_distill.teachers import (
    TINY_EN_MODEL_BIN_SHA256,
    FasterWhisperConfig,
    ModelHashMismatchError,
    TeacherLoadError,
    VllmConfig,
    VllmTeacher,
    compression_ratio,
    labels_version,
    teacher_config,
)
from asr_distill.teachers import faster_whisper as fw_mod
from asr_distill.teachers.base import hash_model_dir
from asr_distill.teachers.faster_whisper import bundled_model_path
from asr_distill.teachers.vllm_backend import (
    WHISPER_LANGUAGES,
    build_prompt,
    clean_chat_text,
    detect_family,
    weight_patterns,
)
from tests.labels_material import SENTENCES, espeak

SR = 16_000


@pytest.fixture(scope="module")
def teacher():
    t = FasterWhisperConfig().build()
    yield t
    t.close()


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray, str]]:
    return [(f"s{i}", espeak(text), text) for i, text in enumerate(SENTENCES[:6])]


# -- faster-whisper ------------------------------------------------------------------------------------
def test_pinned_hash_is_the_installed_model() -> None:
    data = (bundled_model_path() / "model.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == TINY_EN_MODEL_BIN_SHA256
    assert TINY_EN_MODEL_BIN_SHA256.startswith("1a5afae0") and TINY_EN_MODEL_BIN_SHA256.endswith("936b2a")


def test_tiny_en_labels_synthesized_speech(teacher, speech) -> None:
    results = teacher.transcribe([(k, a) for k, a, _ in speech])
    assert [r.key for r in results] == [k for k, _, _ in speech]
    assert all(r.ok for r in results), [r.error_detail for r in results]
    refs = [normalize_text(t, "en") for _, _, t in speech]
    hyps = [normalize_text(r.text or "", "en") for r in results]
    wer = jiwer.wer(refs, hyps)
    assert wer < 0.35, (wer, hyps)
    for r in results:
        assert r.text and r.num_tokens and r.num_tokens > 0
        assert r.avg_logprob is not None and -5.0 < r.avg_logprob < 0.0
        assert r.compression_ratio == pytest.approx(compression_ratio(r.text))
        assert r.language == "en" and r.language_detected is False and r.language_probability is None
        assert r.no_speech_prob is not None and 0.0 <= r.no_speech_prob <= 1.0
        assert r.decode_time_s > 0 and not r.truncated


def test_decoding_is_deterministic(teacher, speech) -> None:
    key, audio, _ = speech[2]
    a, b = teacher.transcribe([(key, audio), (key, audio.copy())])
    assert (a.text, a.avg_logprob, a.num_tokens) == (b.text, b.avg_logprob, b.num_tokens)


def test_invalid_clips_are_never_sent(teacher, speech, monkeypatch) -> None:
    sent: list[str] = []
    real = teacher._one

    def spy(key: str, audio: np.ndarray, *rest):
        sent.append(key)
        return real(key, audio, *rest)

    monkeypatch.setattr(teacher, "_one", spy)
    good = speech[0][1]
    inf = good.copy()
    inf[100] = np.inf
    batch = [
        ("too_long", np.zeros(30 * SR + 1, np.float32)),
        ("nan", np.full(SR, np.nan, np.float32)),
        ("inf", inf),
        ("empty", np.zeros(0, np.float32)),
        ("stereo", np.zeros((SR, 2), np.float32)),
        ("int16", np.zeros(SR, np.int16)),
        ("overflow", np.full(SR, 1e300, np.float64)),
        ("good", good.astype(np.float64)),  # float64 is accepted (cast to float32)
    ]
    results = {r.key: r for r in teacher.transcribe(batch)}
    assert sent == ["good"]
    assert {k: r.error for k, r in results.items()} == {
        "too_long": "too_long",
        "nan": "non_finite_audio",
        "inf": "non_finite_audio",
        "empty": "empty_audio",
        "stereo": "invalid_audio",
        "int16": "invalid_audio",
        "overflow": "non_finite_audio",
        "good": None,
    }
    assert results["good"].text and results["too_long"].text is None


def test_exactly_thirty_seconds_is_sent(teacher) -> None:
    (r,) = teacher.transcribe([("max", np.zeros(30 * SR, np.float32))])
    assert r.ok  # silence may give empty text; it is sent, not refused


def test_fingerprint_stable_and_versioned(teacher) -> None:
    fp = teacher.fingerprint()
    assert len(fp) == 64 and fp == teacher.fingerprint()
    fields = teacher.fingerprint_fields()
    assert fields["model_bin_sha256"] == TINY_EN_MODEL_BIN_SHA256
    assert fields["decoding"]["beam_size"] == 1 and fields["decoding"]["temperature"] == 0.0
    assert fields["numerics"] == {"device": "cpu", "compute_type": "int8"}
    assert labels_version(fp) == fp[:16]
    # the thread count does not change labels, so it does not change the fingerprint
    assert FasterWhisperConfig(cpu_threads=2).build().fingerprint() == fp
    # decoding parameters and the prompt do
    changed = {
        FasterWhisperConfig(beam_size=2).build().fingerprint(),
        FasterWhisperConfig(initial_prompt="Meeting notes.").build().fingerprint(),
        FasterWhisperConfig(compute_type="float32").build().fingerprint(),
    }
    assert fp not in changed and len(changed) == 3


def test_model_hash_mismatch_fails_clearly(tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(bundled_model_path(), copy)
    with open(copy / "model.bin", "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelHashMismatchError) as err:
        FasterWhisperConfig(model_path=str(copy), expected_sha256=TINY_EN_MODEL_BIN_SHA256).build()
    assert TINY_EN_MODEL_BIN_SHA256 in str(err.value) and "model.bin" in str(err.value)
    # without a pin a custom model loads, and its own hash goes into the fingerprint
    (copy / "model.bin").unlink()
    shutil.copy(bundled_model_path() / "model.bin", copy / "model.bin")
    t = FasterWhisperConfig(model_path=str(copy), model_id="tiny-copy").build()
    assert t.fingerprint_fields()["model_bin_sha256"] == TINY_EN_MODEL_BIN_SHA256


def test_pinned_constant_is_enforced_for_the_bundled_model(monkeypatch) -> None:
    monkeypatch.setattr(fw_mod, "TINY_EN_MODEL_BIN_SHA256", "0" * 64)
    with pytest.raises(ModelHashMismatchError, match="expected 0{64}"):
        FasterWhisperConfig().build()


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TeacherLoadError, match="no model.bin"):
        FasterWhisperConfig(model_path=str(tmp_path)).build()
    with pytest.raises(TeacherLoadError, match="English-only"):
        FasterWhisperConfig(language="de").build()
    with pytest.raises(ValueError, match="unknown teacher backend"):
        teacher_config("nope")
    assert isinstance(teacher_config("vllm", model="openai/whisper-large-v3"), VllmConfig)


# -- vLLM at the LLM.generate boundary ------------------------------------------------------------------
@dataclass
class FakeLogprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FakeCompletion:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, FakeLogprob]] | None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None


@dataclass
class FakeRequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    outputs: list[FakeCompletion]
    finished: bool = True


class FakeTokenizer:
    def __init__(self) -> None:
        specials = ["<|endoftext|>", "<|im_end|>", *(f"<|{c}|>" for c in WHISPER_LANGUAGES)]
        self.vocab = {tok: 50257 + i for i, tok in enumerate(specials)}
        self.eos_token_id = self.vocab["<|endoftext|>"]

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab[token]


@dataclass
class FakeEngine:
    """Records every ``generate`` call; ``respond(prompt, params) -> FakeCompletion``."""

    respond: Any
    calls: list[tuple[list[dict], Any]] = field(default_factory=list)
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        assert use_tqdm is False
        self.calls.append((list(prompts), sampling_params))
        return [
            FakeRequestOutput(str(i), p.get("prompt"), None, [self.respond(p, sampling_params)])
            for i, p in enumerate(prompts)
        ]


def _completion(text: str, ids: list[int], lps: list[float], finish: str = "stop", cumulative: bool = True):
    steps = [{t: FakeLogprob(lp, 1)} for t, lp in zip(ids, lps, strict=True)]
    return FakeCompletion(0, text, ids, sum(lps) if cumulative else None, steps, finish)


def _clips(n: int) -> list[tuple[str, np.ndarray]]:
    return [(f"k{i}", np.full(SR * (i + 1), 0.01 * (i + 1), np.float32)) for i in range(n)]


def test_vllm_is_not_imported_by_the_package(tmp_path: Path) -> None:
    poisoned = tmp_path / "vllm"
    poisoned.mkdir()
    (poisoned / "__init__.py").write_text("raise RuntimeError('vllm was imported')\n")
    code = (
        "import asr_distill.teachers as t, asr_distill.stages.labels, sys\n"
        "t.VllmConfig(model='openai/whisper-large-v3')\n"
        "print('vllm' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_vllm_without_vllm_installed_fails_clearly(tmp_path: Path) -> None:
    model = tmp_path / "whisper-large-v3"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(TeacherLoadError, match="gpu"):
        VllmConfig(model=str(model)).build()


def test_vllm_whisper_prompt_and_mapping() -> None:
    eos = FakeTokenizer().eos_token_id

    def respond(prompt, params):
        return _completion(" Hello world.", [100, 101, 102, eos], [-0.1, -0.2, -0.3, -0.4])

    engine = FakeEngine(respond)
    t = VllmTeacher(VllmConfig(model="openai/whisper-large-v3", language="en"), engine=engine)
    clips = _clips(2)
    results = t.transcribe(clips)
    (prompts, params) = engine.calls[0]
    assert params == {"temperature": 0.0, "max_tokens": 440, "logprobs": 1}
    for p, (_, audio) in zip(prompts, clips, strict=True):
        assert p["decoder_prompt"] == {"prompt": "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"}
        assert p["encoder_prompt"]["prompt"] == ""
        sent, rate = p["encoder_prompt"]["multi_modal_data"]["audio"]
        assert rate == 16_000 and np.array_equal(sent, audio)
    r = results[0]
    assert r.text == "Hello world." and r.num_tokens == 3  # end-of-text is not a text token
    assert r.avg_logprob == pytest.approx(-1.0 / 4)  # ... but is averaged over, as Whisper does
    assert r.compression_ratio == pytest.approx(compression_ratio("Hello world."))
    assert r.language == "en" and not r.language_detected and not r.truncated
    fields = t.fingerprint_fields()
    assert fields["prompt"] == "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert fields["decoding"]["temperature"] == 0.0 and fields["backend"] == "vllm"


def test_vllm_whisper_detects_language_first() -> None:
    tok = FakeTokenizer()
    de, en = tok.vocab["<|de|>"], tok.vocab["<|en|>"]

    def respond(prompt, params):
        if params["max_tokens"] == 1:
            assert prompt["decoder_prompt"] == {"prompt": "<|startoftranscript|>"}
            step = {
                de: FakeLogprob(math.log(0.6)),
                en: FakeLogprob(math.log(0.2)),
                7: FakeLogprob(math.log(0.2)),
            }
            return FakeCompletion(0, "", [de], math.log(0.6), [step], "length")
        assert prompt["decoder_prompt"] == {
            "prompt": "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"
        }
        return _completion(" Guten Tag.", [5, 6, tok.eos_token_id], [-0.5, -0.5, -0.5])

    engine = FakeEngine(respond, tokenizer=tok)
    t = VllmTeacher(VllmConfig(model="openai/whisper-large-v3", language=None), engine=engine)
    (r,) = t.transcribe(_clips(1))
    detect_params = engine.calls[0][1]
    assert detect_params["max_tokens"] == 1 and detect_params["temperature"] == 0.0
    assert set(detect_params["allowed_token_ids"]) == {tok.vocab[f"<|{c}|>"] for c in WHISPER_LANGUAGES}
    assert r.language == "de" and r.language_detected
    assert r.language_probability == pytest.approx(0.6 / 0.8)  # renormalised over language tokens
    assert r.text == "Guten Tag."


def test_vllm_qwen2_audio_prompt_and_mapping() -> None:
    tok = FakeTokenizer()
    im_end = tok.vocab["<|im_end|>"]
    engine = FakeEngine(
        lambda p, s: _completion(
            "The original content of this audio is: 'Hello there.'", [1, 2, 3, im_end], [-0.2] * 4
        )
    )
    t = VllmTeacher(VllmConfig(model="Qwen/Qwen2-Audio-7B-Instruct"), engine=engine)
    assert t.family == "qwen2_audio"
    (r,) = t.transcribe(_clips(1))
    prompt = engine.calls[0][0][0]
    assert prompt["prompt"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
        "Transcribe the English audio into text. Output only the transcription.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt["multi_modal_data"]["audio"][1] == 16_000
    params = engine.calls[0][1]
    assert params["temperature"] == 0.0 and params["logprobs"] == 1
    assert params["stop_token_ids"] == sorted([im_end, tok.eos_token_id])
    assert r.text == "Hello there." and r.num_tokens == 3
    assert r.avg_logprob == pytest.approx(-0.2) and r.language == "en" and not r.language_detected


def test_vllm_qwen3_omni_prompt_and_mapping() -> None:
    engine = FakeEngine(
        lambda p, s: _completion(
            "<think>\nsome reasoning\n</think>\n\nIt is raining.",
            [1, 2, 3],
            [-0.1, -0.2, -0.3],
            "length",
            False,
        )
    )
    t = VllmTeacher(
        VllmConfig(model="Qwen/Qwen3-Omni-30B-A3B-Instruct", language="fr", max_tokens=3), engine=engine
    )
    (r,) = t.transcribe(_clips(1))
    prompt = engine.calls[0][0][0]["prompt"]
    assert prompt.startswith("<|im_start|>system\nYou are Qwen, a virtual human")
    assert "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>Transcribe the French audio" in prompt
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert r.text == "It is raining."
    assert r.avg_logprob == pytest.approx(-0.2)  # from the per-token logprobs when no cumulative is given
    assert r.truncated and r.num_tokens == 3 and r.language == "fr"


def test_vllm_whisper_takes_the_language_per_clip() -> None:
    tok = FakeTokenizer()
    ja, de = tok.vocab["<|ja|>"], tok.vocab["<|de|>"]
    detected: list[int] = []

    def respond(prompt, params):
        if params["max_tokens"] == 1:  # language detection
            sent = prompt["encoder_prompt"]["multi_modal_data"]["audio"][0]
            detected.append(len(sent))
            step = {de: FakeLogprob(math.log(0.9)), ja: FakeLogprob(math.log(0.1))}
            return FakeCompletion(0, "", [de], math.log(0.9), [step], "length")
        return _completion(" x", [5, tok.eos_token_id], [-0.1, -0.1])

    engine = FakeEngine(respond, tokenizer=tok)
    t = VllmTeacher(VllmConfig(model="openai/whisper-large-v3", language=None), engine=engine)
    clips = _clips(3)
    results = t.transcribe(clips, languages=["ja", None, "en-US"])
    # only the clip without a declared language is detected (one 2 s clip), then one batch of three
    assert detected == [2 * SR]
    prompts = engine.calls[-1][0]
    assert [p["decoder_prompt"]["prompt"] for p in prompts] == [
        "<|startoftranscript|><|ja|><|transcribe|><|notimestamps|>",
        "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>",
        "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>",
    ]
    assert [(r.language, r.language_detected, r.detected_language) for r in results] == [
        ("ja", False, None),
        ("de", True, "de"),
        ("en", False, None),
    ]
    assert results[1].language_probability == pytest.approx(0.9)
    # config language: the default for clips that declare none (no detection at all)
    engine2 = FakeEngine(respond, tokenizer=tok)
    t2 = VllmTeacher(VllmConfig(model="openai/whisper-large-v3", language="en"), engine=engine2)
    t2.transcribe(_clips(2), languages=[None, "ja"])
    assert len(engine2.calls) == 1
    assert [p["decoder_prompt"]["prompt"][21:27] for p in engine2.calls[0][0]] == ["<|en|>", "<|ja|>"]
    # a declared language Whisper has no token for fails that clip, not the batch
    (bad, good) = t2.transcribe(_clips(2), languages=["xx", "ja"])
    assert bad.error == "teacher_error" and "xx" in (bad.error_detail or "") and good.ok


def test_vllm_whisper_language_id_always_checks_declared_clips() -> None:
    tok = FakeTokenizer()
    de = tok.vocab["<|de|>"]

    def respond(prompt, params):
        if params["max_tokens"] == 1:
            return FakeCompletion(0, "", [de], 0.0, [{de: FakeLogprob(0.0)}], "length")
        return _completion(" x", [5, tok.eos_token_id], [-0.1, -0.1])

    engine = FakeEngine(respond, tokenizer=tok)
    cfg = VllmConfig(model="openai/whisper-large-v3", language_id="always")
    t = VllmTeacher(cfg, engine=engine)
    (r,) = t.transcribe(_clips(1), languages=["ja"])
    assert engine.calls[0][1]["max_tokens"] == 1  # detection ran although the clip declares ja
    assert engine.calls[1][0][0]["decoder_prompt"]["prompt"].startswith("<|startoftranscript|><|ja|>")
    assert (r.language, r.language_detected, r.detected_language) == ("ja", False, "de")
    assert r.language_probability == pytest.approx(1.0)
    default = VllmTeacher(
        VllmConfig(model="openai/whisper-large-v3"), engine=FakeEngine(respond, tokenizer=tok)
    )
    assert "language_id" not in default.fingerprint_fields()["decoding"]  # earlier fingerprints kept
    assert t.fingerprint() != default.fingerprint()
    with pytest.raises(ValueError, match="language_id"):
        VllmTeacher(VllmConfig(model="openai/whisper-large-v3", language_id="never"), engine=engine)


def test_vllm_chat_instruction_names_each_clips_language() -> None:
    tok = FakeTokenizer()
    im_end = tok.vocab["<|im_end|>"]
    engine = FakeEngine(lambda p, s: _completion("x", [1, im_end], [-0.1, -0.1]))
    t = VllmTeacher(VllmConfig(model="Qwen/Qwen2-Audio-7B-Instruct"), engine=engine)
    results = t.transcribe(_clips(3), languages=["ja", None, "zh-CN"])
    prompts = [p["prompt"] for p in engine.calls[0][0]]
    assert "Transcribe the Japanese audio" in prompts[0]
    assert "Transcribe the English audio" in prompts[1]  # the config's language (default en)
    assert "Transcribe the Chinese audio" in prompts[2]
    assert [r.language for r in results] == ["ja", "en", "zh"]
    assert all(r.detected_language is None and r.language_probability is None for r in results)


def test_vllm_isolates_a_clip_that_breaks_the_batch() -> None:
    bad_len = 2 * SR

    def respond(prompt, params):
        audio = (prompt.get("multi_modal_data") or prompt["encoder_prompt"]["multi_modal_data"])["audio"][0]
        if len(audio) == bad_len:
            raise RuntimeError("engine rejected the clip")
        return _completion(" ok", [1, FakeTokenizer().eos_token_id], [-0.1, -0.1])

    t = VllmTeacher(VllmConfig(model="openai/whisper-large-v3"), engine=FakeEngine(respond))
    results = t.transcribe(_clips(3))
    assert [r.error for r in results] == [None, "teacher_error", None]
    assert "engine rejected" in (results[1].error_detail or "")
    with pytest.raises(RuntimeError, match="every clip"):
        t.transcribe([c for c in _clips(3) if len(c[1]) == bad_len] * 2)


def test_vllm_refuses_long_and_non_finite_audio_before_the_engine() -> None:
    engine = FakeEngine(lambda p, s: pytest.fail("must not be sent"))
    t = VllmTeacher(VllmConfig(model="openai/whisper-large-v3"), engine=engine)
    results = t.transcribe(
        [("long", np.zeros(31 * SR, np.float32)), ("nan", np.full(SR, np.nan, np.float32))]
    )
    assert [r.error for r in results] == ["too_long", "non_finite_audio"] and engine.calls == []


def test_vllm_prompt_helpers_and_fingerprint() -> None:
    assert detect_family("openai/whisper-large-v3") == "whisper"
    assert detect_family("/models/Qwen2-Audio-7B-Instruct") == "qwen2_audio"
    assert detect_family("Qwen/Qwen3-Omni-30B-A3B-Instruct") == "qwen3_omni"
    with pytest.raises(ValueError, match="family"):
        detect_family("facebook/wav2vec2-base")
    with pytest.raises(ValueError, match="no language token"):
        build_prompt("whisper", np.zeros(1, np.float32), language="xx")
    assert clean_chat_text('"Hi."') == "Hi."
    assert clean_chat_text("The transcription of the audio is: Good morning.") == "Good morning."
    assert clean_chat_text("Plain words.") == "Plain words."

    def fp(**kw: Any) -> str:
        cfg = VllmConfig(model="Qwen/Qwen2-Audio-7B-Instruct", **kw)
        return VllmTeacher(cfg, engine=FakeEngine(lambda p, s: None)).fingerprint()

    base = fp()
    assert base == fp()
    assert len({base, fp(language="de"), fp(instruction="Write what is said."), fp(max_tokens=64)}) == 4


FAKE_VLLM = """
import json, os
from types import SimpleNamespace as NS

class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw

class _Tokenizer:
    eos_token_id = 50257
    def convert_tokens_to_ids(self, token):
        return 50257 if token == "<|endoftext|>" else 50300 + sum(map(ord, token))

class LLM:
    def __init__(self, **kwargs):
        with open(os.environ["FAKE_VLLM_LOG"], "w") as fh:
            json.dump(kwargs, fh)
    def get_tokenizer(self):
        return _Tokenizer()
    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        with open(os.environ["FAKE_VLLM_LOG"] + ".params", "w") as fh:
            json.dump(sampling_params.kw, fh)
        done = NS(index=0, text=" Hello world.", token_ids=[1, 2, 50257], cumulative_logprob=-0.3,
                  logprobs=None, finish_reason="stop")
        return [NS(request_id=str(i), outputs=[done]) for i, _ in enumerate(prompts)]
"""


def test_vllm_smoke_cli_builds_the_engine_as_documented(tmp_path: Path) -> None:
    """The smoke command end to end, with a stand-in ``vllm`` module recording LLM(...) arguments."""
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    model = tmp_path / "whisper-large-v3"
    model.mkdir()
    (model / "config.json").write_text("{}")
    sf.write(tmp_path / "a.flac", espeak("hello world"), SR)
    log = tmp_path / "llm.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAKE_VLLM_LOG": str(log)}
    cmd = [
        sys.executable,
        "-m",
        "asr_distill.vllm_smoke",
        "--model",
        str(model),
        "--audio",
        str(tmp_path / "a.flac"),
        "--reference",
        "hello world",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    clip, summary = (json.loads(line) for line in out.stdout.strip().splitlines())
    assert clip["text"] == "Hello world." and clip["num_tokens"] == 2 and clip["flags"] == []
    assert summary["corpus_wer"] == 0.0 and summary["teacher"]["model_sha256"] != "unverified"
    kwargs = json.loads(log.read_text())
    assert kwargs["model"] == str(model) and kwargs["max_model_len"] == 448
    assert kwargs["limit_mm_per_prompt"] == {"audio": 1} and kwargs["mm_processor_cache_gb"] == 0
    params = json.loads((tmp_path / "llm.json.params").read_text())
    assert params == {"temperature": 0.0, "max_tokens": 440, "logprobs": 1}


def test_hub_snapshots_are_fingerprinted_by_blob_ids(tmp_path: Path) -> None:
    """A Hugging Face cache snapshot links files to ``blobs/<sha256>``: hashed by name, not re-read."""
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    blobs.mkdir()
    snap.mkdir(parents=True)
    weights = b"\x00" * 1000
    wid = hashlib.sha256(weights).hexdigest()
    (blobs / wid).write_bytes(weights)
    (snap / "model.safetensors").symlink_to(blobs / wid)
    (snap / "config.json").write_text("{}")
    files = hash_model_dir(snap)
    assert files == {"config.json": hashlib.sha256(b"{}").hexdigest(), "model.safetensors": wid}
    assert (
        weight_patterns(["model.safetensors", "pytorch_model.bin", "flax_model.msgpack"])[-1]
        == "*.safetensors"
    )
    assert "*.bin" in weight_patterns(["pytorch_model.bin", "config.json"])
