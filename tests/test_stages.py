"""A stage is declared once (distill/stages.py) and everything else comes from that declaration.

The Must-show of issue 18: a team's stage in one file, named in DISTILL_STAGES and nothing else, gets its
`distill NAME` command, its pipeline step, its line in `distill run --dry-run` and in the closing report,
and its section in `distill inspect`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distill import stages
from tests.conftest import read_rows, run_cli, write_jsonl

# The whole of a team's stage: options, the batch function, the run, the plan line, the report line.
WORDCOUNT = '''
"""Count the words of each prompt; drop prompts shorter than min_words."""
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from distill.config import StrictModel
from distill.executor import MapStage, run_map_stage
from distill.sources.inputs import count_rows
from distill.stages import Flow, Stage, register


class Options(StrictModel):
    column: str = Field(default="problem", description="The text column whose words are counted")
    min_words: int = Field(default=0, ge=0, description="Drop rows with fewer words")


def count(batch: pa.RecordBatch, column: str, min_words: int) -> pa.Table:
    words = pc.list_value_length(pc.utf8_split_whitespace(batch.column(column)))
    table = pa.Table.from_batches([batch]).append_column("words", words)
    return table.filter(pc.greater_equal(table.column("words"), min_words))


def run(ctx):
    o = ctx.options
    step = MapStage("wordcount", "wordcount_stage:count", {"column": o.column, "min_words": o.min_words})
    return run_map_stage(step, ctx)


def plan(p):
    rows = count_rows(p.inputs) or 0
    return Flow(rows, 20, f"words of {rows:,.0f} rows, at least {p.options.min_words}")


def report(result, out):
    return f"counted words of {result.manifest.rows:,} prompts -> {out}"


def inspect(reader, console, limit):
    words = sum(pc.sum(b.column("words")).as_py() or 0 for b in reader.iter_batches(columns=["words"]))
    console.print(f"wordcount: {words:,} words in all")


register(Stage(name="wordcount", help="Count the words of each prompt.", options=Options, run=run, plan=plan,
               report=report, inspect=inspect, rows_per_shard=7))
'''


@pytest.fixture
def team_stage(tmp_path: Path) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "wordcount_stage.py").write_text(WORDCOUNT)
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "DISTILL_STAGES": "wordcount_stage"}


def _prompts(tmp_path: Path) -> Path:
    words = [" ".join(f"w{i}x{j}" for j in range(i % 6 + 1)) for i in range(30)]  # 1 to 6 words, all distinct
    rows = [{"id": f"p{i}", "problem": text, "answer": "1"} for i, text in enumerate(words)]
    return write_jsonl(tmp_path / "p.jsonl", rows)


def test_a_stage_in_one_file_gets_its_command(tmp_path: Path, team_stage: dict[str, str]) -> None:
    inp = _prompts(tmp_path)
    r = run_cli("wordcount", "--help", env=team_stage)
    assert r.returncode == 0 and "--min-words" in r.stdout and "--rows-per-shard" in r.stdout, r.stdout + r.stderr
    out = tmp_path / "wc"
    r = run_cli("wordcount", "--input", str(inp), "--out", str(out), "--min-words", "3", "--no-progress",
                "--workers", "1", env=team_stage)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert len(rows) == 20 and min(r["words"] for r in rows) == 3  # 10 of 30 prompts have 1 or 2 words
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["stage"] == "wordcount" and len(manifest["shards"]) == 5  # the stage's own default: 7 rows
    r = run_cli("inspect", str(out), env=team_stage)  # distill inspect shows what the stage says of its output
    assert r.returncode == 0 and "wordcount: 90 words in all" in r.stdout, r.stdout + r.stderr
    # its options are checked by its model, with the house's one-line errors
    r = run_cli("wordcount", "--input", str(inp), "--out", str(tmp_path / "x"), "--min-words", "-1", env=team_stage)
    assert r.returncode == 2 and "min_words" in r.stderr and "Traceback" not in r.stderr
    # without DISTILL_STAGES the command does not exist; a module that is not there is one line
    assert run_cli("wordcount", "--help").returncode != 0
    r = run_cli("--help", env={"DISTILL_STAGES": "wordcount_stag"})
    assert r.returncode == 2 and r.stderr.startswith("error: DISTILL_STAGES: cannot import 'wordcount_stag'")


def test_a_stage_in_one_file_is_a_pipeline_step_planned_and_reported(
    tmp_path: Path, team_stage: dict[str, str]
) -> None:
    inp = _prompts(tmp_path)
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(  # composed with a built-in stage: its output is any stage's input
        f"name: team\nsteps:\n  - {{name: counted, stage: wordcount, input: {inp}, options: {{min_words: 2}}}}\n"
        "  - {name: curated, stage: prompts, input: counted}\n"
    )
    r = run_cli("run", str(pipe), "--dry-run", env=team_stage)
    assert r.returncode == 0, r.stderr
    assert "counted    wordcount words of 30 rows, at least 2, ~0.0 GB" in r.stdout, r.stdout
    r = run_cli("run", str(pipe), "--out", str(tmp_path / "run"), "--no-progress", "--workers", "1", env=team_stage)
    assert r.returncode == 0, r.stderr
    assert f"counted    counted words of 25 prompts -> {tmp_path / 'run' / 'counted'}" in r.stderr, r.stderr
    assert f"curated    25 rows (prompts) -> {tmp_path / 'run' / 'curated'}" in r.stderr, r.stderr
    assert len(read_rows(tmp_path / "run" / "counted")) == 25
    r = run_cli("run", str(pipe), "--out", str(tmp_path / "run"), "--no-progress", env=team_stage)
    assert r.returncode == 0 and "2 done (2 skipped as already done)" in r.stderr, r.stderr
    # a typo in its options is named at its place in the pipeline file
    pipe.write_text(f"name: team\nsteps:\n  - {{name: c, stage: wordcount, input: {inp}, options: {{min_word: 2}}}}\n")
    r = run_cli("run", str(pipe), env=team_stage)
    assert r.returncode == 2 and "steps[0].options: min_word: unknown key; did you mean 'min_words'?" in r.stderr


def test_every_built_in_stage_is_declared_once_with_its_knobs() -> None:
    declared = stages.registry()
    assert set(declared) >= {"prompts", "generate", "filter", "select", "mix", "card", "publish", "train", "eval",
                             "compare"}  # fmt: skip
    # one meaning per knob: rows_per_shard is the step's, with each stage's default, never an option
    for stage in declared.values():
        assert "rows_per_shard" not in stage.options.model_fields, stage.name
    assert declared["generate"].rows_per_shard == 1_000 and declared["filter"].rows_per_shard == 2_000
    assert declared["card"].rows_per_shard is None  # writes no dataset directory


def test_rows_per_shard_in_options_is_named_as_the_steps_knob(tmp_path: Path) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n  - {name: a, path: a.jsonl, quota: 1}\nrows_per_shard: 10\n")
    r = run_cli("mix", "--config", str(mix), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "rows_per_shard is not one of mix's options; pass --rows-per-shard N" in r.stderr
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nsteps:\n  - {name: m, stage: mix, options: {rows_per_shard: 5, sources: []}}\n")
    r = run_cli("run", str(pipe))
    assert r.returncode == 2 and "steps[0].options: rows_per_shard is not one of mix's options; set it on the step" in (
        r.stderr
    )
    pipe.write_text("name: p\nsteps:\n  - {name: m, stage: mix, input: x, options: {sources: []}}\n")
    r = run_cli("run", str(pipe))
    assert r.returncode == 2 and "steps[0].input: stage mix names its sources in its options; remove `input`" in (
        r.stderr
    )
    pipe.write_text("name: p\nsteps:\n  - {name: m, stage: wordcont, input: x}\n")
    r = run_cli("run", str(pipe))
    assert r.returncode == 2 and "unknown stage 'wordcont'; the stages are" in r.stderr
