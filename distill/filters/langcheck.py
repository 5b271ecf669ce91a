"""Language consistency: the reasoning and the answer are in the prompt's language, unmixed.

Two measures, both on prose only (math, LaTeX and code removed, so `$x^2$` is in no language):
- script share: letters of another writing system than the target's (Chinese inside English
  reasoning, the failure R1-Zero showed) over all letters -> `language_mix` above the preset's share;
- language ID on windows spread over the whole text (fastText, see distill/language.py): most windows
  in another language -> `language_mismatch`; a share of windows above the preset's -> `language_mix`.
  Windows, not a prefix: langdetect reads only the first 10,000 characters and never sees a switch
  later in a 30K-character trace.
"""

from __future__ import annotations

import re
from collections import Counter

from distill import language
from distill.config import LanguageCheckConfig

SCRIPTS = {
    "cjk": re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "hebrew": re.compile(r"[\u0590-\u05ff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "thai": re.compile(r"[\u0e00-\u0e7f]"),
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f]"),
}
_LANG_SCRIPT = {
    "zh": "cjk", "ja": "cjk", "ko": "hangul", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic",
    "sr": "cyrillic", "ar": "arabic", "fa": "arabic", "ur": "arabic", "he": "hebrew", "hi": "devanagari",
    "th": "thai",
}  # fmt: skip


def script_of(lang: str) -> str:
    return _LANG_SCRIPT.get(lang, "latin")


def foreign_script_share(text: str, target: str) -> float:
    counts = {name: len(p.findall(text)) for name, p in SCRIPTS.items()}
    total = sum(counts.values())
    if not total:
        return 0.0
    mine = counts[script_of(target)]
    if script_of(target) == "cjk":  # Japanese and Chinese prose carry Latin abbreviations; count words
        return 0.0 if total == mine else (total - mine) / total
    return (total - mine) / total


def window_spans(length: int, size: int, count: int) -> list[tuple[int, int]]:
    """(start, end) of up to `count` windows of `size` characters spread evenly over a text."""
    if length <= size:
        return [(0, length)]
    step = (length - size) / max(count - 1, 1)
    return [(int(k * step), int(k * step) + size) for k in range(count)]


def windows(text: str, size: int, count: int) -> list[str]:
    """Up to `count` windows of `size` characters spread evenly over the text."""
    return [text[a:b] for a, b in window_spans(len(text), size, count)]


def check(reasoning: str | None, answer: str, target: str | None, cfg: LanguageCheckConfig) -> str | None:
    """`language_mismatch`, `language_mix` or None."""
    if target is None:
        return None
    for text in (reasoning or "", answer):
        if not text.isascii() and foreign_script_share(language.prose(text), target) > cfg.max_foreign_share:
            return "language_mix"
        # Only the windows are reduced to prose: a 30K-character trace costs 8 windows, not 30K.
        samples = [language.prose(w) for w in windows(text, cfg.window_chars, cfg.windows)]
        if sum(len(w) for w in samples) < cfg.min_chars:
            continue
        found = Counter(language.detect_prose(w) for w in samples)
        found.pop(None, None)
        if not found:
            continue
        total = sum(found.values())
        if found.most_common(1)[0][0] != target and found[target] / total < 0.5:
            return "language_mismatch"
        if 1 - found[target] / total > cfg.max_foreign_windows:
            return "language_mix"
    return None
