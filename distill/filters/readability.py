"""Readability of a trace: one closed think block, not cut off, no loops, no runaway paragraphs, no
code blocks in the reasoning of a non-code problem, not too long, a non-empty answer after `</think>`.

Every threshold comes from the preset (`ReadabilityConfig`); each check returns a reject code or None.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from distill.filters.config import ReadabilityConfig

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# OpenThoughts / Bespoke-Stratos (Sky-T1's format) mark the thinking and the answer with their own tags
THOUGHT_OPEN, THOUGHT_CLOSE = "<|begin_of_thought|>", "<|end_of_thought|>"
SOLUTION_OPEN, SOLUTION_CLOSE = "<|begin_of_solution|>", "<|end_of_solution|>"
_TAGS = (THINK_OPEN, THINK_CLOSE, THOUGHT_OPEN, THOUGHT_CLOSE)
_POWERS = np.array([pow(1_000_003, k, 1 << 64) for k in range(256)], dtype=np.uint64)
_PARAGRAPHS = re.compile(r"\n\s*\n")


def split_think(reasoning: str | None, content: str) -> tuple[str | None, str, bool]:
    """(reasoning, answer, closed): the server's split when it made one, else the inline tags (`<think>` or
    `<|begin_of_thought|>`, the answer's `<|begin_of_solution|>` wrapper taken off).

    `closed` is False when a think block was opened and never closed, or when think tags remain
    after the split (more than one block).
    """
    if reasoning is None or not reasoning.strip():
        stripped = content.lstrip()
        opening, closing = (THOUGHT_OPEN, THOUGHT_CLOSE) if THOUGHT_OPEN in content[:200] or (
            THOUGHT_CLOSE in content and THINK_CLOSE not in content) else (THINK_OPEN, THINK_CLOSE)  # fmt: skip
        if stripped.startswith(opening) or closing in content:
            head, sep, tail = content.partition(closing)
            if not sep:
                return None, content, False
            reasoning = head.replace(opening, "", 1)
            content = tail
    if SOLUTION_OPEN in content:
        content = content.replace(SOLUTION_OPEN, "", 1).replace(SOLUTION_CLOSE, "", 1)
    closed = not any(tag in (reasoning or "") or tag in content for tag in _TAGS)
    return reasoning, content, closed


def repeated_line(text: str, cfg: ReadabilityConfig) -> tuple[str, int] | None:
    """The substantial line seen more than `max_line_repeats` times, and how often; None when there is none."""
    lines = Counter(s for line in text.splitlines() if len(s := line.strip()) >= cfg.min_repeated_line_chars)
    if lines:
        line, n = lines.most_common(1)[0]
        if n > cfg.max_line_repeats:
            return line, n
    return None


def longest_paragraph(text: str) -> int:
    """Characters of the longest paragraph (paragraphs are split by blank lines)."""
    return max((len(p) for p in _PARAGRAPHS.split(text)), default=0)


def code_in_reasoning(reasoning: str, domain: str, cfg: ReadabilityConfig) -> bool:
    """A code fence in the reasoning of a problem that is not about code, where the preset forbids it."""
    return not cfg.allow_code_blocks and domain != "code" and "```" in reasoning


def repeated(text: str, cfg: ReadabilityConfig) -> bool:
    """A loop: one substantial line many times, or a large share of repeated word n-grams."""
    if repeated_line(text, cfg) is not None:
        return True
    words = text.split()
    n = cfg.repetition_ngram
    if len(words) < 4 * n:
        return False
    # Each word n-gram as one 64-bit polynomial hash of its words' hashes, all at once in NumPy.
    ids = pc.dictionary_encode(pa.array(words, pa.string())).indices  # word -> integer, in C
    h = ids.to_numpy(zero_copy_only=False).astype(np.uint64) + np.uint64(1)
    grams = sliding_window_view(h, n) @ _POWERS[:n]  # uint64 arithmetic wraps, as a hash should
    repeats = len(grams) - len(np.unique(grams))
    return repeats / len(grams) > cfg.max_repeated_ngram_share


def check(
    reasoning: str | None,
    content: str,
    finish_reason: str | None,
    completion_tokens: int | None,
    domain: str,
    cfg: ReadabilityConfig,
) -> tuple[str | None, str | None, str]:
    """(reject code or None, reasoning, answer) after splitting the think block."""
    if finish_reason == "length":
        return "truncated", reasoning, content
    reasoning, answer, closed = split_think(reasoning, content)
    if not closed:  # a block opened and never closed (or a second one) is broken even where none is required
        return "unclosed_think", reasoning, answer
    if (cfg.require_think and not (reasoning or "").strip()) or len(answer.strip()) < cfg.min_answer_chars:
        return "empty", reasoning, answer
    size = completion_tokens if completion_tokens is not None else (len(reasoning or "") + len(answer)) // 4
    if cfg.max_tokens is not None and size > cfg.max_tokens:
        return "too_long", reasoning, answer
    text = reasoning or ""
    if repeated(text, cfg) or repeated(answer, cfg):
        return "repetition", reasoning, answer
    if cfg.max_paragraph_chars is not None and longest_paragraph(text) > cfg.max_paragraph_chars:
        return "long_paragraph", reasoning, answer
    if code_in_reasoning(text, domain, cfg):
        return "code_block", reasoning, answer
    return None, reasoning, answer
