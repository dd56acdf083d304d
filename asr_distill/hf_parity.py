"""Parity check: transformers' Whisper on a converted checkpoint vs faster-whisper on the CTranslate2 original.

Both decode greedily from the same decoder prompt (``<|startoftranscript|><|notimestamps|>`` for English-only
models, ``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>`` for multilingual ones), one 30 s
window, no temperature fallback, with the same suppressed tokens (the model's ``suppress_tokens`` at every
step, ``begin_suppress_tokens`` at the first, special and timestamp tokens never). faster-whisper runs in
float32 so the comparison measures the conversion, not int8 quantisation.

Needs torch and transformers (the separate vLLM environment; never the runtime install)::

    python -m asr_distill.hf_parity --src CT2_DIR --hf HF_DIR --audio DIR [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asr_distill.teachers.base import SAMPLE_RATE

MAX_SECONDS = 30.0


@dataclass
class ParityReport:
    n: int
    exact: int  # same text, transformers given faster-whisper's log-mel input: the conversion alone
    normalized: int
    exact_own_frontend: int = 0  # same text, each library with its own feature extractor (vLLM's case)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason
    mismatches: list[dict[str, str]] = field(default_factory=list)
    fw_seconds: float = 0.0
    hf_seconds: float = 0.0
    audio_seconds: float = 0.0

    @property
    def agreement(self) -> float:
        return self.exact / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        own = self.exact_own_frontend / self.n if self.n else 0.0
        return asdict(self) | {"agreement": self.agreement, "agreement_own_frontend": own}


def _prompt(tokenizer, multilingual: bool, language: str) -> list[int]:
    names = ["<|startoftranscript|>"]
    if multilingual:
        names += [f"<|{language}|>", "<|transcribe|>"]
    names.append("<|notimestamps|>")
    return [int(tokenizer.convert_tokens_to_ids(n)) for n in names]


class HfGreedy:
    """Greedy Whisper decoding with transformers, token by token (no generate() heuristics in the way)."""

    def __init__(self, hf_dir: str | Path, threads: int = 1) -> None:
        import torch
        from transformers import (
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
            WhisperTokenizerFast,
        )

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = WhisperForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
        self.fe = WhisperFeatureExtractor.from_pretrained(str(hf_dir))
        self.tok = WhisperTokenizerFast.from_pretrained(str(hf_dir))
        cfg = self.model.config
        self.eot = int(cfg.eos_token_id)
        self.multilingual = cfg.vocab_size >= 51865
        self.suppress = torch.tensor(sorted(set(cfg.suppress_tokens or [])), dtype=torch.long)
        self.begin = torch.tensor(sorted(set(cfg.begin_suppress_tokens or [])), dtype=torch.long)
        self.max_len = int(cfg.max_target_positions)
        self._fw_fe = None

    def features(self, audio: np.ndarray, frontend: str = "hf"):
        """Log-mel input: transformers' extractor (as vLLM uses: audio padded to 30 s, then the mel) or
        faster-whisper's (mel of the clip alone, last frame dropped, zero-padded to 3000 frames)."""
        if frontend == "hf":
            return self.fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.feature_extractor import FeatureExtractor

        if self._fw_fe is None:
            self._fw_fe = FeatureExtractor(feature_size=self.model.config.num_mel_bins)
        mel = self._fw_fe(audio)
        return self.torch.from_numpy(np.ascontiguousarray(pad_or_trim(mel[:, : mel.shape[1] - 1])))[None]

    def transcribe(self, audio: np.ndarray, language: str = "en", frontend: str = "hf") -> str:
        torch = self.torch
        feats = self.features(audio, frontend)
        prompt = _prompt(self.tok, self.multilingual, language)
        ids = list(prompt)
        with torch.inference_mode():
            enc = self.model.model.encoder(feats).last_hidden_state
            past = None
            step_in = torch.tensor([ids])
            while len(ids) < self.max_len:
                out = self.model(
                    encoder_outputs=(enc,), decoder_input_ids=step_in, past_key_values=past, use_cache=True
                )
                past = out.past_key_values
                logits = out.logits[0, -1].clone()
                logits[self.eot + 1 :] = -np.inf  # special and timestamp tokens
                logits[self.suppress] = -np.inf
                if len(ids) == len(prompt):
                    logits[self.begin] = -np.inf
                nxt = int(torch.argmax(logits))
                if nxt == self.eot:
                    break
                ids.append(nxt)
                step_in = torch.tensor([[nxt]])
        return self.tok.decode(ids[len(prompt) :], skip_special_tokens=True).strip()


