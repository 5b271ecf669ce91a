"""Known layouts of public prompt and benchmark files, recognised by their columns: no config needed.

Public data sets name their columns their own way: GSM8K has `question` and a worked `answer` ending in
`#### 72`, MATH and NuminaMath a `problem` and a `solution` ending in `\\boxed{...}`, MMLU a list of
`choices` and the index of the right one, GPQA the right option and three wrong ones, LiveCodeBench
`question_content` and stdin/stdout cases, chat sets `messages`. Each layout here is a `SourceMapping`
(the same rules a user writes in a config) plus the test that recognises it from a file's columns and
its first rows. Every place that reads a source (`distill prompts`, `--decontaminate` benchmarks,
`distill eval` benchmarks) goes through `detect`, so a file in a known layout reads the same way in all
of them, and an explicit mapping still wins.

A file whose columns match no layout is not read row by row into a heap of rejects: `detect` raises one
line that names the columns it saw and the mapping that would read them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from distill.errors import UserError
from distill.sources.mapping import SourceMapping

M = TypeVar("M")
Rows = Sequence[dict[str, Any]]

# Column names a problem or an answer goes by in public sets (the first one found wins).
QUESTION_NAMES = ("question", "Question", "Problem", "prompt", "query", "input", "instruction")
ANSWER_NAMES = ("answer", "Answer", "final_answer", "Final Answer")
SOLUTION_NAMES = ("solution", "Solution")
CHOICE_LISTS = ("choices", "options")
CHOICE_ANSWERS = ("answer", "answerKey", "label", "correct")
OPTION_LETTERS = "ABCDEFGHIJ"
GPQA_OPTIONS = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]


@dataclass(frozen=True)
class Layout(Generic[M]):
    """A known layout: prompt layouts give a `SourceMapping`, trace layouts (trace_layouts.py) a `TraceMapping`."""

    name: str
    what: str  # one line for the report: what was recognised and what it becomes
    recognise: Callable[[frozenset[str], Rows], M | None]  # the mapping, or None if not this layout

    def mapping(self, columns: frozenset[str], rows: Rows = ()) -> M:
        m = self.recognise(columns, rows)
        if m is None:
            raise UserError(f"layout {self.name!r} does not fit columns {', '.join(sorted(columns))}")
        return m


def _first(columns: frozenset[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in columns), None)


def _values(rows: Rows, column: str) -> list[Any]:
    return [r.get(column) for r in rows if r.get(column) is not None]


def _gpqa(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    if "Question" not in cols or not set(GPQA_OPTIONS) <= cols:
        return None
    return SourceMapping(
        columns={"Question": "problem"},
        choices=GPQA_OPTIONS,
        correct_choice="Correct Answer",
        shuffle_choices=True,  # the right answer is always first in the file; seeded by the problem
        domain="science",
    )


def _livecodebench(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    if not {"question_content", "public_test_cases"} <= cols:
        return None
    return SourceMapping(columns={"question_content": "problem", "public_test_cases": "tests"}, domain="code")


def _apps(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    # APPS / TACO: `input_output` is JSON text {"inputs": [...], "outputs": [...]}.
    question = _first(cols, ("question", "problem"))
    if question is None or "input_output" not in cols:
        return None
    return SourceMapping(columns={question: "problem", "input_output": "tests"}, domain="code")


def _multiple_choice(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    question = _first(cols, ("problem", *QUESTION_NAMES))
    options = _first(cols, CHOICE_LISTS)
    answer = _first(cols, CHOICE_ANSWERS)
    if question is None or options is None or answer is None:
        return None
    return SourceMapping(columns={question: "problem", answer: "answer"}, choices=options, domain="science")


def _option_columns(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    question = _first(cols, ("problem", *QUESTION_NAMES))
    answer = _first(cols, CHOICE_ANSWERS)
    letters = [c for c in OPTION_LETTERS if c in cols]
    if question is None or answer is None or letters[:4] != list("ABCD") or "".join(letters) not in OPTION_LETTERS:
        return None
    return SourceMapping(columns={question: "problem", answer: "answer"}, choices=letters, domain="science")


def _code_tests(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    if "problem" not in cols or "tests" not in cols:
        return None
    return SourceMapping(domain="code")


def _gsm8k(cols: frozenset[str], rows: Rows) -> SourceMapping | None:
    question = _first(cols, QUESTION_NAMES)
    if question is None or "answer" not in cols:
        return None
    answers = [a for a in _values(rows, "answer") if isinstance(a, str)]
    if not answers or sum("####" in a for a in answers) < len(answers) / 2:
        return None
    return SourceMapping(columns={question: "problem"}, answer_after="####", domain="math")


def _problem_answer(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    if "problem" not in cols or "answer" not in cols:
        return None
    # A problem with a ground-truth answer is checked by the math verifier unless the row says otherwise.
    return SourceMapping(domain="math")


def _math_solution(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    problem = _first(cols, ("problem", *QUESTION_NAMES))
    solution = _first(cols, SOLUTION_NAMES)
    if problem is None or solution is None or _first(cols, ANSWER_NAMES) is not None:
        return None
    return SourceMapping(columns={problem: "problem", solution: "answer"}, answer_from_boxed=True, domain="math")


def _question_answer(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    question = _first(cols, QUESTION_NAMES)
    answer = _first(cols, ANSWER_NAMES)
    if question is None or answer is None or "problem" in cols:
        return None
    return SourceMapping(columns={question: "problem", answer: "answer"}, domain="math")


def _chat(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    turns = _first(cols, ("messages", "conversations"))
    if turns is None or "problem" in cols:
        return None
    return SourceMapping(messages=turns, domain="general")


def _problem_only(cols: frozenset[str], _rows: Rows) -> SourceMapping | None:
    if "problem" not in cols:
        return None
    return SourceMapping()  # the prompt record's own columns; rows without `domain` are `general`


# In order: the first layout that recognises a file's columns is its layout (more specific ones first).
LAYOUTS: dict[str, Layout[SourceMapping]] = {
    layout.name: layout
    for layout in (
        Layout("gpqa", "GPQA: Question + Correct Answer + 3 Incorrect -> shuffled lettered options", _gpqa),
        Layout("livecodebench", "LiveCodeBench: question_content + public_test_cases -> code", _livecodebench),
        Layout("apps", "APPS/TACO: question + input_output -> code", _apps),
        Layout("multiple-choice", "question + choices list + answer (index, letter, text) -> letter", _multiple_choice),
        Layout("option-columns", "question + columns A, B, C, D... + answer letter -> letter", _option_columns),
        Layout("code-tests", "problem + stdin/stdout tests -> code", _code_tests),
        Layout("gsm8k", "GSM8K: question + worked answer ending '#### n' -> answer n", _gsm8k),
        Layout("problem-answer", "problem + answer (MATH, AIME, prompts) -> math unless `domain`", _problem_answer),
        Layout("math-solution", "problem + worked solution (NuminaMath) -> last \\boxed{} as answer", _math_solution),
        Layout("question-answer", "question + answer -> math unless `domain`", _question_answer),
        Layout("chat", "messages / conversations -> the user turn as the problem, general", _chat),
        Layout("problem-only", "problem with no answer -> general (no verifier)", _problem_only),
    )
}  # fmt: skip


def unrecognised(cols: frozenset[str], rows: Rows) -> str:
    """The one line for a file no layout recognises: what it has and the mapping that would read it."""
    texts = {c: _values(rows, c) for c in sorted(cols)}
    strings = {c: v for c, v in texts.items() if v and all(isinstance(x, str) for x in v)}
    # The longest text column is most likely the problem; an answer-like name is most likely the answer.
    problem = max(strings, key=lambda c: sum(map(len, strings[c])) / len(strings[c]), default=None)
    answer_like = ("answer", "label", "target", "output", "solution", "response", "gold", "final")
    answer = next((c for c in sorted(cols - {problem}) if any(a in c.lower() for a in answer_like)), None)
    suggestion = {problem or "<problem column>": "problem", **({answer: "answer"} if answer else {})}
    pairs = ", ".join(f"{k}: {v}" for k, v in suggestion.items())
    return (
        f"columns {', '.join(sorted(cols)) or '(none)'} match no known layout ({', '.join(LAYOUTS)}); "
        f"map them in a --config: `sources: [{{match: ..., columns: {{{pairs}}}}}]` "
        "(keys: columns, answer_from_boxed, answer_after, choices, messages, domain; README, 'Prompts')"
    )


def _reads_as_is(m: SourceMapping, columns: Sequence[str]) -> bool:
    """The mapping changes nothing for this file: it is read as prompt records (the fast columnar path)."""
    rules = (m.columns, m.answer_from_boxed, m.answer_after, m.choices, m.messages, m.name)
    defaults = (m.domain is None or "domain" in columns) and (m.language is None or "language" in columns)
    return not any(rules) and defaults


@dataclass(frozen=True)
class Layouts(Generic[M]):
    """A list of known layouts and what reading by them means: the prompt layouts here, the trace layouts in
    `distill/sources/trace_layouts.py`. One detector, one way an explicit mapping wins, one report per file."""

    table: dict[str, Any]  # name -> a layout with `name`, `what`, `recognise(columns, rows)` and `mapping(...)`
    unrecognised: Callable[[frozenset[str], Rows], str]  # the one line for a file no layout recognises
    reads_as_is: Callable[[M, Sequence[str]], bool]  # the mapping changes nothing: the record's own columns
    # the records whose dataset-directory shards are read as is (written by a stage), and the layout name to report
    own: tuple[frozenset[str], str] | None = None

    def detect(self, columns: Sequence[str], rows: Rows, where: str) -> tuple[str, M]:
        """(layout name, mapping) for a file with these columns and first rows; a `UserError` when none fits."""
        cols = frozenset(columns)
        for layout in self.table.values():
            if (m := layout.recognise(cols, rows)) is not None:
                return layout.name, m
        raise UserError(f"{where}: {self.unrecognised(cols, rows)}")

    def resolve(self, mapping: M, columns: Sequence[str], rows: Rows) -> M:
        """An explicit mapping that names a `layout`: that layout's rules, with the mapping's own name, domain
        and language on top."""
        if mapping.layout is None:  # type: ignore[attr-defined]
            return mapping
        base = self.table[mapping.layout].mapping(frozenset(columns), rows)  # type: ignore[attr-defined]
        given = mapping.model_fields_set  # type: ignore[attr-defined]
        overrides = {k: getattr(mapping, k) for k in ("match", "name", "domain", "language") if k in given}
        return base.model_copy(update={**overrides, "layout": mapping.layout})  # type: ignore[attr-defined]


def _near(path: str) -> str:
    """A path as the user would type it here: relative to the working folder when it is close by (an option
    resolved against it, `../shared/x.jsonl`, comes back as given), else as recorded."""
    if not os.path.isabs(path):
        return path
    try:
        near = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return near if Path(near).parts[:3].count("..") < 3 else path


def report_lines(found: Sequence[dict[str, Any]], table: dict[str, Any], kind: str = "layout") -> list[str]:
    """`KIND  PATH: NAME (what it is)` per input file, as a manifest records them (`path`, `layout`); many files of
    one folder in one layout (a dataset directory's shards) are one line."""
    groups = Counter((str(Path(f["path"]).parent), f["layout"]) for f in found)
    shown, lines = set(), []
    for f in found:
        key = folder, name = str(Path(f["path"]).parent), f["layout"]
        many = groups[key] > 3
        if many and key in shown:
            continue
        shown.add(key)
        where = f"{_near(folder)}/ ({groups[key]:,} files)" if many else _near(f["path"])
        known = table.get(name)
        lines.append(f"{kind}  {where}: {name} ({known.what if known else 'a --config mapping'})")
    return lines


PROMPT_LAYOUTS: Layouts[SourceMapping] = Layouts(LAYOUTS, unrecognised, _reads_as_is)
detect, resolve = PROMPT_LAYOUTS.detect, PROMPT_LAYOUTS.resolve


def check_names(mappings: Sequence[Any], table: dict[str, Any], kind: str = "layout") -> None:
    """A `ValueError` naming the first mapping whose `layout` is not in `table`: the options that hold mappings
    call it from their validators (the mapping models sit below the layouts made of them)."""
    for i, m in enumerate(mappings):
        if m.layout is not None and m.layout not in table:
            raise ValueError(f"[{i}].layout: unknown {kind} {m.layout!r}; use one of {', '.join(table)}")
