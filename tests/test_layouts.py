"""Known source layouts (`distill/sources/layouts.py`): recognised from the columns, read without a config, reported;
an explicit mapping wins; a file no layout fits stops with one line (exit 2) and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.errors import UserError
from distill.prompts.config import PromptsConfig
from distill.sources.layouts import detect
from distill.sources.mapping import SourceMapping
from tests.conftest import curate, read_rejects, read_rows, run_cli, write_jsonl

SOURCES = {
    "mmlu": [{"question": "Which planet is largest?", "subject": "astronomy",
              "choices": ["Mars", "Jupiter", "Venus", "Earth"], "answer": 1}],
    "arc": [{"question": "Which is a mammal?", "answerKey": "B",
             "choices": {"text": ["Trout", "Whale", "Crow"], "label": ["A", "B", "C"]}}],
    "letters": [{"question": "2 + 2 = ?", "A": "3", "B": "4", "C": "5", "D": "6", "answer": "B"}],
    "gpqa": [{"Question": "Which is a noble gas?", "Correct Answer": "Neon", "Incorrect Answer 1": "Iron",
              "Incorrect Answer 2": "Carbon", "Incorrect Answer 3": "Sodium"}],
    "numina": [{"problem": "Find x if 2x = 6.", "solution": "Divide: $x = \\boxed{3}$.", "source": "amc",
                "messages": [{"role": "user", "content": "Find x if 2x = 6."}]}],
    "gsm8k": [{"question": "Tom has 1,000 apples and buys 80 more. How many?", "answer": "1000+80=1080\n#### 1,080"},
              {"question": "No marker here?", "answer": "42"}],
    "kaggle_aime": [{"ID": "1983-1", "Year": 1983, "Problem Number": 1, "Question": "Find w.", "Answer": 60}],
    "chat": [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."},
                           {"role": "assistant", "content": "Hi."}]},
             {"messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "1"},
                           {"role": "user", "content": "Two"}]}],
    "sharegpt": [{"conversations": [{"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "7"}]}],
    "lcb": [{"question_id": "q1", "question_content": "Read n, print n+1.",
             "public_test_cases": json.dumps([{"input": "1\n", "output": "2\n", "testtype": "stdin"}])}],
    "apps": [{"question": "Print a + b.", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})}],
    "stdio": [{"problem": "Print 1.", "tests": [{"input": "", "output": "1\n"}]}],
    "bare": [{"problem": "Write a haiku about autumn."}],
}  # fmt: skip
EXPECTED = {
    "mmlu": "multiple-choice", "arc": "multiple-choice", "letters": "option-columns", "gpqa": "gpqa",
    "numina": "math-solution", "gsm8k": "gsm8k", "kaggle_aime": "question-answer", "chat": "chat",
    "sharegpt": "chat", "lcb": "livecodebench", "apps": "apps", "stdio": "code-tests", "bare": "problem-only",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_layout_is_recognised_by_its_columns(name: str) -> None:
    rows = SOURCES[name]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    assert detect(columns, rows, name)[0] == EXPECTED[name]


def test_every_layout_reads_into_prompt_rows_without_a_config(tmp_path: Path) -> None:
    files = [str(write_jsonl(tmp_path / "in" / f"{name}.jsonl", rows)) for name, rows in SOURCES.items()]
    out = tmp_path / "out"
    result = curate(files, out, PromptsConfig(), workers=1, show_progress=False)
    rows = {r["source"]: r for r in read_rows(out)}
    assert rows["mmlu"]["answer"] == "B" and "B) Jupiter" in rows["mmlu"]["problem"]
    assert rows["mmlu"]["domain"] == "science"
    assert rows["arc"]["answer"] == "B" and "B) Whale" in rows["arc"]["problem"]
    assert rows["letters"]["answer"] == "B" and "D) 6" in rows["letters"]["problem"]
    letter = rows["gpqa"]["answer"]
    assert f"{letter}) Neon" in rows["gpqa"]["problem"]
    numina = rows["amc"]  # NuminaMath's own `source` column names its sub-source
    assert (
        numina["answer"] == "3" and numina["domain"] == "math" and json.loads(numina["meta"])["solution"].endswith("$.")
    )
    assert rows["gsm8k"]["answer"] == "1080" and rows["gsm8k"]["problem"].startswith("Tom has")
    assert rows["kaggle_aime"]["answer"] == "60" and rows["kaggle_aime"]["problem"] == "Find w."
    assert rows["chat"]["problem"] == "Say hi." and rows["chat"]["domain"] == "general"
    meta = json.loads(rows["chat"]["meta"])
    assert meta["system_turn"] == "Be brief." and meta["assistant_turn"] == "Hi."
    assert rows["sharegpt"]["problem"] == "Name a prime."
    assert json.loads(rows["lcb"]["tests"])[0]["output"] == "2\n" and rows["lcb"]["domain"] == "code"
    assert json.loads(rows["apps"]["tests"])["inputs"] == ["1 2\n"] and rows["apps"]["domain"] == "code"
    assert rows["stdio"]["domain"] == "code" and json.loads(rows["stdio"]["tests"])[0]["output"] == "1\n"
    assert rows["bare"]["domain"] == "general" and rows["bare"]["answer"] is None
    # Rows a layout cannot read are rejects with the reason; the rest of their file goes through.
    reasons = sorted(r["error"].split(":")[0] for r in read_rejects(out))
    assert reasons == ["bad_value", "no_answer"]  # a second user turn; a GSM8K answer with no '####'
    layouts = {Path(s["path"]).stem: s["layout"] for s in result.manifest.stats["report"]["sources"]}
    assert layouts == EXPECTED


def test_an_explicit_mapping_wins_and_can_name_a_layout(tmp_path: Path) -> None:
    rows = [{"question": "What is 6 * 7?", "answer": "42"}]  # question + answer: read as math QA by default
    inp = str(write_jsonl(tmp_path / "qa.jsonl", rows))
    cfg = PromptsConfig(sources=[SourceMapping(match="qa.jsonl", columns={"question": "problem"}, domain="general")])
    curate([inp], tmp_path / "a", cfg, workers=1, show_progress=False)
    assert read_rows(tmp_path / "a")[0]["domain"] == "general"
    cfg = PromptsConfig(sources=[SourceMapping(match="*.jsonl", layout="question-answer", name="facts")])
    result = curate([inp], tmp_path / "b", cfg, workers=1, show_progress=False)
    [row] = read_rows(tmp_path / "b")
    assert row["source"] == "facts" and row["problem"] == "What is 6 * 7?" and row["domain"] == "math"
    assert result.manifest.stats["report"]["sources"][0]["layout"] == "question-answer"
    with pytest.raises(ValueError, match="unknown layout"):
        PromptsConfig(sources=[SourceMapping(layout="alpaca")])
    with pytest.raises(ValueError, match="drop columns"):
        SourceMapping(layout="gsm8k", columns={"q": "problem"})


def test_an_unknown_layout_stops_with_one_line_naming_the_columns_and_the_mapping(tmp_path: Path) -> None:
    rows = [{"text": "A long problem statement about trains leaving stations at dawn.", "label": "7"}] * 3
    inp = write_jsonl(tmp_path / "mystery.jsonl", rows)
    out = tmp_path / "out"
    r = run_cli("prompts", "--input", str(inp), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "mystery.jsonl" in line and "columns label, text match no known layout" in line
    assert "columns: {text: problem, label: answer}" in line
    assert not out.exists()
    with pytest.raises(UserError, match="match no known layout"):
        detect(["title", "body"], [{"title": "x", "body": "y"}], "x.jsonl")
