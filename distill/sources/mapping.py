"""Column mappings: how to read a source whose columns are not the record's (the known layouts are mappings too).

A mapping (`SourceMapping`; `TraceMapping` for trace files) renames columns, pulls the final `\\boxed{}` answer out of a
worked solution, and turns a list of options into a lettered multiple-choice problem. It runs on each
row before the row is validated, so a row it cannot map becomes a reject with the reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import random
import re
from typing import Any

from pydantic import Field, model_validator

from distill.config import StrictModel
from distill.errors import RowError


class SourceMapping(StrictModel):
    """How to read one kind of source whose columns differ from the prompt record.

    Either `layout` (a known layout by name, `distill/sources/layouts.py`; files in a known layout need no mapping
    at all, this only picks one where the columns alone are ambiguous) or the column rules below.
    """

    match: str = Field(default="*", description="glob on the input path or file name; the first match applies")
    layout: str | None = Field(default=None, description="a known layout by name (e.g. gsm8k, math-solution)")
    name: str | None = Field(default=None, description="`source` of these rows; default: the file's name")
    columns: dict[str, str] = Field(default_factory=dict, description="source column -> prompt column")
    answer_from_boxed: bool = Field(
        default=False, description="`answer` holds a worked solution: keep its last \\boxed{} as the answer"
    )
    answer_after: str | None = Field(
        default=None, description="`answer` holds a worked solution: the answer is the text after this marker"
    )
    choices: str | list[str] | None = Field(
        default=None, description="a column holding a list of options, or the columns that each hold one"
    )
    correct_choice: str | None = Field(default=None, description="with a list of option columns: the right one")
    shuffle_choices: bool = Field(default=False, description="shuffle options (seeded by the problem)")
    messages: str | None = Field(
        default=None,
        description="a column of chat turns ({role, content} or {from, value}): the user turn is the problem",
    )
    domain: str | None = None
    language: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SourceMapping:
        if self.correct_choice is not None and (
            not isinstance(self.choices, list) or self.correct_choice not in self.choices
        ):
            raise ValueError("correct_choice must be one of the columns listed in `choices`")
        if self.answer_from_boxed and self.answer_after is not None:
            raise ValueError("give either answer_from_boxed or answer_after, not both")
        if self.layout is not None:
            rules = ("columns", "answer_from_boxed", "answer_after", "choices", "correct_choice", "messages")
            if given := [k for k in rules if k in self.model_fields_set]:
                raise ValueError(f"`layout` already says how to read the columns; drop {', '.join(given)}")
        return self


class TraceMapping(StrictModel):
    """How to read one kind of trace file whose columns differ from the trace record.

    Either `layout` (a known trace layout by name, `distill/sources/trace_layouts.py`; files in a known layout need
    no mapping at all) or the column rules below. The reply comes from exactly one of: `generations` (a list,
    one trace per element), `reasoning` + `content`, `response` (think block inline, or opened in the prompt),
    or the last assistant turn of `messages`. Columns no rule names are kept in `meta`.
    """

    match: str = Field(default="*", description="glob on the input path or file name; the first match applies")
    layout: str | None = Field(default=None, description="a known trace layout by name (e.g. openr1-math, s1k)")
    name: str | None = Field(default=None, description="`source` of these rows; default: the file's name")
    columns: dict[str, str] = Field(default_factory=dict, description="renames applied first: column -> column")
    problem: str | None = Field(default=None, description="column of the problem (default: from `messages`)")
    prompt: str | None = Field(default=None, description="column of the user turn exactly as the teacher got it")
    response: str | None = Field(default=None, description="column of the whole reply, think block inline")
    reasoning: str | None = Field(default=None, description="column of the thinking (a list is joined)")
    content: str | None = Field(default=None, description="column of the answer after the thinking")
    generations: str | None = Field(default=None, description="a list column: one trace per element")
    choices: str | None = Field(
        default=None,
        description="an OpenAI-style reply's `choices` ({message: {content, reasoning_content}, "
        "finish_reason}): one trace each",
    )
    messages: str | None = Field(
        default=None,
        description="chat turns ({role, content} or {from, value}): user -> problem, last assistant -> trace",
    )
    system: str | None = Field(default=None, description="column of a system prompt (kept in meta)")
    answer: str | None = Field(default=None, description="column of the gold answer")
    answer_from_solution: bool = Field(
        default=False, description="`answer` is a worked solution: its last \\boxed{}, or the text when it is short"
    )
    answer_after: str | None = Field(default=None, description="`answer` is worked: the answer follows this marker")
    tests: str | None = Field(default=None, description="column of code tests (JSON)")
    labels: list[str] = Field(
        default_factory=list, description="columns of the publisher's own verdict (bool, yes/no; lists per generation)"
    )
    finish_reason: str | None = Field(default=None, description="column of the finish reason (a list per generation)")
    teacher: str | None = Field(default=None, description="column naming the model that wrote the trace")
    sample: str | None = Field(default=None, description="column of the sample index (default: position, else 0)")
    aligned: list[str] = Field(
        default_factory=list, description="other list columns aligned with `generations`: element k goes to meta"
    )
    drop: list[str] = Field(default_factory=list, description="columns that only copy others (not kept in meta)")
    domain: str | None = Field(default=None, description="domain of rows that have none")
    language: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TraceMapping:
        if self.layout is not None:
            rules = set(self.model_fields_set) - {"match", "layout", "name", "domain", "language"}
            if rules:
                raise ValueError(f"`layout` already says how to read the columns; drop {', '.join(sorted(rules))}")
        if self.answer_from_solution and self.answer_after is not None:
            raise ValueError("give either answer_from_solution or answer_after, not both")
        return self


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mapping_for(path: str, mappings: list[Any]) -> Any:
    """The first mapping (a `SourceMapping` or `TraceMapping`) whose `match` glob fits the path or file name."""
    name = path.rsplit("/", 1)[-1]
    for m in mappings:
        if fnmatch.fnmatch(path, m.match) or fnmatch.fnmatch(name, m.match):
            return m
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def apply_mapping(row: dict[str, Any], m: SourceMapping) -> dict[str, Any]:
    out = dict(row)
    if m.messages is not None:
        _user_turn(out, m.messages)
    for src, dst in m.columns.items():
        if src in out:
            out[dst] = out.pop(src)
    if m.answer_from_boxed and isinstance(out.get("answer"), str):
        boxed = last_boxed(out["answer"])
        if boxed is None:
            raise RowError("no_answer", "the solution mapped to 'answer' has no \\boxed{} answer")
        out.setdefault("meta_solution", out["answer"])
        out["answer"] = boxed
    if m.answer_after is not None and isinstance(out.get("answer"), str):
        out.setdefault("meta_solution", out["answer"])
        out["answer"] = answer_after(out["answer"], m.answer_after)
    if m.choices is not None:
        _letter_choices(out, m)
    if m.name is not None:
        out["source"] = m.name
    for key in ("domain", "language"):
        if getattr(m, key) is not None and out.get(key) is None:
            out[key] = getattr(m, key)
    if "meta_solution" in out:  # keep the worked solution, out of the way of the record's columns
        meta = out.get("meta") if isinstance(out.get("meta"), dict) else {}
        out["meta"] = {**meta, "solution": out.pop("meta_solution")}
    return out


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def answer_after(text: str, marker: str) -> str:
    """The final answer written after `marker` (GSM8K: '#### 1,080' -> '1080'): thousands separators go,
    since "1,080" would otherwise read as a pair of numbers."""
    at = text.rfind(marker)
    if at < 0:
        raise RowError("no_answer", f"the solution mapped to 'answer' has no {marker!r} line")
    tail = text[at + len(marker) :].strip()
    answer = tail.splitlines()[0].strip() if tail else ""
    if not answer:
        raise RowError("no_answer", f"nothing follows {marker!r} in the solution mapped to 'answer'")
    return answer.replace(",", "") if _THOUSANDS.fullmatch(answer) else answer


def _user_turn(row: dict[str, Any], column: str) -> None:
    """A chat row's single user turn becomes `problem`; a system turn and a reference reply go to meta."""
    turns = row.pop(column, None)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise RowError("wrong_type", f"column '{column}' must be a list of chat turns")
    # {role, content} (OpenAI) or {from, value} (ShareGPT: human / gpt / system)
    roles = {"human": "user", "gpt": "assistant"}
    pairs = [(roles.get(t.get("role", t.get("from")), t.get("role", t.get("from"))), t.get("content", t.get("value")))
             for t in turns]  # fmt: skip
    users = [c for r, c in pairs if r == "user"]
    if len(users) != 1 or not isinstance(users[0], str):
        raise RowError("bad_value", f"column '{column}' has {len(users)} user turns; a prompt is one user turn")
    row["problem"] = users[0]
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    extra = {f"{r}_turn": c for r, c in pairs if r in ("system", "assistant") and isinstance(c, str)}
    row["meta"] = {**meta, **extra}


