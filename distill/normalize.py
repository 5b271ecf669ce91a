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
    (re.compile(r"(\\frac|\\binom)(\d)(\d)"), r"\1{\2}{\3}"),  # \frac12 is \frac{1}{2}
    (re.compile(r"\{\s*([a-z]|\d+|\\[a-z]+)\s*\}"), r" \1 "),  # x^{2} is x^2; {\pi} is \pi
]
# One token: a CJK character (such scripts are written without spaces), a LaTeX command, a run of
# letters/digits, or any other single non-space character.
_CJK = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af"
# Digits and letters are separate tokens: `7x` and `7 x` are the same term.
_TOKEN = re.compile(rf"[{_CJK}]|\\[a-z]+|\d+|[^\W\d_{_CJK}]+|[^\w\s]|_")
_WORD = re.compile(rf"[{_CJK}]|\\[a-z]+|\d+|[^\W\d_{_CJK}]+")
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


def word_tokens(toks: list[str]) -> list[str]:
    """`words()` of a text whose `tokens()` are already at hand."""
    return [t for t in toks if _WORD.fullmatch(t)]


def numbers(toks: list[str]) -> list[str]:
    """The numbers of a problem in order: two problems with other numbers are other problems."""
    return [t for t in toks if _NUMBER.fullmatch(t)]
