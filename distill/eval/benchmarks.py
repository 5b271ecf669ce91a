"""Benchmark files -> prompt rows (`id`, `problem`, `answer`, `tests`, `domain`), from local files only.

The documented schema is the prompt record's: `problem`, `answer` (math: the final answer; science:
the option letter, with the options written into the problem), `tests` (code: JSON stdin/stdout cases
or asserts), `domain` (`math` | `science` | `code`), optional `id`. Files in the usual public layouts
are recognised by their columns (`distill/sources/layouts.py`: the layouts `distill prompts` reads) and converted:

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

from distill.errors import RowError, UserError
from distill.records import stable_id
from distill.sources import layouts
from distill.sources.mapping import apply_mapping


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
    """(layout, prompt rows) of a benchmark file in any known layout (`distill/sources/layouts.py`)."""
    rows = read_table(path)
    if not rows:
        raise UserError(f"--benchmark {path}: has no rows")
    where = f"--benchmark {path}"
    sample = rows[:20]
    columns = list(dict.fromkeys(k for r in sample for k in r))
    if layout is None:
        layout, mapping = layouts.detect(columns, sample, where)
    elif layout in layouts.LAYOUTS:
        mapping = layouts.LAYOUTS[layout].mapping(frozenset(columns), sample)
    else:
        raise UserError(f"{where}: unknown layout {layout!r}; use one of {', '.join(layouts.LAYOUTS)}")
    out = []
    for n, row in enumerate(rows):
        try:
            mapped = apply_mapping(row, mapping)
        except RowError as e:
            raise UserError(f"{where}: row {n}: {e}; fix the row") from None
        problem = mapped.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            raise UserError(f"{where}: row {n} has no problem text")
        tests, meta = mapped.get("tests"), mapped.get("meta")
        if layout == "livecodebench":  # public and plain-JSON private cases, stdin ones only
            cases, notes = _lcb_tests(row)
            tests, meta = cases, {"question_id": row.get("question_id"), "notes": notes}
            if row.get("starter_code"):
                problem += f"\n\nStarter code:\n```python\n{row['starter_code']}\n```"
        prompt = {
            "problem": problem,
            "answer": None if mapped.get("answer") is None else str(mapped["answer"]),
            "tests": tests if tests is None or isinstance(tests, str) else json.dumps(tests),
            "domain": mapped.get("domain") or ("code" if tests and mapped.get("answer") is None else "math"),
        }
        if meta:
            prompt["meta"] = meta if isinstance(meta, str) else json.dumps(meta, ensure_ascii=False)
        prompt["id"] = str(
            row.get("id") or row.get("unique_id") or row.get("question_id") or stable_id(prompt["problem"])
        )
        prompt["source"] = path.stem
        out.append(prompt)
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise UserError(f"--benchmark {path}: ids repeat; give each problem its own `id`")
    return layout, out


def published_benchmark(path: Path, layout: str) -> str | None:
    """Which benchmark with published R1-Distill scores (`--compare`) a file is, if any."""
    if layout == "gpqa":
        return "gpqa_diamond"
    if layout == "livecodebench":
        return "livecodebench"
    name = path.name.lower().replace("-", "").replace("_", "")
    if "math500" in name:
        return "math500"
    if "aime" in name:
        return "aime24"
    return None
