"""Every step is declared once (issue 28): its command, its pipeline step and its line in the dry run come from
the one declaration, with one default per knob; the layers import only downward; `distill --help` reads the
declarations without the stages behind them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks import import_graph
from distill import pipeline, stages
from distill.cli import app
from tests.conftest import REPO, run_cli

# What each step needs at the least (its required options), as a pipeline step and as command-line words.
REQUIRED: dict[str, tuple[dict[str, Any], list[str]]] = {
    "prompts": ({}, []),
    "generate": ({"teacher": "configs/teacher/synthetic.yaml"}, ["--teacher", "configs/teacher/synthetic.yaml"]),
    "filter": ({"preset": "filters/r1.yaml"}, ["--preset", "filters/r1.yaml"]),
    "difficulty": ({"model": "distill:tiny-qwen2"}, ["--model", "distill:tiny-qwen2"]),
    "select": ({"per_prompt": 2}, ["--per-prompt", "2"]),
    "mix": ({"sources": [{"name": "a", "path": "x.jsonl", "quota": 1}]}, ["--config", "configs/mix/demo.yaml"]),
    "train": ({"student": "students/tiny.yaml"}, ["students/tiny.yaml"]),
    "eval": ({"benchmark": "b.jsonl", "model": "m"}, ["--benchmark", "b.jsonl", "--model", "m"]),
    "card": ({}, ["DIR"]),
    "publish": ({"repo_id": "o/n"}, ["DIR", "--repo-id", "o/n"]),
    "compare": ({"arms": {"a": ["x"], "b": ["y"]}}, ["a=x", "b=y"]),
}


def _from_command(monkeypatch: pytest.MonkeyPatch, name: str, words: list[str]) -> stages.Context:
    """The context the command hands to the stage, its defaults untouched (nothing runs)."""
    seen: list[stages.Context] = []
    monkeypatch.setattr(stages, "loaded", lambda stage, ctx: ctx)
    monkeypatch.setattr(stages, "execute", lambda stage, ctx, label=None: seen.append(ctx))
    stage = stages.get(name)
    args = [name, *words]
    if stage.takes_input and stage.input_flag and not stage.input_optional:
        args += [stage.input_flag, "in.jsonl"]
    if stage.out_help is not None:
        args += ["--out", "out"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0 and len(seen) == 1, r.output
    return seen[0]


def _from_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, options: dict[str, Any]) -> Any:
    """The step's context in a one-step pipeline, and the plan's view of it (`distill run --dry-run`)."""
    monkeypatch.setattr(pipeline, "loaded", lambda stage, ctx: ctx)
    step: dict[str, Any] = {"name": "s", "stage": name, "options": options}
    if stages.get(name).takes_input:
        step["input"] = "in.jsonl"
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({"name": "p", "steps": [step]}))
    run = pipeline.load(path)
    return run.context(0, where=str(path))


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_command_pipeline_step_and_dry_run_agree_on_every_default(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options, words = REQUIRED[name]
    monkeypatch.chdir(REPO)  # the command reads --config from here
    cli = _from_command(monkeypatch, name, words)
    step = _from_pipeline(monkeypatch, tmp_path, name, options)
    stage = stages.get(name)
    # the same knob, with the declaration's one default
    assert cli.rows_per_shard == step.rows_per_shard == (stage.rows_per_shard or 0), name
    # every option the command did not set has the model's own default, as in the pipeline step (and so in the
    # plan, which reads the step's context): one default, written once
    given = set(options) | ({"sources", "seed", "total", "tokenizer", "non_reasoning"} if name == "mix" else set())
    for field in stage.options.model_fields:
        if field not in given:
            assert getattr(cli.options, field) == getattr(step.options, field), (name, field)
    assert set(stage.options.model_fields) >= set(options)


def test_every_step_is_a_command_from_its_declaration() -> None:
    commands = {c.name for c in app.registered_commands}
    assert set(stages.registry()) <= commands
    assert set(REQUIRED) == set(stages.registry())  # a new step gets a row above
    for stage in stages.registry().values():
        assert not isinstance(stage.run, str) or stage.run.count(":") == 1
        r = run_cli(stage.name, "--help", env={"COLUMNS": "240"})  # wide: rich would cut long flag names
        first = stage.help.split("\n")[0].replace("`", "")[:40]  # markdown: backticks render as code
        assert r.returncode == 0 and first in " ".join(r.stdout.split()), stage.name
        for field, info in stage.options.model_fields.items():
            flag = "--" + field.replace("_", "-")
            simple = info.annotation in (str, int, float, bool) or str(info.annotation).startswith(("str |", "int |"))
            if simple and not (stage.argument and stage.argument.target == field):
                assert flag in r.stdout or field in {f.target for f in stage.flags.values()}, (stage.name, flag)


def test_no_import_circles_and_no_import_pointing_up() -> None:
    arrows = import_graph.graph()
    assert import_graph.circles(arrows) == []
    assert import_graph.upward(arrows) == []


def test_a_lower_layer_importing_a_higher_one_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    arrows = import_graph.graph()
    arrows["distill.config"] = arrows["distill.config"] | {"distill.stages"}
    arrows["distill.stages"] = arrows["distill.stages"] | {"distill.config"}
    assert ("distill.config", "distill.stages") in import_graph.upward(arrows)
    assert any("distill.config" in c and "distill.stages" in c for c in import_graph.circles(arrows))


def test_help_reads_the_declarations_without_the_stages() -> None:
    code = "import sys, distill.cli; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = {"pyarrow", "numpy", "torch", "transformers", "distill.store", "distill.filters.stage", "distill.mix.stage"}
    assert heavy.isdisjoint(loaded), heavy & set(loaded)
    assert "distill.filters.config" in loaded  # the declarations themselves are read


def test_compare_from_the_command_line(tmp_path: Path) -> None:
    bench = REPO / "data" / "demo" / "heldout.jsonl"
    for seed in (0, 1):
        for name, teacher in (("clean", "synthetic"), ("noisy", "synthetic-noisy")):
            r = run_cli("eval", "--teacher", str(REPO / "configs" / "teacher" / f"{teacher}.yaml"), "--benchmark",
                        str(bench), "--samples", "2", "--seed", str(seed), "--out", str(tmp_path / f"{name}{seed}"),
                        "--no-progress")  # fmt: skip
            assert r.returncode == 0, r.stderr
    r = run_cli("compare", f"clean={tmp_path / 'clean0'},{tmp_path / 'clean1'}",
                f"noisy={tmp_path / 'noisy0'},{tmp_path / 'noisy1'}", "--expect-better", "clean",
                "--out", str(tmp_path / "cmp"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert doc["seeds"] == 2 and set(doc["arms"]) == {"clean", "noisy"}
    assert "clean" in (tmp_path / "cmp" / "comparison.md").read_text()
    r = run_cli("compare", str(tmp_path / "clean0"), "--out", str(tmp_path / "one"))
    assert r.returncode == 2 and "arms" in r.stderr and "Traceback" not in r.stderr


def test_a_command_rerun_on_a_pipeline_steps_output_finds_it_done(tmp_path: Path) -> None:
    """The demo's step writes 100 prompts per shard; the README's `distill generate ... --out runs/demo/traces`
    (no --rows-per-shard) takes the directory's own, so it finds the work done rather than refusing it."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"{i} + 1?", "answer": str(i + 1)}) + "\n"
                               for i in range(30)))  # fmt: skip
    doc = {"name": "p", "out": str(tmp_path / "run"), "steps": [
        {"name": "traces", "stage": "generate", "input": str(prompts), "rows_per_shard": 10,
         "options": {"teacher": str(REPO / "configs/teacher/synthetic.yaml")}}]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(json.dumps(doc))
    assert run_cli("run", str(tmp_path / "p.yaml"), "--no-progress").returncode == 0
    out = str(tmp_path / "run" / "traces")
    words = ["generate", "--input", str(prompts), "--teacher", "configs/teacher/synthetic.yaml", "--out", out]
    r = run_cli(*words, "--no-progress")
    assert r.returncode == 0 and "already done, skipped" in r.stderr, r.stderr
    r = run_cli(*words, "--rows-per-shard", "20", "--no-progress")  # asked for: another run, refused as before
    assert r.returncode == 2 and "config differs in rows_per_shard" in r.stderr, r.stderr
