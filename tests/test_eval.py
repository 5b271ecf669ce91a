"""`distill eval`: pass@1 over k samples with the filters' verifiers; numbers known by hand; seeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.eval.benchmarks import published_benchmark, to_prompts
from distill.eval.metrics import summarize
from distill.eval.run import SCIENCE_SUFFIX, run_eval
from distill.records import stable_id
from distill.teacher.config import R1_MATH_SUFFIX, TeacherConfig
from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import read_rows, run_cli, write_jsonl

# Three problems x 4 scripted samples. By hand: per-problem correct shares 3/4, 1/4, 1/4 -> pass@1 41.67,
# stderr over problems 16.67; majority answers 5 (right), 3 (wrong), 9 (wrong) -> maj@4 33.33; pass@4 100.
# P3's first sample is cut off with a \boxed{2} inside its unfinished reasoning: it must not count.
PROBLEMS = [("What is 2 + 3?", "5"), ("What is 4 + 6?", "10"), ("What is 1 + 1?", "2")]
# P2's last sample states its (wrong) answer without a box: closed think 11/12, boxed 10/12.
ANSWERS = [["5", "5", "7", "5"], ["3", "3", "10", "no box: 4"], [None, "2", "9", "9"]]


def _script(cfg: TeacherConfig) -> dict:
    script = {}
    for (problem, _), answers in zip(PROBLEMS, ANSWERS, strict=True):
        prompt = f"{problem}\n{R1_MATH_SUFFIX}"
        for s, ans in enumerate(answers):
            seed = cfg.request_seed(stable_id(problem), s)
            if ans is None:
                script[(prompt, seed)] = ("Let me see, maybe \\boxed{2}, but wait", "length")
            elif ans.startswith("no box: "):
                script[(prompt, seed)] = (f"thinking\n</think>\n\nThe answer is {ans[8:]}.", "stop")
            else:
                script[(prompt, seed)] = (f"thinking about it\n</think>\n\nThe answer is $\\boxed{{{ans}}}$.", "stop")
    return script


def test_scripted_answers_give_the_hand_computed_scores(tmp_path: Path) -> None:
    bench = write_jsonl(tmp_path / "b.jsonl", [{"problem": p, "answer": a, "domain": "math"} for p, a in PROBLEMS])
    probe = TeacherConfig(backend="openai", model="scripted", base_urls=["http://x/v1"], seed=0)
    server = ThreadedServer(ServerConfig(script=_script(probe)))
    try:
        results = run_eval(server.url, bench, 4, tmp_path / "out", seed=0, served_model_name="scripted",
                           show_progress=False)  # fmt: skip
    finally:
        server.stop()
    m = results["metrics"]
    assert (m["problems"], m["pass@1"], m["pass@1_stderr"], m["maj@4"], m["pass@4"]) == (3, 41.67, 16.67, 33.33, 100.0)
    assert m["truncation_rate"] == round(1 / 12, 4) and m["missing_samples"] == 0
    assert (m["closed_think_pct"], m["boxed_pct"]) == (91.67, 83.33)
    rows = read_rows(tmp_path / "out" / "scored")
    assert len(rows) == 12 and sum(r["correct"] for r in rows) == 5
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["metrics"] == m and saved["seed"] == 0 and len(saved["params_fingerprint"]) == 64
    assert saved["params"]["temperature"] == 0.6 and saved["params"]["top_p"] == 0.95


def test_metrics_by_hand_for_multiple_choice_and_code() -> None:
    rows = [
        {"id": "a", "sample": s, "domain": "science", "correct": c, "vote": v, "completion_tokens": 10,
         "finish_reason": "stop"}
        for s, (c, v) in enumerate([(True, "B"), (False, "C"), (True, "B")])
    ] + [
        {"id": "b", "sample": s, "domain": "code", "correct": c, "vote": None, "completion_tokens": 30,
         "finish_reason": "stop"}
        for s, c in enumerate([False, False, True])
    ]  # fmt: skip
    m = summarize(rows, 3)
    assert m["pass@1"] == 50.0 and m["maj@3"] == 100.0 and m["pass@3"] == 100.0  # maj: code has no vote
    assert m["mean_response_tokens"] == 20.0


def test_benchmark_layouts_are_recognised(tmp_path: Path) -> None:
    gpqa = write_jsonl(tmp_path / "gpqa.jsonl", [{
        "Question": "Which is a noble gas?", "Correct Answer": "Neon", "Incorrect Answer 1": "Iron",
        "Incorrect Answer 2": "Carbon", "Incorrect Answer 3": "Sodium"}])  # fmt: skip
    layout, rows = to_prompts(gpqa)
    assert layout == "gpqa" and rows[0]["domain"] == "science"
    letter = rows[0]["answer"]
    assert f"({letter}) Neon" in rows[0]["problem"] or f"{letter}) Neon" in rows[0]["problem"]
    lcb = write_jsonl(tmp_path / "lcb.jsonl", [{
        "question_id": "q1", "question_content": "Read n, print n+1.", "starter_code": "",
        "public_test_cases": json.dumps([{"input": "1\n", "output": "2\n", "testtype": "stdin"}]),
        "private_test_cases": "eJzLSM3JyVcozy/KSQEAGgQEXQ=="}])  # fmt: skip
    layout, rows = to_prompts(lcb)
    assert layout == "livecodebench" and rows[0]["id"] == "q1"
    assert json.loads(rows[0]["tests"]) == [{"input": "1\n", "output": "2\n"}] and "compressed" in rows[0]["meta"]
    row = {"problem": "1+1?", "answer": "2", "solution": "...", "subject": "Algebra", "level": 1, "unique_id": "t/1"}
    m500 = write_jsonl(tmp_path / "m.jsonl", [row])
    assert to_prompts(m500)[0] == "problem-answer" and to_prompts(m500)[1][0]["id"] == "t/1"
    assert published_benchmark(tmp_path / "MATH-500.jsonl", "problem-answer") == "math500"
    assert published_benchmark(tmp_path / "aime_2024.jsonl", "problem-answer") == "aime24"
    assert SCIENCE_SUFFIX.endswith("\\boxed{}.")


def test_tiny_checkpoint_same_seed_same_numbers_and_resume(tmp_path: Path) -> None:
    from distill.train.tiny import tiny_model_path

    bench = write_jsonl(tmp_path / "b.jsonl", [{"problem": f"Compute {i} + {i}.", "answer": str(2 * i),
                                                "domain": "math"} for i in range(6)])  # fmt: skip
    args = ["eval", "--model", str(tiny_model_path()), "--benchmark", str(bench), "--samples", "2",
            "--max-tokens", "16", "--no-progress"]  # fmt: skip
    r1 = run_cli(*args, "--out", str(tmp_path / "a"))
    r2 = run_cli(*args, "--out", str(tmp_path / "b"))
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["metrics"] == b["metrics"] and a["model"]["fingerprint"] == b["model"]["fingerprint"]
    texts = lambda d: [(r["id"], r["sample"], r["content"]) for r in read_rows(tmp_path / d / "scored")]  # noqa: E731
    assert texts("a") == texts("b")
    assert "pass@1" in r1.stderr
    # Rerun: every stage is done, nothing is generated again, same results
    again = run_cli(*args, "--out", str(tmp_path / "a"))
    assert (
        again.returncode == 0 and json.loads((tmp_path / "a" / "results.json").read_text())["metrics"] == a["metrics"]
    )
    other = run_cli(*args, "--out", str(tmp_path / "c"), "--seed", "7")
    assert other.returncode == 0 and texts("c") != texts("a")


def test_compare_prints_the_published_scores(tmp_path: Path) -> None:
    from distill.eval.published import compare_table

    results = {"metrics": {"samples_per_problem": 64, "pass@1": 12.5, "pass@1_stderr": 3.1, "maj@64": 20.0},
               "model": {"name": "my-student"}}  # fmt: skip
    table = "\n".join(compare_table("aime24", results))
    assert "DeepSeek-R1-Distill-Qwen-7B" in table and "55.5" in table and "83.3" in table and "12.5 ± 3.1" in table
    assert "94.5" in "\n".join(compare_table("math500", results))  # R1-Distill-Llama-70B


@pytest.mark.parametrize("args", [["--benchmark", "nope.jsonl", "--out", "o", "--model", "x"], ["--out", "o"]])
def test_bad_eval_arguments_are_one_line(tmp_path: Path, args: list[str]) -> None:
    r = run_cli("eval", *args, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_killed_evaluation_continues_where_it_stopped(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    problems = [{"problem": f"What is {i} + 3?", "answer": str(i + 3), "domain": "math"} for i in range(60)]
    bench = write_jsonl(tmp_path / "b.jsonl", problems)
    probe = TeacherConfig(backend="openai", model="m", base_urls=["http://x/v1"], seed=0)
    script = {}
    for p in problems:
        for s in range(2):
            seed = probe.request_seed(stable_id(p["problem"]), s)
            script[(f"{p['problem']}\n{R1_MATH_SUFFIX}", seed)] = (f"ok\n</think>\n\n\\boxed{{{p['answer']}}}", "stop")
    server = ThreadedServer(ServerConfig(script=script, latency_s=0.05))
    out = tmp_path / "out"
    args = ["eval", "--model", server.url, "--benchmark", str(bench), "--samples", "2", "--out", str(out),
            "--served-model-name", "m", "--concurrency", "2", "--no-progress"]  # fmt: skip
    try:
        proc = subprocess.Popen([sys.executable, "-m", "distill.cli", *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.stats.answered < 30:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = server.stats.answered
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        server.stop()
    assert 30 <= before < 120 and server.stats.answered < 120 + 4  # only the missing ones (+ those in flight)
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["pass@1"] == 100.0 and results["metrics"]["missing_samples"] == 0
    assert len(read_rows(out / "scored")) == 120
