"""The vLLM teacher's ``ct2`` source and the teacher resource's actor environment, without vLLM.

The real engine runs these in ``make test-vllm`` (tests/test_vllm_labels_asset.py); here: validation,
lineage names, the conversion the actor runs at setup, and the Ray options the pool receives.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from asr_distill.resources import TeacherResource
from asr_distill.teachers import TeacherLoadError, teacher_config
from asr_distill.teachers.vllm_backend import VllmConfig, VllmTeacher, convert_ct2
from tests.test_vllm_english_only import Engine


def test_ct2_option_names_the_model_and_implies_whisper() -> None:
    cfg = teacher_config("vllm", ct2="tiny.en")
    assert isinstance(cfg, VllmConfig)
    assert cfg.resolved_family == "whisper" and cfg.model_id == "ct2:tiny.en"
    assert VllmConfig(ct2="/models/whisper-small-ct2").model_id == "ct2:/models/whisper-small-ct2"
    assert VllmConfig().model_id == "openai/whisper-large-v3"
    with pytest.raises(ValueError, match="absolute directory"):
        VllmConfig(ct2="relative/dir")
    with pytest.raises(ValueError, match="tiny.en"):
        VllmConfig(ct2="large-v3")
    with pytest.raises(ValueError, match="Whisper model"):
        VllmConfig(ct2="base", family="qwen2_audio")


def test_ct2_tiny_en_is_english_only_and_its_fingerprint_names_it() -> None:
    engine = Engine()
    teacher = VllmTeacher(VllmConfig(ct2="tiny.en", language="en"), engine=engine)
    assert teacher.multilingual is False
    (r,) = teacher.transcribe([("a", np.zeros(16_000, np.float32))])
    assert r.ok and engine.prompts[0]["decoder_prompt"]["prompt"] == "<|startoftranscript|><|notimestamps|>"
    assert teacher.fingerprint_fields()["model_id"] == "ct2:tiny.en"
    assert VllmTeacher(VllmConfig(ct2="base", language=None), engine=Engine()).multilingual is True


def test_convert_ct2_converts_the_shipped_model_once_and_refuses_a_bad_directory(tmp_path) -> None:
    from asr_distill.teachers import ct2_to_hf

    out = convert_ct2("tiny.en")
    assert ct2_to_hf.verify(out)["sources"]["model.bin"].startswith("1a5afae0")
    assert convert_ct2("tiny.en") == out  # reused, not redone
    with pytest.raises(TeacherLoadError, match="could not convert"):
        convert_ct2(str(tmp_path / "missing"))


def test_teacher_resource_runs_actors_in_another_python() -> None:
    res = TeacherResource(
        backend="vllm",
        options={"ct2": "tiny.en"},
        actor_python="/opt/vllm/bin/python",
        actor_env={"PYTHONPATH": "/src", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    assert res.pool_config().actor_options == {
        "runtime_env": {
            "py_executable": "/opt/vllm/bin/python",
            "env_vars": {"PYTHONPATH": "/src", "VLLM_CPU_KVCACHE_SPACE": "1"},
        }
    }
    assert res.teacher_config().model_id == "ct2:tiny.en"
    assert TeacherResource().pool_config().actor_options == {}
    with pytest.raises(dg.DagsterInvalidConfigError, match="absolute"):
        TeacherResource(actor_python="python3").pool_config()


def test_smoke_command_runs_ct2_and_a_hugging_face_checkpoint_through_one_path(tmp_path) -> None:
    """``--ct2 tiny.en`` and ``--model <the same checkpoint as a Hugging Face directory>`` build the engine
    with identical arguments and send identical requests (a stand-in ``vllm`` records both); only the
    model's name in lineage differs."""
    import json
    import os
    import subprocess
    import sys

    import soundfile as sf

    from tests.labels_material import espeak
    from tests.test_teachers import FAKE_VLLM

    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    sf.write(tmp_path / "a.flac", espeak("hello world"), 16_000)
    hf_dir = convert_ct2("tiny.en")
    runs = {}
    for name, source in (("ct2", ["--ct2", "tiny.en"]), ("hf", ["--model", str(hf_dir)])):
        log = tmp_path / f"{name}.json"
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAKE_VLLM_LOG": str(log)}
        cmd = [sys.executable, "-m", "asr_distill.vllm_smoke", *source, "--audio", str(tmp_path / "a.flac")]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        params = json.loads((tmp_path / f"{name}.json.params").read_text())
        runs[name] = (json.loads(log.read_text()), params, summary["teacher"])
    (ct2_llm, ct2_params, ct2_fp), (hf_llm, hf_params, hf_fp) = runs["ct2"], runs["hf"]
    assert ct2_llm == hf_llm and ct2_llm["model"] == str(hf_dir)
    assert ct2_params == hf_params
    assert ct2_fp["model_id"] == "ct2:tiny.en" and hf_fp["model_id"] == str(hf_dir)
    assert {k: v for k, v in ct2_fp.items() if k != "model_id"} == {
        k: v for k, v in hf_fp.items() if k != "model_id"
    }
