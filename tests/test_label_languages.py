"""Languages through the labels core: declared languages reach the teacher, identification results reach
the flags and the labels table, and the per-language table of a partition (declared vs identified,
agreement, WER/CER per language). A scripted teacher stands in for Whisper here (what Whisper itself
identifies on real speech is tested in test_multilingual.py and test_labels_japanese.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asr_distill.stages.labels import LABELS_SCHEMA
from asr_distill.stages.labels.core import label_shard
from asr_distill.stages.labels.inputs import LabelInput
from asr_distill.stages.labels.verify import corpus_error_rates, language_stats
from asr_distill.teachers.base import Teacher, TeacherResult

# key -> (what identification says, its probability, text)
SCRIPT = {
    "ja_ok": ("ja", 0.99, "明日の会議は10時に始まります。"),
    "ja_declared_en": ("ja", 0.98, "Ashita no kaigi"),
    "ja_undeclared": ("ja", 0.97, "今日はとてもいい天気ですね"),
    "en_unsure": ("en", 0.41, "the library opens at nine"),
}


class ScriptedTeacher(Teacher):
    """Answers from :data:`SCRIPT`; records the languages it was given."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def _transcribe(self, items: Sequence[tuple[str, np.ndarray]]) -> list[TeacherResult]:
        raise AssertionError("the labels core must pass the declared languages")

    def _transcribe_langs(self, items, languages) -> list[TeacherResult]:
        out = []
        for (key, _), declared in zip(items, languages, strict=True):
            self.seen.append(declared)
            detected, prob, text = SCRIPT[key]
            out.append(
                TeacherResult(
                    key=key,
                    text=text,
                    language=declared or detected,
                    language_probability=prob,
                    language_detected=declared is None,
                    detected_language=detected,
                    avg_logprob=-0.2,
                )
            )
        return out

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"backend": "scripted"}


def _inputs() -> list[LabelInput]:
    tone = (0.1 * np.sin(np.arange(3 * 16_000) / 10)).astype(np.float32)
    return [
        LabelInput("ja_ok", tone, "明日の会議は十時に始まります。", "ja-JP"),
        LabelInput("ja_declared_en", tone, "the meeting tomorrow", "en"),
        LabelInput("ja_undeclared", tone, "今日はとてもいい天気ですね。", None),
        LabelInput("en_unsure", tone, "The library opens at nine.", "en"),
        LabelInput("broken", None, None, "ja", error="decode_error"),
    ]


def test_declared_languages_reach_the_teacher_and_identification_reaches_the_flags() -> None:
    teacher = ScriptedTeacher()
    table = label_shard(teacher, "s0", _inputs(), batch_size=2)
    assert teacher.seen == ["ja", "en", None, "en"]  # primary subtags; the error row is never sent
    assert table.schema.names == LABELS_SCHEMA.names
    rows = {r["sample_key"]: r for r in table.to_pylist()}
    ok = rows["ja_ok"]
    assert (ok["language"], ok["detected_language"], ok["language_probability"]) == ("ja", "ja", 0.99)
    assert ok["flags"] == [] and ok["error_metric"] == "cer" and ok["error_rate"] == 0.0  # 10時 == 十時
    wrong = rows["ja_declared_en"]
    assert wrong["language"] == "en" and wrong["detected_language"] == "ja"
    assert "language_mismatch" in wrong["flags"]
    und = rows["ja_undeclared"]
    assert (und["language"], und["language_detected"], und["expected_language"]) == ("ja", True, None)
    assert (
        und["error_metric"] == "cer" and und["error_rate"] == 0.0 and "language_mismatch" not in und["flags"]
    )
    assert "low_language_prob" in rows["en_unsure"]["flags"]
    assert "language_mismatch" not in rows["en_unsure"]["flags"]
    broken = rows["broken"]
    assert broken["status"] == "error" and broken["detected_language"] is None


def test_language_table_declared_vs_identified_and_error_rate_per_language() -> None:
    table = label_shard(ScriptedTeacher(), "s0", _inputs())
    refs = {i.key: (i.reference_text, i.expected_language) for i in _inputs() if i.reference_text}
    stats = {s.language: s for s in language_stats(table, refs)}
    assert set(stats) == {"ja", "en"}
    ja, en = stats["ja"], stats["en"]
    # ja: ja_ok (declared ja, identified ja), ja_undeclared (identified only), broken (declared, error row)
    assert (ja.samples, ja.declared, ja.identified, ja.agree, ja.disagree) == (3, 2, 2, 1, 0)
    assert ja.agreement == 1.0 and ja.metric == "cer" and ja.samples_with_reference == 2
    assert ja.error_rate == 0.0
    # en: declared English twice, identified Japanese once
    assert (en.samples, en.declared, en.agree, en.disagree, en.confusions) == (2, 2, 1, 1, {"ja": 1})
    assert en.agreement == 0.5 and en.metric == "wer" and en.error_rate > 0
    assert en.mean_probability is not None and 0.4 < en.mean_probability < 1.0
    by_metric = {w.metric: w for w in corpus_error_rates(table, refs)}
    assert by_metric["cer"].rate == 0.0 and by_metric["cer"].samples == 2


def test_manifest_stats_hours_and_counts_per_language() -> None:
    from types import SimpleNamespace

    import pyarrow as pa

    from asr_distill.stages.manifests.core import manifest_stats

    rows = [
        ("train", "ja", 3.6, "spk_a"),
        ("train", "ja", 7.2, "spk_b"),
        ("dev", "en", 1.8, "spk_c"),
        ("train", "en", 3.6, None),
    ]
    manifest = pa.table(
        {
            "split": [r[0] for r in rows],
            "language": [r[1] for r in rows],
            "duration_s": [r[2] for r in rows],
            "bucket": ["b0"] * len(rows),
            "bucket_lo_s": [0.0] * len(rows),
            "bucket_hi_s": [30.0] * len(rows),
            "speaker": [r[3] for r in rows],
        }
    )
    build = SimpleNamespace(manifest=manifest, drop_counts={}, dropped=manifest.slice(0, 0), counts=[])
    st = manifest_stats(build)  # type: ignore[arg-type]
    assert st["languages"] == {
        "en": {"samples": 2, "hours": 0.0015, "speakers": 1},
        "ja": {"samples": 2, "hours": 0.003, "speakers": 2},
    }
    assert {(r["split"], r["language"]): r["samples"] for r in st["splits_by_language"]} == {
        ("train", "en"): 1,
        ("train", "ja"): 2,
        ("dev", "en"): 1,
    }


def test_labels_written_before_the_detected_language_column_still_read(tmp_path) -> None:
    from asr_distill.stages.labels.run import read_labels
    from asr_distill.storage import LocalStorage
    from asr_distill.tableio import write_table

    table = label_shard(ScriptedTeacher(), "s0", _inputs())
    old = table.drop_columns(["detected_language"])  # a labels file of the previous schema
    lake = LocalStorage(tmp_path)
    write_table(lake, "labels/old.parquet", old)
    write_table(lake, "labels/new.parquet", table)
    both = read_labels(lake, ["labels/old.parquet", "labels/new.parquet"])
    assert both.schema.names == LABELS_SCHEMA.names and both.num_rows == 2 * table.num_rows
    detected = both.column("detected_language").to_pylist()
    assert detected[: table.num_rows] == [None] * table.num_rows and "ja" in detected[table.num_rows :]
    refs = {i.key: (i.reference_text, i.expected_language) for i in _inputs() if i.reference_text}
    assert {s.language for s in language_stats(both, refs)} == {"ja", "en"}
