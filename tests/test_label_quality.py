"""Quality signals of teacher labels: every flag fires on the case it is for, and stays quiet otherwise."""

from __future__ import annotations

import pytest

from asr_distill.stages.labels.quality import (
    QUALITY_FLAGS,
    QualityConfig,
    assess,
    cjk_numerals_to_digits,
    error_rate,
    normalize_cjk,
    normalize_text,
    text_flags,
)

CFG = QualityConfig()
GOOD = "The weather today is cold and windy with a chance of rain in the evening."


def flags(text: str = GOOD, duration_s: float = 4.0, **kw) -> tuple[str, ...]:
    return assess(text, duration_s=duration_s, cfg=CFG, **kw).flags


def test_a_good_label_has_no_flags() -> None:
    q = assess(
        GOOD,
        duration_s=4.0,
        cfg=CFG,
        avg_logprob=-0.3,
        no_speech_prob=0.01,
        language="en",
        expected_language="en-US",
        reference_text="the weather today is cold and windy with a chance of rain in the evening",
    )
    assert q.flags == () and q.error_rate == 0.0 and q.error_metric == "wer"
    assert q.chars_per_second == pytest.approx(len(GOOD) / 4.0)


def test_defaults_are_the_published_ones() -> None:
    assert CFG.max_compression_ratio == 2.4 and CFG.min_avg_logprob == -1.0
    assert CFG.max_unique_word_ratio == 0.4 and CFG.long_word_chars == 25 and CFG.ngram_size == 5
    assert CFG.max_error_rate == 0.10 and CFG.min_language_probability == 0.7
    assert set(CFG.to_dict()) >= {"max_compression_ratio", "cer_languages"}


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(text: str) -> None:
    assert flags(text) == ("empty_text",)


def test_compression_ratio() -> None:
    looping = "I'm going to go to the store. " * 12
    assert "high_compression" in text_flags(looping, CFG)
    assert "high_compression" not in text_flags(GOOD, CFG)
    assert "high_compression" not in text_flags(looping, QualityConfig(max_compression_ratio=100))


def test_unique_word_ratio_needs_enough_words() -> None:
    assert "low_unique_words" in text_flags("yes yes yes no no yes yes no yes no", CFG)  # 10 words, 2 unique
    assert "low_unique_words" not in text_flags("yes yes no no", CFG)  # too few words to judge
    assert "low_unique_words" not in text_flags(GOOD, CFG)


def test_repeated_five_grams() -> None:
    phrase = "we will meet at the station "
    assert "repeated_ngram" in text_flags("So " + phrase * 3 + "tomorrow.", CFG)
    assert "repeated_ngram" not in text_flags("So " + phrase * 2 + "tomorrow.", CFG)  # twice is speech


def test_long_word() -> None:
    assert "long_word" in text_flags("hello " + "a" * 25, CFG)
    assert "long_word" not in text_flags("counterrevolutionaries is long", CFG)  # 22 letters
    assert "long_word" in text_flags("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", CFG)  # Whisper on NaN audio


def test_all_caps() -> None:
    assert "all_caps" in text_flags("THE WEATHER TODAY IS COLD.", CFG)
    assert "all_caps" not in text_flags("NASA and the BBC agree.", CFG)
    assert "all_caps" not in text_flags("OK.", CFG)  # too few letters to say


def test_chars_per_second_bounds() -> None:
    assert "chars_per_second_low" in flags("Yes.", duration_s=29.0)
    assert "chars_per_second_high" in flags(GOOD * 3, duration_s=4.0)
    assert not {"chars_per_second_low", "chars_per_second_high"} & set(flags(GOOD, duration_s=4.0))
    assert "chars_per_second_low" not in flags("", duration_s=29.0)  # empty is its own flag


def test_confidence_and_no_speech() -> None:
    assert "low_avg_logprob" in flags(avg_logprob=-1.3)
    assert "low_avg_logprob" not in flags(avg_logprob=-0.9)
    assert "no_speech" in flags(avg_logprob=-1.3, no_speech_prob=0.9)
    # Whisper's rule: a confident decoding is kept even when the no-speech probability is high
    assert "no_speech" not in flags(avg_logprob=-0.2, no_speech_prob=0.9)


def test_truncated() -> None:
    assert "truncated" in flags(truncated=True) and "truncated" not in flags()


def test_language_checks() -> None:
    assert "language_mismatch" in flags(language="en", expected_language="de")
    # a forced language (English-only teacher) that differs from the expected one is a mismatch too
    assert "language_mismatch" in flags(language="en", language_detected=False, expected_language="fr-FR")
    assert "language_mismatch" not in flags(language="en", expected_language="EN_gb")
    assert "language_mismatch" not in flags(language="en")  # nothing expected, nothing to compare
    low = {"language": "en", "language_probability": 0.5, "expected_language": "en"}
    assert "low_language_prob" in flags(language_detected=True, **low)
    assert "low_language_prob" not in flags(language_detected=False, **low)  # forced: no probability
    assert "low_language_prob" not in flags(language_detected=True, **{**low, "language_probability": 0.95})


