"""`distill difficulty`: a student's pass rate per prompt, by hand on scripted answers, seeded on the tiny model,
and `distill select` keeping what the student does not solve (command line and pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.records import stable_id
from distill.teacher.config import TeacherConfig
from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import read_rows, run_cli, write_jsonl
from tests.test_eval import _script
from tests.test_filters import trace

# Scripted samples (tests/test_eval.py): "What is 2 + 3?" right 3 of 4, "4 + 6" 1 of 4 (one answer has no box:
# verified, wrong), "1 + 1" 1 of 4 (one cut off: verified, no answer). A fourth problem's gold is not math at all:
# no sample can be verified, so it has no rate.
PROBLEMS = [("What is 2 + 3?", "5"), ("What is 4 + 6?", "10"), ("What is 1 + 1?", "2")]
BY_HAND = {stable_id(p): r for (p, _), r in zip(PROBLEMS, (0.75, 0.25, 0.25), strict=True)}


def test_pass_rates_by_hand_then_select_what_the_student_does_not_solve(tmp_path: Path) -> None:
    unverifiable = "Name the shape with three equal sides."
    prompts = [{"problem": p, "answer": a, "domain": "math"} for p, a in PROBLEMS]
    prompts.append({"problem": unverifiable, "answer": "The triangle is equilateral.", "domain": "math"})
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    probe = TeacherConfig(backend="openai", model="scripted", base_urls=["http://x/v1"], seed=0)
    script = _script(probe)
    for s in range(4):  # the unverifiable problem's samples: boxed, but against a gold that does not parse
        script[(f"{unverifiable}\n{probe.math_suffix}", probe.request_seed(stable_id(unverifiable), s))] = (
            "hmm\n</think>\n\n\\boxed{equilateral}", "stop")  # fmt: skip
    server = ThreadedServer(ServerConfig(script=script))
    try:
        r = run_cli("difficulty", "--input", str(tmp_path / "prompts.jsonl"), "--model", server.url,
                    "--served-model-name", "scripted", "--samples", "4", "--out", str(tmp_path / "rates"),
                    "--no-progress")  # fmt: skip
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in read_rows(tmp_path / "rates")}
    assert {pid: x["pass_rate"] for pid, x in rows.items() if pid in BY_HAND} == BY_HAND
    odd = rows[stable_id(unverifiable)]
    assert (odd["samples"], odd["verified"], odd["correct"], odd["pass_rate"]) == (4, 0, 0, None)
    assert "mean pass rate 0.417 over 4 prompts x 4" in r.stderr
    stats = json.loads((tmp_path / "rates" / "_manifest.json").read_text())["stats"]["difficulty"]
    assert stats["histogram"]["(0, 0.25]"] == 2 and stats["histogram"]["(0.5, 0.75]"] == 1
    assert stats["histogram"]["no rate"] == 1

    # The teacher's verdicts for the same prompts, every sample kept: the student rates decide what stays.
    verdicts = [{**trace(id=stable_id(p), problem=p, answer=a, sample=s), "correct": True, "readable": True,
                 "language_ok": True, "keep": True, "reject_reason": None}
                for p, a in [*PROBLEMS, (unverifiable, "x")] for s in range(2)]  # fmt: skip
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    r = run_cli("select", "--input", str(tmp_path / "verdicts.jsonl"), "--out", str(tmp_path / "kept"),
                "--per-prompt", "1", "--student-rates", str(tmp_path / "rates"), "--max-student-pass-rate", "0.5",
                "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    kept = {x["id"] for x in read_rows(tmp_path / "kept")}
    assert kept == {stable_id(p) for p in ("What is 4 + 6?", "What is 1 + 1?", unverifiable)}  # 2 + 3 is solved
    assert "dropped 1 the student solves more often than 0.5" in r.stderr
    card = run_cli("card", str(tmp_path / "kept"))
    assert card.returncode == 0, card.stderr
    text = (tmp_path / "kept" / "README.md").read_text()
    assert "more often than 0.5 dropped: 1" in text and "| (0, 0.25] | 2 |" in text

    bad = run_cli("select", "--input", str(tmp_path / "verdicts.jsonl"), "--out", str(tmp_path / "x"),
                  "--per-prompt", "1", "--student-rates", str(tmp_path / "kept"))  # fmt: skip
    assert bad.returncode == 2 and "give the --out of `distill difficulty`" in bad.stderr
    bad = run_cli("select", "--input", str(tmp_path / "verdicts.jsonl"), "--out", str(tmp_path / "x"),
                  "--per-prompt", "1", "--max-student-pass-rate", "0.5")  # fmt: skip
    assert bad.returncode == 2 and "needs --student-rates" in bad.stderr


def test_the_tiny_student_is_reproducible_with_a_seed_in_a_pipeline(tmp_path: Path) -> None:
    prompts = [{"problem": f"Compute ${a} + {b}$.", "answer": str(a + b), "domain": "math"}
               for a, b in [(1, 2), (3, 4), (10, 20), (7, 7), (12, 30), (5, 9)]]  # fmt: skip
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    verdicts = [{**trace(id=stable_id(p["problem"]), problem=p["problem"], answer=p["answer"], sample=0),
                 "correct": True, "readable": True, "language_ok": True, "keep": True, "reject_reason": None}
                for p in prompts]  # fmt: skip
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)

    def pipeline(seed: int, out: str) -> Path:
        steps = [
            {"name": "rates", "stage": "difficulty", "input": "prompts.jsonl",
             "options": {"model": "distill:tiny-qwen2", "samples": 2, "max_tokens": 24, "seed": seed,
                         "temperature": 1.0}},
            {"name": "kept", "stage": "select", "input": "verdicts.jsonl",
             "options": {"per_prompt": 1, "student_rates": "rates", "max_student_pass_rate": 0.5}},
        ]  # fmt: skip
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump({"name": out, "out": str(tmp_path / out), "steps": steps}))
        r = run_cli("run", str(path), "--no-progress")
        assert r.returncode == 0, r.stderr
        return tmp_path / out

    def samples(run: Path) -> list[tuple[str, int, str]]:
        return sorted((x["id"], x["sample"], x["content"]) for x in read_rows(run / "rates" / "_samples"))

    a, b, c = pipeline(0, "a"), pipeline(0, "b"), pipeline(1, "c")
    assert samples(a) == samples(b) and samples(a) != samples(c)
    assert read_rows(a / "rates") == read_rows(b / "rates")
    # the untrained student solves none of them: every prompt stays
    assert len(read_rows(a / "kept")) == len(prompts)
    assert all(x["pass_rate"] == 0.0 for x in read_rows(a / "rates"))


def test_real_math500_rows_need_the_prompts_stage_first_and_the_command_says_so(tmp_path: Path, real: Path) -> None:
    raw = tmp_path / "math500.jsonl"
    raw.write_text("".join((real / "bench_math500.jsonl").read_text().splitlines(keepends=True)[:4]))
    args = ("--model", "distill:tiny-qwen2", "--samples", "1", "--max-tokens", "16", "--no-progress")
    r = run_cli("difficulty", "--input", str(raw), "--out", str(tmp_path / "raw-rates"), *args)
    assert r.returncode == 0, r.stderr
    assert "4 prompts have no verifier" in r.stderr and "run `distill prompts`" in r.stderr
    assert all(x["pass_rate"] is None for x in read_rows(tmp_path / "raw-rates"))
    p = run_cli("prompts", "--input", str(raw), "--out", str(tmp_path / "prompts"), "--no-progress")
    assert p.returncode == 0, p.stderr
    r = run_cli("difficulty", "--input", str(tmp_path / "prompts"), "--out", str(tmp_path / "rates"), *args)
    assert r.returncode == 0 and "no verifier" not in r.stderr, r.stderr
    assert all(x["verified"] == 1 and x["pass_rate"] is not None for x in read_rows(tmp_path / "rates"))
