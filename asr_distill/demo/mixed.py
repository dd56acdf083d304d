"""A partition of mixed languages whose sidecars declare none: work for language identification.

``mixed_lang/clip_NNNN.<ext>``: Japanese read by Kokoro voices (:mod:`asr_distill.demo.japanese`) and
English read by flite (espeak-ng where flite is missing), interleaved in a fixed order. Every clip has a
``.txt`` sidecar holding its text only: a ``.txt`` sidecar carries no language, so the language of each
clip is known to the ground truth (:class:`~asr_distill.demo.corpus.CorpusEntry.language`) but not to
the pipeline, which has to identify it.
"""

from __future__ import annotations

from asr_distill.demo.corpus import FORMATS, SYNTH_RATE, Synthesizer, Voice
from asr_distill.demo.japanese import PartitionObject, audio_object, partition_object, speak

MIXED_PREFIX = "mixed_lang"
# (language, text, voice): Kokoro voices for Japanese; English voices are picked by availability.
MIXED_CLIPS: tuple[tuple[str, str, str], ...] = (
    ("ja", "お昼ご飯は何を食べましたか。", "jf_nezumi"),
    ("en", "The library opens at nine in the morning.", "slt"),
    ("ja", "この道をまっすぐ行ってください。", "jm_kumo"),
    ("en", "Please send me the report before Friday.", "kal"),
    ("ja", "雨が降りそうなので傘を持って行きます。", "jf_alpha"),
    ("en", "We walked along the river after dinner.", "awb"),
)
_ESPEAK_FALLBACK = {"slt": "en-us+f3", "kal": "en-us", "awb": "en-gb-scotland"}


def _english_voice(name: str, synth: Synthesizer) -> Voice:
    if name in synth.flite_voices:
        return Voice("flite", name, 1.0)
    return Voice("espeak-ng", _ESPEAK_FALLBACK[name], 160, 50)


def mixed_partition(
    prefix: str = MIXED_PREFIX,
    *,
    synth: Synthesizer | None = None,
    use_flite: bool = True,
    clips: int | None = None,
) -> list[PartitionObject]:
    """Objects of the mixed-language partition in key order (audio + ``.txt`` sidecar per clip);
    ``clips``: only the first ones (tests)."""
    synth = synth or Synthesizer(use_flite=use_flite)
    objs: list[PartitionObject] = []
    for i, (lang, text, voice_name) in enumerate(MIXED_CLIPS[: clips or len(MIXED_CLIPS)]):
        fmt = FORMATS["flac_16k"] if i % 2 == 0 else FORMATS["wav_pcm16_16k"]
        stem = f"{prefix}/clip_{i + 1:04d}"
        if lang == "ja":
            audio = speak(text, voice_name, rate=SYNTH_RATE)
            label = f"kokoro:{voice_name}"
        else:
            voice = _english_voice(voice_name, synth)
            raw = synth.synthesize(text, voice)
            audio = raw * (0.7 / float(abs(raw).max()))
            label = voice.label
        key = stem + fmt.ext
        common = {"prefix": prefix, "speaker": f"mixed_{label.replace(':', '_')}", "voice": label}
        # language: ground truth only, nothing in the store declares it
        objs.append(audio_object(key, audio, fmt, text, stem + ".txt", language=lang, **common))
        objs.append(
            partition_object(
                stem + ".txt",
                (text + "\n").encode("utf-8"),
                kind="sidecar",
                format="txt",
                outcome="ok",
                text=text,
                audio_key=key,
                language=lang,
                **common,
            )
        )
    return sorted(objs, key=lambda o: o.key)


def multilingual_groups(synth: Synthesizer) -> list[tuple[str, list]]:
    """The Japanese and mixed-language partitions as :func:`~asr_distill.demo.corpus.generate_corpus`
    task groups: ``(prefix, [task])``, each task returning ``(key, bytes, CorpusEntry)`` tuples."""
    from asr_distill.demo.japanese import JA_PREFIX, japanese_partition

    def ja() -> list:
        return [(o.key, o.data, o.entry) for o in japanese_partition()]

    def mixed() -> list:
        return [(o.key, o.data, o.entry) for o in mixed_partition(synth=synth)]

    return [(JA_PREFIX, [ja]), (MIXED_PREFIX, [mixed])]
