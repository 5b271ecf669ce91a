"""The non-reasoning part of R1's SFT set (~200K rows: writing, factual QA, self-cognition, translation).

R1 "adopt[ed] the DeepSeek-V3 pipeline and reuse[d] portions of the SFT dataset of DeepSeek-V3. For certain
non-reasoning tasks, we call DeepSeek-V3 to generate a potential chain-of-thought before answering the
question by prompting. However, for simpler queries, such as 'hello' we do not provide a CoT in response."

Two batch functions for pipeline steps (pipelines/non-reasoning.yaml):
- `route`: which prompts get a short chain of thought, by a rule written in the step's options (the task
  of the row, and a trivial-query test: short, or matching a greeting pattern); one step keeps the
  `cot` rows, another the `none` rows, and each goes to its own teacher configuration;
- `self_cognition`: "who are you" rows from templates, with the student's name and maker filled in.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any, Literal

import pyarrow as pa

from distill.errors import UserError
from distill.records import stable_id

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SELF_COGNITION = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("domain", pa.string()), ("problem", pa.large_string()),
    ("content", pa.large_string()), ("language", pa.string()),
])  # fmt: skip


@cache
def _patterns(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise UserError(f"route: trivial_patterns: not a regular expression ({e})") from None


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(row.get("meta") or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def wants_cot(problem: str, task: str | None, cot_tasks: list[str], trivial_max_chars: int,
              trivial_patterns: list[re.Pattern[str]]) -> bool:  # fmt: skip
    """R1's rule: a chain of thought for the tasks that benefit, never for a trivial query ("hello")."""
    text = problem.strip()
    if len(text) <= trivial_max_chars or any(p.search(text) for p in trivial_patterns):
        return False
    return task in cot_tasks


def route(
    batch: pa.RecordBatch,
    want: Literal["cot", "none"],
    cot_tasks: list[str],
    trivial_max_chars: int = 24,
    trivial_patterns: list[str] | None = None,
    task_key: str = "task",
    answer_language_key: str = "target_language",
) -> pa.Table:
    """The prompt rows whose route is `want`. A row's task is `meta[task_key]` (else its `source`); a row
    with `meta[answer_language_key]` (a translation) gets that as its `language`, the language its answer
    must be in for the language filter."""
    if want not in ("cot", "none"):
        raise UserError(f"route: want is {want!r}; use cot or none")
    patterns = _patterns(tuple(trivial_patterns or []))
    rows = batch.to_pylist()
    keep = []
    for r in rows:
        meta = _meta(r)
        task = meta.get(task_key) or r.get("source")
        cot = wants_cot(r["problem"], task, cot_tasks, trivial_max_chars, patterns)
        if cot == (want == "cot"):
            if meta.get(answer_language_key):
                r["language"] = meta[answer_language_key]
            keep.append(r)
    return pa.Table.from_pylist(keep, schema=batch.schema)


def self_cognition(batch: pa.RecordBatch, name: str, maker: str) -> pa.Table:
    """Template rows (`problem`, `content` with {name} and {maker}, optional `language`) filled in for one
    student; the rows the mix takes as they are (no reasoning: an empty think block)."""
    values = {"name": name, "maker": maker}
    out = []
    for r in batch.to_pylist():
        filled = {}
        for key in ("problem", "content"):
            text = r.get(key)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"a self-cognition template needs a non-empty `{key}`")
            unknown = set(_PLACEHOLDER.findall(text)) - set(values)
            if unknown:
                raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; the templates can use {{name}}, "
                                 "{maker}")  # fmt: skip
            filled[key] = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
        out.append({"id": stable_id(filled["problem"] + "\x1f" + filled["content"]), "source": "self-cognition",
                    "domain": "general", "problem": filled["problem"], "content": filled["content"],
                    "language": r.get("language")})  # fmt: skip
    return pa.Table.from_pylist(out, schema=_SELF_COGNITION)
