"""The matching form of a problem: what makes two prompts "the same" for ids, dedup and decontamination.

Only ever used to compare texts; the stored text is never changed. Two problems that differ only in
white space, letter case, Unicode form (full-width digits, ligatures) or LaTeX spacing (`x^2+1` vs
`x ^ 2 + 1`, `\\dfrac` vs `\\frac`, `\\left(` vs `(`, `\\,`) have the same tokens, hence the same `id`.
"""

from __future__ import annotations

import re
import unicodedata

# LaTeX that changes only the look, not the content.
_LATEX_SAME = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])"), ""),
    (re.compile(r"\\(?:,|;|:|!|quad|qquad|displaystyle|textstyle)(?![a-zA-Z])|\\ "), " "),
    (re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]"), "$"),
]
# One token: a CJK character (such scripts are written without spaces), a LaTeX command, a run of
# letters/digits, or any other single non-space character.
_CJK = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|\\[a-z]+|[^\W_{_CJK}]+|[^\w\s]|_")
_WORD = re.compile(rf"[{_CJK}]|\\[a-z]+|[^\W_{_CJK}]+")
_NUMBER = re.compile(r"\d+")


def canonical(text: str) -> str:
    """NFKC, case-folded, LaTeX look-alikes unified."""
    text = unicodedata.normalize("NFKC", text).casefold()
    for pattern, repl in _LATEX_SAME:
        text = pattern.sub(repl, text)
    return text


def tokens(text: str) -> list[str]:
    """The tokens of the canonical text: white space never matters, so neither does LaTeX spacing."""
    return _TOKEN.findall(canonical(text))


def normalize(text: str) -> str:
    """The matching form as one string (what a prompt's `id` hashes)."""
    return " ".join(tokens(text))


def words(text: str) -> list[str]:
    """Tokens without punctuation: the "normalized words" that decontamination n-grams are made of."""
    return _WORD.findall(canonical(text))


def numbers(toks: list[str]) -> list[str]:
    """The numbers of a problem in order: two problems with other numbers are other problems."""
    return [t for t in toks if _NUMBER.fullmatch(t)]
