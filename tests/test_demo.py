"""The demo pipeline end to end at a smaller size (a few training steps, a 5-problem evaluation): every stage's
output, the closing report, and a rerun that does no work again."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.teacher.config import R1_MATH_SUFFIX
from tests.conftest import REPO, read_rows, run_cli


def small_demo(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    heldout = (REPO / "data" / "demo" / "heldout.jsonl").read_text().splitlines()[:5]
    (data / "heldout.jsonl").write_text("\n".join(heldout) + "\n")
    doc = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    doc["out"] = str(tmp_path / "run")
    for step in doc["steps"]:
        if step["name"] == "prompts":
            step["input"] = str(REPO / "data" / "demo" / "prompts.jsonl")  # the planted rows are spread through it
            step["options"]["decontaminate"]["benchmarks"] = [str(REPO / "data" / "demo" / "benchmark.jsonl")]
        if step["name"] == "traces":
            step["options"]["teacher"] = str(REPO / "configs" / "teacher" / "synthetic.yaml")
        if step["name"] == "verdicts":
            step["options"]["preset"] = str(REPO / "filters" / "r1.yaml")
        if step["name"] == "sft":
            step["options"]["sources"][1]["path"] = str(REPO / "data" / "demo" / "chat.jsonl")
            step["options"]["sources"][1]["quota"] = 10
        if step["name"] == "student":
            step["options"] = {"student": str(REPO / "students" / "tiny.yaml"), "max_steps": 6}
        if step["name"] == "eval":
            step["options"] = {"benchmark": str(data / "heldout.jsonl"), "samples": 2, "max_tokens": 24}
        if step["name"] == "eval-untrained":
            step["options"].update(benchmark=str(data / "heldout.jsonl"), max_tokens=24)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_demo_chain_end_to_end_then_a_rerun_does_no_work(tmp_path: Path) -> None:
    pipe = small_demo(tmp_path)
    run = tmp_path / "run"
    r = run_cli("run", str(pipe), "--no-progress", timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    # every stage's output
    stats = json.loads((run / "prompts" / "_manifest.json").read_text())["stats"]
    assert stats["rejected"] == 5 and stats["report"]["removed"] == {"contaminated": 1, "exact_duplicate": 1,
                                                                      "near_duplicate": 1}  # fmt: skip
    assert len(read_rows(run / "prompts")) == 600
    traces = read_rows(run / "traces")
    assert len(traces) == 4 * len(read_rows(run / "prompts"))
    verdicts = read_rows(run / "verdicts")
    assert len(verdicts) == len(traces) and any(v["keep"] for v in verdicts) and not all(v["keep"] for v in verdicts)
    kept = read_rows(run / "kept")
    assert kept and all(k["keep"] for k in kept)
    sft = read_rows(run / "sft")
    assert len(sft) == len(kept) + 10 and all(m["messages"][-1]["role"] == "assistant" for m in sft)
    # the student is trained on the prompt the teacher answered (and eval asks): problem + R1's instruction
    reasoning = [m for m in sft if m["source"] == "reasoning"]
    assert reasoning and all(m["messages"][0]["content"].endswith(R1_MATH_SUFFIX) for m in reasoning)
    assert (run / "sft" / "README.md").read_text().startswith("---")
    assert (run / "sft" / ".publish").is_dir()
    summary = json.loads((run / "student" / "distill_train.json").read_text())
    assert summary["global_step"] == 6 and (run / "student" / "model.safetensors").exists()
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["metrics"]["problems"] == 5 and results["metrics"]["samples_per_problem"] == 2
    # the closing report names every step and where its output lives
    report = r.stderr[r.stderr.index("report demo:") :]
    for name in ("prompts", "traces", "verdicts", "kept", "sft", "card", "publish", "student", "eval",
                 "eval-untrained", "learned"):  # fmt: skip
        assert f"  {name} " in report, name
    untrained = json.loads((run / "eval-untrained" / "results.json").read_text())
    assert untrained["model"]["path"].endswith("tiny-qwen2-v3") and untrained["metrics"]["problems"] == 5
    learned = json.loads((run / "learned" / "comparison.json").read_text())
    assert set(learned["table"]) == {"trained", "untrained"} and "untrained" in learned["paired"]["against"]
    assert "kept " in report and "pass@1" in report and "final loss" in report and str(run / "eval") in report

    trained_at = (run / "student" / "distill_train.json").stat().st_mtime_ns
    again = run_cli("run", str(pipe), "--no-progress", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "11 done (8 skipped as already done)" in again.stderr  # card, publish, compare are redone: seconds
    assert (run / "student" / "distill_train.json").stat().st_mtime_ns == trained_at
    assert json.loads((run / "eval" / "results.json").read_text())["reused"] is True


def test_r1_800k_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    r = run_cli("run", "pipelines/r1-800k.yaml", "--dry-run", "--out", str(tmp_path / "r1"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "1,000,000 prompts (plan.prompts" in out
    assert "4,000,000 requests (4 samples), 28.00B teacher tokens" in out  # 1M x 4 x 7,000
    assert "41,481 GPU-hours at 3,000 tok/s per 16-GPU replica" in out  # 28e9 / 3000 / 3600 x 16
    assert "~974,400 traces (at most 1 per prompt)" in out  # 1M x (1 - 0.4^4)
    assert "800,000 SFT rows" in out and "distill-qwen-7b" in out and "GPU-hours on 8 H100" in out
    assert "total: teacher 41,481 GPU-hours" in out
    assert not (tmp_path / "r1").exists()


def test_dry_run_counts_local_inputs(tmp_path: Path) -> None:
    r = run_cli("run", "pipelines/demo.yaml", "--dry-run", "--out", str(tmp_path / "d"))
    assert r.returncode == 0 and "608 prompts (rows of the local inputs" in r.stdout and "2,432 requests" in r.stdout
