"""What a row view shows beside the text: the parts of a row apart, and where its verdict points.

A mark is a span of one displayed field (`problem`, `reasoning`, `answer`, `matched_text`, `raw`) with a
kind: the extracted final answer, the repeated lines of a `repetition`, the foreign passages of a
`language_mix`, the code blocks of a `code_block`, the runaway paragraphs of a `long_paragraph`, the benchmark
span a `contaminated` prompt shares. The spans are found with the filters' own code and thresholds (the
preset in the directory's manifest), so what is highlighted is what the filter saw.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from typing import Any

from distill.filters import langcheck
from distill.filters.answers import box_spans, choice_letter_span
from distill.filters.config import FilterPreset, LanguageCheckConfig, ReadabilityConfig
from distill.filters.readability import split_think

MAX_SCAN = 400_000  # characters of a field searched for marks; a runaway trace is marked in its first part
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_WORD = re.compile(r"[^\W_]+")
_GAP = r"[\s\d,.;:!?，。；：！？、（）()\"'“”‘’\-]{0,4}"  # what may sit inside one foreign passage


def answer_span(content: str, domain: str | None) -> tuple[int, int, str] | None:
    """(start, end, answer) of what a checker reads: the chosen letter of a multiple-choice row, else the
    last box."""
    if domain == "science":
        return choice_letter_span(content)
    boxes = box_spans(content)
    return boxes[-1] if boxes else None


def final_answer(content: str, domain: str | None = None) -> str | None:
    found = answer_span(content, domain)
    return found[2] if found else None


def _mark(field: str, start: int, end: int, kind: str, note: str) -> dict[str, Any]:
    return {"field": field, "start": start, "end": end, "kind": kind, "note": note}


def repeat_spans(text: str, cfg: ReadabilityConfig) -> list[tuple[int, int]]:
    """Every occurrence of a line repeated more than the preset allows; else the runs of repeated n-grams."""
    text = text[:MAX_SCAN]
    spans, lines = [], Counter()
    positions: dict[str, list[tuple[int, int]]] = {}
    for m in re.finditer(r"[^\n]+", text):
        line = m.group().strip()
        if len(line) >= cfg.min_repeated_line_chars:
            lines[line] += 1
            positions.setdefault(line, []).append((m.start(), m.end()))
    for line, n in lines.items():
        if n > cfg.max_line_repeats:
            spans.extend(positions[line])
    if spans:
        return sorted(spans)
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    n = cfg.repetition_ngram
    grams = [tuple(w for _, _, w in words[k : k + n]) for k in range(len(words) - n + 1)]
    seen = Counter(grams)
    covered = [False] * len(words)
    for k, gram in enumerate(grams):
        if seen[gram] > 1:
            covered[k : k + n] = [True] * n
    return _runs([(a, b) for (a, b, _), c in zip(words, covered, strict=True) if c], gap=1)


def _runs(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in spans:
        if out and a - out[-1][1] <= gap:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def foreign_spans(text: str, target: str, cfg: LanguageCheckConfig) -> list[tuple[int, int, str]]:
    """Passages in another writing system than the target's; else the windows language ID reads as another
    language (the two measures of the language filter)."""
    text = text[:MAX_SCAN]
    mine = langcheck.script_of(target)
    others = [name for name in langcheck.SCRIPTS if name != mine and not (mine == "cjk" and name == "latin")]
    letters = "".join(langcheck.SCRIPTS[name].pattern[1:-1] for name in others)
    passage = re.compile(f"[{letters}]+(?:{_GAP}[{letters}]+)*")
    found = [(m.start(), m.end(), "another script") for m in passage.finditer(text)]
    if found:
        return found
    spans = []
    for a, b in langcheck.window_spans(len(text), cfg.window_chars, cfg.windows):
        got = langcheck.window_language(text[a:b], cfg)  # the filter's own reading of the window
        if got is not None and got[0] != target:
            spans.append((a, b, f"reads as {got[0]}"))
    return spans


def paragraph_spans(text: str, longest: int) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        if end - start > longest:
            spans.append((start, end))
        start = m.end() if m else start
    return spans


def shared_span(text: str, span: str) -> tuple[int, int] | None:
    """Where the words of a normalized span (`matched_span`: lower case, no punctuation) lie in the text."""
    want = span.split()
    if not want:
        return None
    tokens = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    words = [w for _, _, w in tokens]
    for k in range(len(words) - len(want) + 1):
        if words[k : k + len(want)] == want:
            return tokens[k][0], tokens[k + len(want) - 1][1]
    return None


def preset_of(config: dict[str, Any]) -> FilterPreset | None:
    blob = (config.get("options") or {}).get("preset")
    if isinstance(blob, str):
        blob = json.loads(blob)
    try:
        return FilterPreset.model_validate(blob) if isinstance(blob, dict) else None
    except ValueError:
        return None


def describe(part: str, row: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The row view: its fields as shown (the reasoning and the answer apart), marks, and notes."""
    if part == "rejects":
        raw = row.get("raw") or ""
        with contextlib.suppress(ValueError):  # shown pretty when it is JSON at all
            raw = json.dumps(json.loads(raw), ensure_ascii=False, indent=2)
        return {"fields": {"raw": raw}, "marks": [], "notes": {"raw": [row.get("error")]},
                "kind": "reject"}  # fmt: skip
    if row.get("messages") is not None:
        return _conversation(row)
    preset = preset_of(config)
    fields: dict[str, str | None] = {"problem": row.get("problem")}
    notes: dict[str, list[str]] = {}
    marks: list[dict[str, Any]] = []
    if "content" in row:
        reasoning, answer, closed = split_think(row.get("reasoning"), row.get("content") or "")
        if not closed and reasoning is None:  # opened and never closed: all of it is reasoning
            reasoning, answer = (row.get("content") or "").replace("<think>", "", 1), ""
        fields["reasoning"], fields["answer"] = reasoning, answer
        _verdict_marks(row, fields, preset, marks, notes)
    if part == "removed":
        fields["matched_text"] = row.get("matched_text")
        span = row.get("matched_span")
        if span:
            for name in ("problem", "matched_text"):
                where = shared_span(fields[name] or "", span)
                if where:
                    marks.append(_mark(name, *where, "match", "shared with the benchmark"))
    return {"fields": fields, "marks": marks, "notes": notes, "kind": "row"}


