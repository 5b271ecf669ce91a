"""Benchmark files -> prompt rows (`id`, `problem`, `answer`, `tests`, `domain`), from local files only.

The documented schema is the prompt record's: `problem`, `answer` (math: the final answer; science:
the option letter, with the options written into the problem), `tests` (code: JSON stdin/stdout cases
or asserts), `domain` (`math` | `science` | `code`), optional `id`. Files in the usual public layouts
are recognised by their columns and converted:

- AIME 2024 (e.g. HuggingFaceH4/aime_2024): `problem`, `answer` (an integer) -> math;
- MATH-500 (HuggingFaceH4/MATH-500): `problem`, `answer`, `solution`, `unique_id` -> math;
- GPQA-Diamond (Idavidrein/gpqa): `Question`, `Correct Answer`, `Incorrect Answer 1..3` -> science, the
  options shuffled (seeded by the problem) and lettered in the problem, the letter as the answer;
- LiveCodeBench (code_generation_lite): `question_content`, `public_test_cases`, `private_test_cases`
  -> code with stdin/stdout tests.

LiveCodeBench's private tests ship zlib+pickle-compressed; unpickling a downloaded file runs code, so
only tests stored as plain JSON are used (the public ones always are); `functional` (LeetCode-style)
cases are left out: the sandbox runs programs on stdin. Rows say so in `meta`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.config import SourceMapping
from distill.errors import UserError
from distill.prompts.ingest import apply_mapping
from distill.records import stable_id

GPQA = SourceMapping(
    name="gpqa-diamond",
    columns={"Question": "problem"},
    choices=["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"],
    correct_choice="Correct Answer",
    shuffle_choices=True,
    domain="science",
)


def read_table(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise UserError(f"--benchmark {path}: no such file; check the path")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.suffix == ".csv":
            import pyarrow.csv as pc

            return pc.read_csv(path).to_pylist()
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"--benchmark {path}:{n}: not JSON ({e.msg}); fix the line") from None
        return rows
    except UserError:
        raise
    except Exception as e:  # a broken Parquet/CSV file: one line, not a traceback
        raise UserError(f"--benchmark {path}: cannot be read ({str(e).splitlines()[0][:160]})") from None


def detect_layout(columns: set[str]) -> str:
    if "question_content" in columns and "public_test_cases" in columns:
        return "livecodebench"
    if {"Question", "Correct Answer"} <= columns:
        return "gpqa"
    if {"problem", "answer"} <= columns and ({"unique_id", "subject", "level"} & columns):
        return "math500"
    if {"problem", "answer"} <= columns or {"problem", "tests"} <= columns:
        return "schema"
    raise UserError(
        f"benchmark columns {sorted(columns)} match no known layout; give `problem` with `answer` or `tests` "
        "(and `domain`), or an AIME / MATH-500 / GPQA / LiveCodeBench file"
    )


def _lcb_tests(row: dict[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    cases, notes = [], []
    for key in ("public_test_cases", "private_test_cases"):
        raw = row.get(key)
        try:
            loaded = json.loads(raw) if isinstance(raw, str) else (raw or [])
        except json.JSONDecodeError:
            notes.append(f"{key} not plain JSON (compressed): not used")
            continue
        for case in loaded:
            if case.get("testtype", "stdin") != "stdin":
                notes.append("functional cases left out")
                continue
            cases.append({"input": case.get("input", ""), "output": case.get("output", "")})
    return cases, sorted(set(notes))


def to_prompts(path: Path, layout: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(layout, prompt rows) of a benchmark file."""
    rows = read_table(path)
    if not rows:
        raise UserError(f"--benchmark {path}: has no rows")
    layout = layout or detect_layout(set(rows[0]))
    out = []
    for n, row in enumerate(rows):
        if layout == "livecodebench":
            cases, notes = _lcb_tests(row)
            problem = row["question_content"]
            if row.get("starter_code"):
                problem += f"\n\nStarter code:\n```python\n{row['starter_code']}\n```"
            prompt = {"problem": problem, "tests": json.dumps(cases), "domain": "code",
                      "meta": json.dumps({"question_id": row.get("question_id"), "notes": notes})}  # fmt: skip
        elif layout == "gpqa":
            prompt = apply_mapping(row, GPQA)
            prompt = {k: prompt[k] for k in ("problem", "answer", "meta") if k in prompt} | {"domain": "science"}
        else:
            if not isinstance(row.get("problem"), str) or not row["problem"].strip():
                raise UserError(f"--benchmark {path}: row {n} has no `problem`")
            domain = row.get("domain") or ("code" if row.get("tests") and not row.get("answer") else "math")
            tests = row.get("tests")
            prompt = {
                "problem": row["problem"],
                "answer": None if row.get("answer") is None else str(row["answer"]),
                "tests": tests if tests is None or isinstance(tests, str) else json.dumps(tests),
                "domain": domain,
            }
        prompt["id"] = str(
            row.get("id") or row.get("unique_id") or row.get("question_id") or stable_id(prompt["problem"])
        )
        prompt["source"] = path.stem
        out.append(prompt)
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise UserError(f"--benchmark {path}: ids repeat; give each problem its own `id`")
    return layout, out