def _letter_choices(row: dict[str, Any], m: SourceMapping) -> None:
    """`problem` + "A) ... B) ..." and `answer` as the letter of the right option."""
    if isinstance(m.choices, str):
        options = row.pop(m.choices, None)
        if isinstance(options, dict) and isinstance(options.get("text"), list):  # ARC: {text: [...], label: [...]}
            labels = options.get("label")
            if isinstance(labels, list) and row.get("answer") in labels:
                row["answer"] = labels.index(row["answer"])
            options = options["text"]
        if not isinstance(options, list) or not all(isinstance(o, str | int | float) for o in options):
            raise RowError("wrong_type", f"column '{m.choices}' must be a list of options")
    else:
        options = [row.pop(c, None) for c in m.choices]
        if any(o is None for o in options):
            raise RowError("missing_field", f"an option column of {m.choices} is missing or null")
    options = [str(o).strip() for o in options]
    if not 2 <= len(options) <= len(LETTERS):
        raise RowError("bad_value", f"{len(options)} options; multiple choice needs 2 to {len(LETTERS)}")
    if m.correct_choice is not None:  # e.g. GPQA: "Correct Answer" beside "Incorrect Answer 1..3"
        right = list(m.choices).index(m.correct_choice)
    else:
        right = _right_option(row.get("answer"), options)
    if m.shuffle_choices:
        # Seeded by the problem, so the same row always gets the same order (stable ids, resumable runs).
        seed = int.from_bytes(hashlib.sha256(str(row.get("problem")).encode()).digest()[:8], "big")
        order = list(range(len(options)))
        random.Random(seed).shuffle(order)
        options = [options[k] for k in order]
        right = order.index(right)
    problem = row.get("problem")
    if not isinstance(problem, str):
        raise RowError("missing_field", "column 'problem' is missing or not a string")
    lettered = "\n".join(f"{LETTERS[k]}) {o}" for k, o in enumerate(options))
    row["problem"] = f"{problem.rstrip()}\n\n{lettered}"
    row["answer"] = LETTERS[right]
    row.setdefault("domain", "science")
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    row["meta"] = {**meta, "choices": json.dumps(options, ensure_ascii=False)}


def _right_option(answer: Any, options: list[str]) -> int:
    """Which option the answer names: its index, its letter, or its text."""
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        return answer
    if isinstance(answer, str):
        a = answer.strip()
        if len(a) == 1 and a.upper() in LETTERS[: len(options)]:
            return LETTERS.index(a.upper())
        if a in options:
            return options.index(a)
    raise RowError("bad_value", f"answer {answer!r} is not an option's index, letter or text")
