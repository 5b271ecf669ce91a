"""The LLM judge in `distill filter`, against a local scripted judge server that also injects faults."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.filters.config import JUDGE_CORRECT, JudgeConfig
from distill.filters.judge import JudgeItem, render
from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import read_rows, run_cli, write_jsonl

STEPS = "First, note what is given.\n\nThen we combine the two facts and check the result carefully."
ACCEPTED = ("equilateral", "Paris")  # the scripted judge calls an answer correct when it names one of these


def judge_reply(prompt: str) -> str:
    """Reads the answer out of the default template, as a model would, and says what the script decides."""
    answer = prompt.split("Final answer to check:\n", 1)[1].split("\n\nEnd your reply", 1)[0]
    ok = any(a in answer for a in ACCEPTED)
    return f"The final answer is {answer!r}.\nVerdict: {'correct' if ok else 'incorrect'}"


def trace(pid: str, domain: str, problem: str, gold: str | None, content: str, sample: int = 0) -> dict[str, Any]:
    return {"id": pid, "source": "t", "domain": domain, "problem": problem, "answer": gold, "language": "en",
            "sample": sample, "reasoning": STEPS, "content": content, "finish_reason": "stop",
            "completion_tokens": 50}  # fmt: skip


TRIANGLE = "What kind of triangle has three equal sides and three equal angles?"
TRACES = [
    trace("p1", "math", "What is one half of one?", "1/2", "So \\boxed{\\frac{1}{2}}."),  # math-verify decides
    # the gold does not parse as math: math-verify says unverifiable; the judge rescues it (both samples: one request)
    trace("p2", "math", TRIANGLE, "The triangle is equilateral.", "It is \\boxed{\\text{equilateral}}.", 0),
    trace("p2", "math", TRIANGLE, "The triangle is equilateral.", "It is \\boxed{\\text{equilateral}}.", 1),
    trace("p3", "general", "What is the capital of France?", "Paris", "The capital of France is Paris."),
    trace("p4", "general", "What is the capital of Australia?", "Canberra", "It is Sydney."),
    trace("p5", "general", "Write a haiku about rain.", None, "Rain on the tin roof / ..."),  # no gold: not judged
    trace("p6", "math", TRIANGLE, "The triangle is equilateral.", "It is \\boxed{\\text{isosceles}}."),
]
DISTINCT_QUESTIONS = 4  # p2 (two identical samples), p3, p4, p6


def write_configs(tmp: Path, url: str, **judge: Any) -> Path:
    teacher = {"backend": "openai", "model": "judge-v3", "base_urls": [url], "temperature": 0.0, "max_tokens": 256,
               "concurrency": 4, "max_retries": 6, "backoff_s": 0.05, "max_backoff_s": 0.2,
               "endpoint_cooldown_s": 0.1, "prices": {"input_per_mtok": 0.27, "output_per_mtok": 1.1}}  # fmt: skip
    (tmp / "judge.yaml").write_text(yaml.safe_dump(teacher))
    judge = {"teacher": "judge.yaml", "domains": ["general"], "cache": "cache/judge.sqlite", **judge}
    preset = {"name": "judged", "language": {"enabled": False}, "judge": judge}
    path = tmp / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def filter_cli(tmp: Path, preset: Path, out: str, *extra: str):
    return run_cli("filter", "--input", str(tmp / "traces.jsonl"), "--preset", str(preset), "--out", str(tmp / out),
                   "--rows-per-shard", "3", "--workers", "2", "--no-progress", *extra)  # fmt: skip


def by_key(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["id"], r["sample"]): r for r in read_rows(out)}


@pytest.fixture
def judge_server():
    server = ThreadedServer(ServerConfig(responder=judge_reply, fault_rate=0.3, retry_after="0.05", seed=3,
                                         faults=("http_429", "http_500", "http_503", "drop", "truncate")))  # fmt: skip
    yield server
    server.stop()


def test_judge_decides_rescues_caches_and_reports_its_cost(tmp_path: Path, judge_server) -> None:
    write_jsonl(tmp_path / "traces.jsonl", TRACES)
    preset = write_configs(tmp_path, judge_server.url)
    r = filter_cli(tmp_path, preset, "verdicts")
    assert r.returncode == 0, r.stderr
    rows = by_key(tmp_path / "verdicts")

    assert rows[("p1", 0)]["checker"] == "math-verify" and rows[("p1", 0)]["keep"]
    for s in (0, 1):  # rescued: math-verify could not read the gold, the judge could
        assert rows[("p2", s)]["checker"] == "judge" and rows[("p2", s)]["correct"] is True
        assert rows[("p2", s)]["keep"] and rows[("p2", s)]["reject_reason"] is None
        assert rows[("p2", s)]["reject_detail"].startswith("judge: ") and "Verdict: correct" in rows[("p2", s)][
            "reject_detail"]  # fmt: skip
    assert rows[("p3", 0)]["checker"] == "judge" and rows[("p3", 0)]["keep"]
    assert rows[("p4", 0)]["reject_reason"] == "wrong_answer" and "Verdict: incorrect" in rows[("p4", 0)][
        "reject_detail"]  # fmt: skip
    assert rows[("p5", 0)]["checker"] is None and rows[("p5", 0)]["keep"]  # no gold: nothing to judge against
    assert rows[("p6", 0)]["reject_reason"] == "wrong_answer" and rows[("p6", 0)]["checker"] == "judge"

    stats = judge_server.stats
    assert sum(stats.faults.values()) > 0, "the fault rate should have hit some requests"
    assert len(stats.answered_keys) == DISTINCT_QUESTIONS and set(stats.answered_keys.values()) == {1}
    manifest = json.loads((tmp_path / "verdicts" / "_manifest.json").read_text())
    j = manifest["stats"]["judge"]
    assert (j["rows"], j["correct"], j["requests_sent"]) == (5, 3, DISTINCT_QUESTIONS)
    assert j["retries"] > 0 and j["completion_tokens"] > 0 and j["cost_usd"] >= 0
    assert re.search(
        rf"judge judge-v3: 5 rows judged \(3 correct\); this run sent {DISTINCT_QUESTIONS} requests", r.stderr
    )

    # A rerun from scratch asks the judge nothing: every answer is in the cache.
    asked = stats.requests
    again = filter_cli(tmp_path, preset, "verdicts", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert judge_server.stats.requests == asked
    assert "this run sent 0 requests, 4 answers from the cache" in again.stderr
    assert {k: (v["keep"], v["checker"]) for k, v in by_key(tmp_path / "verdicts").items()} == {
        k: (v["keep"], v["checker"]) for k, v in rows.items()
    }

    # Without on_unverifiable the rule check's verdict stands; a new pattern needs no new requests either.
    strict = write_configs(tmp_path, judge_server.url, on_unverifiable=False, correct_pattern="(?i)verdict: incorrect")
    third = filter_cli(tmp_path, strict, "strict")
    assert third.returncode == 0, third.stderr
    rows3 = by_key(tmp_path / "strict")
    assert rows3[("p2", 0)]["reject_reason"] == "unverifiable" and rows3[("p2", 0)]["checker"] == "math-verify"
    assert rows3[("p3", 0)]["reject_reason"] == "wrong_answer" and rows3[("p4", 0)]["keep"]  # the pattern flipped
    assert judge_server.stats.requests == asked


def test_an_unreachable_judge_stops_the_run_without_marking_rows(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_jsonl(tmp_path / "traces.jsonl", TRACES)
    preset = write_configs(tmp_path, f"http://127.0.0.1:{port}/v1")
    r = filter_cli(tmp_path, preset, "verdicts")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    assert lines[-1].startswith("error: judge: judge-v3 at http://127.0.0.1:") and "did not answer" in lines[-1]
    manifest = json.loads((tmp_path / "verdicts" / "_manifest.json").read_text())
    assert not manifest.get("complete")  # shards whose rows needed the judge were not written
    written = {(r["id"], r["sample"]) for r in read_rows(tmp_path / "verdicts")}
    assert not written & {("p2", 0), ("p3", 0), ("p4", 0), ("p6", 0)}


def test_bad_judge_configs_are_one_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "traces.jsonl", TRACES)
    preset = write_configs(tmp_path, "http://127.0.0.1:9/v1", prompt="Is {anwser} right?")
    r = filter_cli(tmp_path, preset, "v")
    assert r.returncode == 2 and "judge.prompt" in r.stderr and "{anwser}" in r.stderr
    preset = write_configs(tmp_path, "http://127.0.0.1:9/v1")
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump({"backend": "synthetic", "model": "x"}))
    r = filter_cli(tmp_path, preset, "v")
    assert r.returncode == 2 and "backend 'synthetic'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_default_pattern_and_template() -> None:
    pattern = re.compile(JUDGE_CORRECT)
    assert pattern.search("Both are 1/2.\nVerdict: correct")
    assert pattern.search("**Verdict:** Correct")
    assert not pattern.search("Verdict: incorrect")
    assert not pattern.search("The answer looks correct but I am unsure.")
    cfg = JudgeConfig(teacher="j.yaml")
    text = render(cfg.prompt, JudgeItem("Find $\\frac{a}{b}$ {x}.", "1/2", "0.5", "so \\boxed{0.5}"))
    assert "Find $\\frac{a}{b}$ {x}." in text and "Reference answer:\n1/2" in text and "0.5" in text
