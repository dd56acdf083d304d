"""Language facts, defined once: which languages are counted and scored per character, and the
primary language subtag of a language code.

* :data:`CHAR_LANGUAGES`: no spaces between words in writing, so the clean stage counts their label
  length in characters and the labels stage scores them by character error rate (CER).
* :func:`primary_language`: ``"en-US"`` / ``"EN_gb"`` / ``"zh_CN"`` -> ``"en"`` / ``"en"`` / ``"zh"``.
  What an *empty* code means depends on the caller, so it is explicit: with ``default`` (the clean
  stage: a row without a language is in the configured default language) the result is always a string;
  without (labels and manifests: unknown stays unknown) an empty code, or one without a primary subtag,
  gives None.
"""

from __future__ import annotations

from typing import overload

CHAR_LANGUAGES = frozenset({"zh", "cmn", "yue", "wuu", "ja", "ko"})


@overload
def primary_language(language: str | None, default: str) -> str: ...
@overload
def primary_language(language: str | None, default: None = None) -> str | None: ...
def primary_language(language: str | None, default: str | None = None) -> str | None:
    """The primary subtag of ``language``, lower case; for an empty code ``default`` (lower case) when
    given, else None (see the module docstring)."""
    lang = (language or "").strip().lower().replace("_", "-")
    if default is not None:
        return lang.split("-", 1)[0] if lang else default.lower()
    return lang.split("-", 1)[0] or None
