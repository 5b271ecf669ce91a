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
from distill.filters.config import LanguageCheckConfig

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
_ONE_LETTER = re.compile(r"(?<![^ ])[A-Za-z](?![^ ])")  # a variable (`x`, `n`) left over in prose: no language
_RUNS = {name: re.compile(p.pattern + "+") for name, p in SCRIPTS.items()}
_LANG_SCRIPT = {
    "zh": "cjk", "ja": "cjk", "ko": "hangul", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic",
    "sr": "cyrillic", "ar": "arabic", "fa": "arabic", "ur": "arabic", "he": "hebrew", "hi": "devanagari",
    "th": "thai",
}  # fmt: skip


def script_of(lang: str) -> str:
    return _LANG_SCRIPT.get(lang, "latin")


def _words(text: str, script: str) -> list[tuple[int, int]]:
    """(start, end) of the runs of one script's letters; a CJK run counts a word per two characters (no spaces)."""
    return [(m.start(), m.end()) for m in _RUNS[script].finditer(text)]


def _count(runs: list[tuple[int, int]], script: str) -> int:
    return sum(max(1, (b - a) // 2) for a, b in runs) if script == "cjk" else len(runs)


def foreign_words(text: str, target: str) -> tuple[int, int, tuple[int, int, str] | None]:
    """(words in other scripts, words in all, the longest foreign run as (start, end, script)): the R1 paper's
    language-consistency measure is the share of target-language words, so it is counted in words, not letters."""
    mine = script_of(target)
    foreign = total = 0
    longest: tuple[int, int, str] | None = None
    for name in SCRIPTS:
        if mine == "cjk" and name == "latin":  # Chinese and Japanese prose carry Latin abbreviations
            continue
        runs = _words(text, name)
        n = _count(runs, name)
        total += n
        if name != mine:
            foreign += n
            for a, b in runs:
                if longest is None or b - a > longest[1] - longest[0]:
                    longest = (a, b, name)
    return foreign, total, longest


def window_spans(length: int, size: int, count: int) -> list[tuple[int, int]]:
    """(start, end) of up to `count` windows of `size` characters spread evenly over a text."""
    if length <= size:
        return [(0, length)]
    step = (length - size) / max(count - 1, 1)
    return [(int(k * step), int(k * step) + size) for k in range(count)]


def windows(text: str, size: int, count: int) -> list[str]:
    """Up to `count` windows of `size` characters spread evenly over the text."""
    return [text[a:b] for a, b in window_spans(len(text), size, count)]


def window_language(window: str, cfg: LanguageCheckConfig) -> tuple[str, float] | None:
    """The language a window of text reads as, with the detector's confidence; None when it cannot say: too few
    real words once math and one-letter variables are gone (math-dense English misreads as Italian or Slovenian on
    its leftovers), or a guess below `min_confidence` (a real passage in another language reads at ~0.99)."""
    words = _ONE_LETTER.sub("", language.prose(window))
    if len(words) - words.count(" ") < cfg.min_window_letters:
        return None
    found = language.detect_scored(words)
    if found is None or found[1] < cfg.min_confidence:
        return None
    return found


def _snippet(text: str, a: int, b: int, width: int = 60) -> str:
    return " ".join(text[a : min(b, a + width)].split())


def check(
    reasoning: str | None, answer: str, target: str | None, cfg: LanguageCheckConfig
) -> tuple[str | None, str | None]:
    """(`language_mismatch` | `language_mix` | None, what was seen: the passage and the language read there)."""
    if target is None:
        return None, None
    for part, text in (("reasoning", reasoning or ""), ("answer", answer)):
        if not text.isascii():
            foreign, total, longest = foreign_words(language.prose(text), target)
            if foreign >= cfg.min_foreign_words and foreign / total > cfg.max_foreign_share and longest:
                # the passage is found again in the text itself, for its place
                words = language.prose(text)[longest[0] : longest[1]]
                at = text.find(words[:20])
                return "language_mix", (
                    f"expected {target}; {foreign} of {total} words of the {part} in other scripts, e.g. "
                    f"{longest[2]} at char {at}: {_snippet(words, 0, len(words))!r}"
                )
        # Only the windows are reduced to prose: a 30K-character trace costs 8 windows, not 30K.
        read = [(a, window_language(text[a:b], cfg)) for a, b in window_spans(len(text), cfg.window_chars, cfg.windows)]
        judged = [(a, got[0]) for a, got in read if got is not None]
        if not judged:
            continue
        found = Counter(lang for _, lang in judged)
        other = next(((a, lang) for a, lang in judged if lang != target), None)
        if other is None:
            continue
        where = f"the {part} window at char {other[0]} reads as {other[1]}: {_snippet(text, other[0], len(text))!r}"
        if found.most_common(1)[0][0] != target and found[target] / len(judged) < 0.5:
            return (
                "language_mismatch",
                f"expected {target}; {len(judged) - found[target]} of {len(judged)} windows "
                f"in another language; {where}",
            )
        if 1 - found[target] / len(judged) > cfg.max_foreign_windows:
            return (
                "language_mix",
                f"expected {target}; {len(judged) - found[target]} of {len(judged)} windows in "
                f"another language; {where}",
            )
    return None, None