def test_wer_against_reference() -> None:
    q = assess(
        "The quick roundfire stump over the lazy dog.",
        duration_s=3.0,
        cfg=CFG,
        language="en",
        reference_text="The quick brown fox jumps over the lazy dog.",
    )
    assert "high_wer" in q.flags and q.error_rate == pytest.approx(3 / 9)
    assert assess(GOOD, duration_s=4, cfg=CFG, reference_text=GOOD.upper()).error_rate == 0.0
    assert assess(GOOD, duration_s=4, cfg=CFG).error_rate is None  # no reference, no WER
    assert "high_wer" not in flags(reference_text="   ")
    assert (
        "high_wer"
        not in assess(
            GOOD,
            duration_s=4,
            cfg=QualityConfig(max_error_rate=0.5),
            reference_text=GOOD.replace("cold", "warm"),
        ).flags
    )


def test_numbers_as_digits_or_words_are_not_errors() -> None:
    pairs = [
        ("She sold 50 bonds on Tuesday.", "she sold fifty bonds on tuesday"),
        (
            "It cost $21.50 in 2024.",
            "It cost twenty one dollars and fifty cents in two thousand and twenty four",
        ),
        ("Room 105 is 10% off", "room one hundred and five is ten percent off"),
        ("Mr. Smith's colour", "mister smith's color"),
    ]
    for hyp, ref in pairs:
        assert error_rate(hyp, ref, "en") == (0.0, "wer"), (
            normalize_text(hyp, "en"),
            normalize_text(ref, "en"),
        )
    assert error_rate("She sold 15 bonds.", "she sold fifty bonds", "en")[0] == pytest.approx(0.25)


def test_cer_for_character_languages() -> None:
    rate, metric = error_rate("今天天气很好。", "今天天气不好", "zh-CN")
    assert metric == "cer" and rate == pytest.approx(1 / 6)
    assert error_rate("こんにちは", "こんにちは", "ja")[0] == 0.0
    q = assess("今天天气很好", duration_s=2.0, cfg=CFG, expected_language="zh", reference_text="今天天气很好")
    assert q.error_metric == "cer" and q.error_rate == 0.0
    assert "chars_per_second_low" not in q.flags  # 3 characters per second of Chinese is normal
    # other languages: basic normalisation (case, punctuation), word level
    assert error_rate("Guten Tag, Welt!", "guten tag welt", "de") == (0.0, "wer")


@pytest.mark.parametrize(
    ("numerals", "digits"),
    [
        ("十時", "10時"),
        ("二十五", "25"),
        ("三百五", "305"),
        ("三千", "3000"),
        ("一万二千", "12000"),
        ("百二十万", "1200000"),
        ("一億二千万", "120000000"),
        ("二〇二六年", "2026年"),
        ("零", "0"),
        ("两个", "2个"),
        ("10時", "10時"),  # digits stay digits
    ],
)
def test_cjk_numerals_become_digits(numerals: str, digits: str) -> None:
    assert cjk_numerals_to_digits(numerals) == digits


def test_cjk_normalisation_width_punctuation_digits_whitespace() -> None:
    # full-width Latin and digits -> half-width, half-width katakana -> full-width, punctuation gone
    assert normalize_cjk("ＡＢ１２ ｶﾀｶﾅ「こんにちは」！") == "ab12カタカナこんにちは"
    assert normalize_cjk("今天，天气很好。\u3000真的？") == "今天天气很好真的"
    assert normalize_cjk("서울 은, 오늘 맑음!") == "서울은오늘맑음"  # Hangul syllables stay composed
    assert normalize_cjk("香港 係 一個 城市。") == "香港係1個城市"  # Cantonese (text only)
    # Whisper writes 10時 for 十時: no error; full-width digits are no error either
    assert error_rate("明日の会議は10時に始まります。", "明日の会議は十時に始まります。", "ja") == (
        0.0,
        "cer",
    )
    assert error_rate("会議は１０時", "会議は十時", "ja") == (0.0, "cer")
    assert error_rate("二零二六年", "2026年", "zh") == (0.0, "cer")
    assert error_rate("오늘은 3월", "오늘은 삼월", "ko")[0] > 0  # Sino-Korean Hangul numerals: not converted
    # a real substitution still counts, per character
    rate, metric = error_rate("この本は図書館で借りました", "この本は図書館で買いました", "ja")
    assert metric == "cer" and rate == pytest.approx(2 / 13)  # 借り -> 買い: 2 of 13 characters


def test_error_rate_edge_cases() -> None:
    assert error_rate("", "hello world", "en") == (1.0, "wer")
    assert error_rate("", "[noise]", "en") == (0.0, "wer")  # both normalise to nothing
    assert error_rate("hello", "(...)", "en") == (None, "wer")  # no reference words: undefined


def test_flags_are_ordered_and_known() -> None:
    q = assess(
        "THE THE THE THE THE THE THE THE THE THE THE THE",
        duration_s=1.0,
        cfg=CFG,
        avg_logprob=-2.0,
        truncated=True,
        language="en",
        expected_language="de",
        reference_text="etwas anderes",
    )
    assert set(q.flags) <= set(QUALITY_FLAGS)
    assert list(q.flags) == sorted(q.flags, key=list(QUALITY_FLAGS).index)
    assert {
        "high_compression",
        "low_unique_words",
        "repeated_ngram",
        "all_caps",
        "chars_per_second_high",
        "low_avg_logprob",
        "truncated",
        "language_mismatch",
        "high_wer",
    } <= set(q.flags)
