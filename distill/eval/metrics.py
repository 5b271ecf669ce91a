"""pass@1 over k samples, its standard error over problems, maj@k, lengths and truncation.

pass@1 is the R1 protocol's: the mean over problems of the share of a problem's k samples that are
correct. Its standard error is over problems (the samples of one problem are not independent draws
of the benchmark). maj@k (R1's cons@k) takes each problem's most common final answer among its
samples (ties: the one reached first) and counts the problem solved if that answer is correct.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from distill.filters.answers import choice_letter, final_boxed
from distill.normalize import normalize


def final_answer(domain: str, content: str | None, closed: bool) -> str | None:
    """The answer a sample votes for in maj@k (normalised), or None."""
    if not closed or not content:
        return None
    if domain == "science":
        return choice_letter(content)
    if domain == "math":
        boxes = final_boxed(content)
        return normalize(boxes[0]) if boxes else None
    return None  # code: answers are programs; no vote


def has_box(domain: str, content: str | None, closed: bool) -> bool | None:
    """Whether a math / science sample boxes a non-empty final answer after a closed think block
    (None for code, whose answers are programs)."""
    if domain == "code":
        return None
    return bool(closed and content and any(b.strip() for b in final_boxed(content)))


def summarize(rows: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Metrics of scored sample rows (`id`, `sample`, `domain`, `correct`, `vote`, `completion_tokens`, ...)."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[r["id"]].append(r)
    shares, majority, any_correct = [], [], []
    for pid in sorted(by_problem):
        group = sorted(by_problem[pid], key=lambda r: r["sample"])
        shares.append(sum(bool(r["correct"]) for r in group) / len(group))
        any_correct.append(any(r["correct"] for r in group))
        votes = Counter(r["vote"] for r in group if r["vote"] is not None)
        if votes:
            top = max(votes.values())
            winner = next(r["vote"] for r in group if r["vote"] is not None and votes[r["vote"]] == top)
            majority.append(any(r["correct"] for r in group if r["vote"] == winner))
        elif group[0]["domain"] != "code":
            majority.append(False)
    n = len(shares)
    mean = sum(shares) / n if n else 0.0
    stderr = math.sqrt(sum((s - mean) ** 2 for s in shares) / (n - 1) / n) if n > 1 else 0.0
    boxable = [r["boxed"] for r in rows if r.get("boxed") is not None]
    tokens = [r["completion_tokens"] for r in rows if r.get("completion_tokens") is not None]
    return {
        "problems": n,
        "samples_per_problem": samples,
        "pass@1": round(100 * mean, 2),
        "pass@1_stderr": round(100 * stderr, 2),
        f"maj@{samples}": round(100 * sum(majority) / len(majority), 2) if majority else None,
        f"pass@{samples}": round(100 * sum(any_correct) / n, 2) if n else None,
        "mean_response_tokens": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "truncation_rate": round(sum(r["finish_reason"] == "length" for r in rows) / len(rows), 4) if rows else None,
        # format, separately from correctness: a student can be right less often yet still well-formed
        "closed_think_pct": _pct([bool(r.get("closed_think")) for r in rows]),
        "boxed_pct": _pct(boxable),
        "missing_samples": n * samples - len(rows),
    }


def _pct(flags: list[bool]) -> float | None:
    return round(100 * sum(flags) / len(flags), 2) if flags else None