class FwGreedy:
    def __init__(self, ct2_dir: str | Path, threads: int = 1, compute_type: str = "float32") -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, audio: np.ndarray, language: str = "en") -> str:
        segments, _ = self.model.transcribe(
            audio,
            language=language if self.model.model.is_multilingual else None,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


def compare(
    ct2_dir: str | Path,
    hf_dir: str | Path,
    clips: Sequence[tuple[str, np.ndarray]],
    *,
    language: str = "en",
    threads: int = 1,
) -> ParityReport:
    from asr_distill.stages.labels.quality import normalize_text

    fw, hf = FwGreedy(ct2_dir, threads), HfGreedy(hf_dir, threads)
    rep = ParityReport(n=0, exact=0, normalized=0)
    for key, audio in clips:
        if len(audio) > MAX_SECONDS * SAMPLE_RATE:
            rep.skipped[key] = f"longer than {MAX_SECONDS:.0f} s (one window only)"
            continue
        t0 = time.perf_counter()
        a = fw.transcribe(audio, language)
        t1 = time.perf_counter()
        b = hf.transcribe(audio, language, frontend="faster_whisper")
        t2 = time.perf_counter()
        c = hf.transcribe(audio, language, frontend="hf")
        rep.exact_own_frontend += a == c
        rep.fw_seconds += t1 - t0
        rep.hf_seconds += t2 - t1
        rep.audio_seconds += len(audio) / SAMPLE_RATE
        rep.n += 1
        rep.exact += a == b
        same_norm = normalize_text(a, language) == normalize_text(b, language)
        rep.normalized += same_norm
        if a != b:
            rep.mismatches.append(
                {"key": key, "faster_whisper": a, "transformers": b, "transformers_hf_frontend": c}
            )
    return rep


def load_clips(root: Path, limit: int | None = None) -> tuple[list[tuple[str, np.ndarray]], dict[str, str]]:
    """Audio files under ``root`` as 16 kHz mono float32; unreadable or unusable ones with a reason."""
    import soundfile as sf
    import soxr

    clips, skipped = [], {}
    exts = {".wav", ".flac", ".mp3", ".ogg", ".opus"}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in exts):
        key = str(path.relative_to(root))
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:
            skipped[key] = f"unreadable: {type(exc).__name__}: {exc}"
            continue
        mono = audio.mean(axis=1) if audio.shape[1] else np.zeros(0, np.float32)
        if mono.size < SAMPLE_RATE // 10 or not np.isfinite(mono).all() or not np.any(mono):
            skipped[key] = "empty, silent or non-finite"
            continue
        if rate != SAMPLE_RATE:
            mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
        clips.append((key, np.ascontiguousarray(mono, dtype=np.float32)))
        if limit and len(clips) >= limit:
            break
    return clips, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m asr_distill.hf_parity")
    ap.add_argument("--src", required=True, help="CTranslate2 Whisper directory")
    ap.add_argument("--hf", required=True, help="converted Hugging Face directory")
    ap.add_argument("--audio", required=True, help="directory of audio files (searched recursively)")
    ap.add_argument("--language", default="en")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    clips, skipped = load_clips(Path(args.audio), args.limit)
    rep = compare(args.src, args.hf, clips, language=args.language, threads=args.threads)
    rep.skipped = skipped | rep.skipped
    d = rep.as_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in d.items() if k != "skipped"}, indent=2, ensure_ascii=False))
    print(f"skipped {len(rep.skipped)}: " + "; ".join(f"{k}: {v}" for k, v in rep.skipped.items()))
    return 0 if rep.agreement >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