def _verdict_marks(row: dict[str, Any], fields: dict[str, Any], preset: FilterPreset | None,
                   marks: list[dict[str, Any]], notes: dict[str, list[str]]) -> None:  # fmt: skip
    reasoning, answer = fields["reasoning"] or "", fields["answer"] or ""
    found = answer_span(answer, row.get("domain"))
    if found:
        start, end, inside = found
        gold = row.get("answer")
        note = f"final answer {inside!r}" + (f"; gold {gold!r}" if gold is not None else "")
        marks.append(_mark("answer", start, end, "answer", note))
    reason = row.get("reject_reason")
    readability = preset.readability if preset else ReadabilityConfig()
    lang_cfg = preset.language if preset else LanguageCheckConfig()
    detail = row.get("reject_detail")
    where = "answer" if reason in ("wrong_answer", "no_answer", "empty") else "reasoning"
    if reason:
        notes.setdefault(where, []).append(f"{reason}: {detail}" if detail else reason)
    if reason == "repetition":
        for name, text in (("reasoning", reasoning), ("answer", answer)):
            spans = repeat_spans(text, readability)
            marks.extend(_mark(name, a, b, "repeat", "repeated") for a, b in spans)
    elif reason in ("language_mix", "language_mismatch"):
        target = row.get("language") or "en"
        for name, text in (("reasoning", reasoning), ("answer", answer)):
            marks.extend(_mark(name, a, b, "foreign", f"not {target}: {why}") for a, b, why in
                         foreign_spans(text, target, lang_cfg))  # fmt: skip
    elif reason == "code_block":
        marks.extend(_mark("reasoning", m.start(), m.end(), "code", "code block") for m in _FENCE.finditer(reasoning))
    elif reason == "long_paragraph" and readability.max_paragraph_chars:
        marks.extend(_mark("reasoning", a, b, "paragraph", f"paragraph of {b - a:,} characters")
                     for a, b in paragraph_spans(reasoning, readability.max_paragraph_chars))  # fmt: skip
    elif reason in ("truncated", "unclosed_think") and reasoning:
        cut = max(0, len(reasoning) - 200)
        marks.append(_mark("reasoning", cut, len(reasoning), "cut", "the trace ends here"))


def _conversation(row: dict[str, Any]) -> dict[str, Any]:
    fields, marks = {}, []
    for k, m in enumerate(row["messages"]):
        text = m.get("content") or ""
        if m["role"] == "assistant" and "</think>" in text:
            reasoning, answer, _ = split_think(None, text)
            fields[f"{k}:assistant:reasoning"] = reasoning
            fields[f"{k}:assistant:answer"] = answer
            boxes = box_spans(answer)
            if boxes:
                marks.append(_mark(f"{k}:assistant:answer", boxes[-1][0], boxes[-1][1], "answer", "final answer"))
        else:
            fields[f"{k}:{m['role']}"] = text
    return {"fields": fields, "marks": marks, "notes": {}, "kind": "conversation"}
