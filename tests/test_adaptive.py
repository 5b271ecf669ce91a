"""`distill generate --preset P --keep K --max-samples N`: traces judged as they arrive, a prompt stopped once K
pass (distill/teacher/adaptive.py)."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml

from distill.teacher.adaptive import Draw, Rule
from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import DISTILL, REPO, prompts, read_rejects, read_rows, read_side, run_cli, write_jsonl

PRESET = REPO / "filters" / "r1.yaml"
SYNTHETIC = {"seed": 0, "pass_rate": {"alpha": 2.0, "beta": 1.0}, "lengths": {"right_tokens": 60, "wrong_tokens": 120}}


def synthetic_teacher(tmp_path: Path) -> Path:
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump({"backend": "synthetic", "model": "m", "samples": 4, "batch_size": 16,
                                    "synthetic": SYNTHETIC}))  # fmt: skip
    return path


def server_teacher(tmp_path: Path, url: str, **kw) -> Path:
    path = tmp_path / "server-teacher.yaml"
    path.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [url], "samples": 4,
                                    "concurrency": 16, **kw}))  # fmt: skip
    return path


def stripped(rows: list[dict]) -> list[dict]:
    """Rows without the one column that differs between runs (the wall-clock latency)."""
    return [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]


# --- the rule -----------------------------------------------------------------------------------------


def _simulate(passes: list[bool], keep: int, cap: int, speculate: int, rng: random.Random) -> tuple[Draw, int]:
    """Run one prompt's Draw with results coming back in random order; returns it and the samples drawn."""
    draw = Draw(SimpleNamespace(prompts=[{"id": "p"}]), 0)  # type: ignore[arg-type]
    rule = Rule(keep, cap, speculate)
    drawn = 0
    while not draw.finished:
        for s in draw.to_draw(rule, speculate):
            draw.in_flight.add(s)
            drawn += 1
        s = rng.choice(sorted(draw.in_flight))  # any of those in flight comes back first
        draw.in_flight.discard(s)
        draw.judged[s] = {"verdict": {"keep": passes[s]}, "reasoning": f"trace {s}", "content": ""}  # all distinct
        if draw.settle(rule):
            draw.in_flight.clear()  # cancelled
    return draw, drawn


def test_the_rule_draws_what_the_sequential_rule_draws_whatever_comes_back_first() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        keep, cap = rng.randint(1, 3), rng.randint(3, 8)
        p = rng.random()
        passes = [rng.random() < p for _ in range(cap)]
        # the sequential rule: one sample at a time until `keep` pass or `cap` were drawn
        seen = stop = 0
        for stop in range(1, cap + 1):
            seen += passes[stop - 1]
            if seen >= keep:
                break
        draw, drawn = _simulate(passes, keep, cap, 0, rng)
        assert draw.decided == stop and drawn == stop, (passes, keep, cap)
        for speculate in (1, 3):  # speculation changes the cost, never the rows, never past the cap
            draw, drawn = _simulate(passes, keep, cap, speculate, rng)
            assert draw.decided == stop and stop <= drawn <= cap, (passes, keep, cap, speculate)


# --- the command ---------------------------------------------------------------------------------------


def test_adaptive_run_is_the_same_on_a_rerun_and_its_verdicts_are_filters(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(60))
    teacher = synthetic_teacher(tmp_path)
    args = ["generate", "--input", str(src), "--teacher", str(teacher), "--preset", str(PRESET), "--keep", "2",
            "--max-samples", "6", "--no-progress"]  # fmt: skip
    first = run_cli(*args, "--out", str(tmp_path / "a"), "--rows-per-shard", "20")
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, "--out", str(tmp_path / "b"), "--rows-per-shard", "7")  # other shards, other batches
    assert second.returncode == 0, second.stderr
    rows = read_rows(tmp_path / "a")
    assert stripped(rows) == stripped(read_rows(tmp_path / "b"))
    assert "judged as they arrived (preset r1)" in first.stderr

    verdicts = read_side(tmp_path / "a", "verdicts")
    assert [(r["id"], r["sample"]) for r in verdicts] == [(r["id"], r["sample"]) for r in rows]
    r = run_cli("filter", "--input", str(tmp_path / "a"), "--preset", str(PRESET), "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    assert verdicts == read_rows(tmp_path / "f")  # the same function, row for row, column for column

    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for v in verdicts:
        by_prompt[v["id"]].append(v)
    assert len(by_prompt) == 60
    for pid, samples in by_prompt.items():
        assert [v["sample"] for v in samples] == list(range(len(samples))) and len(samples) <= 6, pid
        passing = [v["sample"] for v in samples if v["keep"]]
        # it stopped at the second pass, or drew all 6 without finding two
        assert len(passing) <= 2 and ((samples[-1]["keep"] and len(passing) == 2) or len(samples) == 6), pid
    kept = Counter(v["keep"] for v in verdicts)[True]
    stats = json.loads((tmp_path / "a" / "_manifest.json").read_text())["stats"]["generate"]["adaptive"]
    assert stats["kept"] == kept and stats["max_samples"] == 6 and stats["removed"] == 0
    assert stats["prompts_full"] == sum(1 for s in by_prompt.values() if sum(v["keep"] for v in s) == 2)

    r = run_cli("select", "--input", str(tmp_path / "f"), "--per-prompt", "2", "--out", str(tmp_path / "k"))
    assert r.returncode == 0, r.stderr
    assert sorted((x["id"], x["sample"]) for x in read_rows(tmp_path / "k")) == sorted(
        (v["id"], v["sample"]) for v in verdicts if v["keep"]
    )


@pytest.mark.parametrize("point", ["file_renamed:1", "manifest_renamed:2", "file_renamed:3"])
def test_kill_at_commit_steps_then_rerun_gives_the_clean_rows(tmp_path: Path, point: str) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(40))
    args = ["generate", "--input", str(src), "--teacher", str(synthetic_teacher(tmp_path)), "--preset", str(PRESET),
            "--keep", "2", "--max-samples", "5", "--rows-per-shard", "10", "--no-progress"]  # fmt: skip
    assert run_cli(*args, "--out", str(tmp_path / "clean")).returncode == 0
    out = tmp_path / "killed"
    assert run_cli(*args, "--out", str(out), env={"DISTILL_CRASH_AT": point}).returncode == -signal.SIGKILL
    r = run_cli(*args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert stripped(read_rows(out)) == stripped(read_rows(tmp_path / "clean"))
    assert stripped(read_side(out, "verdicts")) == stripped(read_side(tmp_path / "clean", "verdicts"))


def test_sigkill_mid_run_with_speculation_then_rerun_gives_the_clean_rows(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(80))
    server = ThreadedServer(ServerConfig(latency_s=0.01, seconds_per_token=2e-4, synthetic=SYNTHETIC))
    try:
        teacher = server_teacher(tmp_path, server.url)
        args = ["generate", "--input", str(src), "--teacher", str(teacher), "--preset", str(PRESET), "--keep", "2",
                "--max-samples", "6", "--rows-per-shard", "20", "--no-progress"]  # fmt: skip
        clean = run_cli(*args, "--out", str(tmp_path / "clean"), "--speculate", "0")
        assert clean.returncode == 0, clean.stderr
        out = tmp_path / "killed"
        proc = subprocess.Popen([*DISTILL, *args, "--out", str(out), "--speculate", "2"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        journals = out / ".work" / "journal"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(len(j.read_bytes().splitlines()) for j in journals.glob("*")) < 60:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = run_cli(*args, "--out", str(out), "--speculate", "2")
        assert r.returncode == 0, r.stderr
    finally:
        server.stop()
    assert stripped(read_rows(out)) == stripped(read_rows(tmp_path / "clean"))
    samples = Counter(row["id"] for row in read_rows(out))
    assert max(samples.values()) <= 6


def test_a_decided_prompts_requests_in_flight_are_aborted_at_the_server(tmp_path: Path) -> None:
    """Right traces are shorter than wrong ones: a prompt whose first samples pass is decided while the speculative
    ones still decode; closing their connections stops them, and the server decodes fewer tokens than it began."""
    src = write_jsonl(tmp_path / "p.jsonl", prompts(4))  # the tail from the start: 4 open of 16 slots
    server = ThreadedServer(ServerConfig(seconds_per_token=3e-3, synthetic=SYNTHETIC))
    try:
        teacher = server_teacher(tmp_path, server.url)
        args = ["generate", "--input", str(src), "--teacher", str(teacher), "--preset", str(PRESET), "--keep", "1",
                "--max-samples", "8", "--speculate", "3", "--no-progress"]  # fmt: skip
        r = run_cli(*args, "--out", str(tmp_path / "spec"))
        assert r.returncode == 0, r.stderr
        stats = server.stats
        r0 = run_cli(*args[:-3], "--speculate", "0", "--no-progress", "--out", str(tmp_path / "seq"))
        assert r0.returncode == 0, r0.stderr
    finally:
        server.stop()
    adaptive = json.loads((tmp_path / "spec" / "_manifest.json").read_text())["stats"]["generate"]["adaptive"]
    assert adaptive["this_run"]["cancelled"] >= 1 and "cancelled in flight" in r.stderr
    assert stats.aborted >= 1 and stats.generated_tokens < stats.scheduled_tokens
    assert stripped(read_rows(tmp_path / "spec")) == stripped(read_rows(tmp_path / "seq"))
    removed = read_side(tmp_path / "spec", "removed")
    assert all(x["reason"].startswith("beyond_keep") for x in removed)


def test_failed_requests_are_retried_by_the_next_run_and_the_rows_are_the_clean_ones(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(30))
    server = ThreadedServer(ServerConfig(synthetic=SYNTHETIC, fail_matching="Compute 7 + 8"))
    try:
        teacher = server_teacher(tmp_path, server.url, max_retries=1, backoff_s=0.01)
        args = ["generate", "--input", str(src), "--teacher", str(teacher), "--preset", str(PRESET), "--keep", "2",
                "--max-samples", "6", "--rows-per-shard", "10", "--no-progress"]  # fmt: skip
        assert run_cli(*args, "--out", str(tmp_path / "out")).returncode == 0
        assert {x["error"].split(":")[0] for x in read_rejects(tmp_path / "out")} == {"request_failed"}
        server.server.cfg.fail_matching = None
        assert run_cli(*args, "--out", str(tmp_path / "out")).returncode == 0
        assert run_cli(*args, "--out", str(tmp_path / "clean")).returncode == 0
    finally:
        server.stop()
    assert not read_rejects(tmp_path / "out")
    assert stripped(read_rows(tmp_path / "out")) == stripped(read_rows(tmp_path / "clean"))
    assert stripped(read_side(tmp_path / "out", "verdicts")) == stripped(read_side(tmp_path / "clean", "verdicts"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--keep", "2"], "give --preset too"),
        (["--preset", str(PRESET)], "give --keep"),
        (["--preset", str(PRESET), "--keep", "5", "--max-samples", "3"], "--keep 5 is more than --max-samples 3"),
        (["--preset", str(PRESET), "--keep", "5"], "more than the 4 samples a prompt may cost"),
        (["--preset", "nope.yaml", "--keep", "1"], "nope.yaml"),
    ],
)
def test_bad_adaptive_options_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(3))
    r = run_cli("generate", "--input", str(src), "--teacher", str(synthetic_teacher(tmp_path)), "--out",
                str(tmp_path / "o"), *extra)  # fmt: skip
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_synthetic_pass_rates_make_easy_and_hard_prompts_with_longer_wrong_traces(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(50))
    r = run_cli("generate", "--input", str(src), "--teacher", str(synthetic_teacher(tmp_path)), "--out",
                str(tmp_path / "t"), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "t")
    right = [x for x in rows if f"boxed{{{x['answer']}}}" in x["content"]]
    wrong = [x for x in rows if x not in right]
    per_prompt = Counter(x["id"] for x in right)
    assert {0, 4} & set(per_prompt.values()) or len(per_prompt) < 50  # some prompts always right, some never
    assert len(set(per_prompt.values())) >= 3  # rates differ from prompt to prompt
    mean = lambda xs: sum(x["completion_tokens"] for x in xs) / len(xs)  # noqa: E731
    assert mean(wrong) > mean(right) + 30  # 120 against 60 tokens of padding, on a ~250-token trace
    assert pq.read_schema(next((tmp_path / "t").glob("train-*.parquet"))).names[0] == "id"


# --- the plan -----------------------------------------------------------------------------------------


def test_expected_draws_are_what_the_rule_draws_on_average() -> None:
    from distill.teacher.adaptive import expected

    rng = random.Random(1)
    for p, keep, cap in ((0.9, 2, 4), (0.3, 2, 8), (0.5, 1, 4), (0.05, 3, 6)):
        drawn = kept = full = 0
        for _ in range(20_000):
            passes = 0
            for _ in range(cap):
                drawn += 1
                passes += rng.random() < p
                if passes >= keep:
                    break
            kept, full = kept + min(passes, keep), full + (passes >= keep)
        e = expected(p, keep, cap)
        assert abs(drawn / 20_000 - e.drawn) < 0.03 * e.drawn and abs(kept / 20_000 - e.kept) < 0.03 * max(e.kept, 0.1)
        assert abs(full / 20_000 - e.full) < 0.02


def test_r1_800k_offers_the_adaptive_variant_with_the_cost_its_dry_run_prints(tmp_path: Path) -> None:
    text = (REPO / "pipelines" / "r1-800k.yaml").read_text()
    for folder in ("configs", "filters", "students"):
        (tmp_path / folder).symlink_to(REPO / folder)
    (tmp_path / "pipelines").mkdir()
    hosted = text.replace("r1-vllm.yaml", "r1-api.yaml")
    variant = hosted
    for key in ("preset", "keep", "max_samples"):  # the commented variant, switched on
        assert f"      # {key}:" in variant, key
        variant = variant.replace(f"      # {key}:", f"      {key}:")
    lines = {}
    for name, doc in (("fixed", hosted), ("adaptive", variant)):
        (tmp_path / "pipelines" / f"{name}.yaml").write_text(doc)
        r = run_cli("run", str(tmp_path / "pipelines" / f"{name}.yaml"), "--dry-run")
        assert r.returncode == 0, r.stderr
        lines[name] = next(line for line in (r.stdout + r.stderr).splitlines() if line.strip().startswith("traces"))
    cost = {k: re.search(r"~\$([\d,]+) at the teacher's prices", line).group(1) for k, line in lines.items()}
    said = re.search(r"expects ~\$([\d,]+) for this plan against ~\$([\d,]+) for 4 samples", text)
    assert said and said.groups() == (cost["adaptive"], cost["fixed"]), (said and said.groups(), cost)
    assert f"fixed N = 4 would be 4,000,000 requests, ~${cost['fixed']}" in lines["adaptive"]
    assert "+0.0% prompts covered" in lines["adaptive"] and "Beta(2, 1)" in lines["adaptive"]


# --- stopping a trace that has already failed -----------------------------------------------------------


def test_a_streamed_trace_that_loops_or_drifts_is_stopped_and_a_clean_one_never_is(tmp_path: Path) -> None:
    """Late loops and late drifts into Chinese run to max_tokens unless stopped; clean traces are long (~3,000
    tokens of varied re-checking). Streamed, the failed ones stop early with the rule they broke, which `distill
    filter` finds again; every other row, and the kept set, is what the same run without streaming gives."""
    src = write_jsonl(tmp_path / "p.jsonl", prompts(40))
    synthetic = {**SYNTHETIC, "lengths": {"right_tokens": 3000, "wrong_tokens": 3000},
                 "faults": {"loop": 0.15, "drift": 0.15}}  # fmt: skip
    server = ThreadedServer(ServerConfig(seconds_per_token=1e-5, synthetic=synthetic))
    args = ["--input", str(src), "--preset", str(PRESET), "--keep", "2", "--max-samples", "6", "--no-progress"]
    try:
        runs = {}
        for stream in (True, False):
            teacher = server_teacher(tmp_path, server.url, stream=stream, max_tokens=8192)
            out = tmp_path / ("stream" if stream else "whole")
            before = server.stats.generated_tokens
            r = run_cli("generate", *args, "--teacher", str(teacher), "--out", str(out))
            assert r.returncode == 0, r.stderr
            runs[stream] = (read_side(out, "verdicts"), server.stats.generated_tokens - before, r.stderr)
    finally:
        server.stop()
    (streamed, spent, said), (whole, whole_spent, _) = runs[True], runs[False]
    by_key = {(v["id"], v["sample"]): v for v in whole}
    assert [(v["id"], v["sample"]) for v in streamed] == [(v["id"], v["sample"]) for v in whole]
    stopped = [v for v in streamed if v["finish_reason"] == "abort"]
    assert len(stopped) >= 10 and {v["reject_reason"] for v in stopped} == {"repetition", "language_mix"}
    assert "stopped in flight" in said
    for v in stopped:  # each would have failed anyway, cut at max_tokens, at a fraction of the cost
        full = by_key[(v["id"], v["sample"])]
        assert not full["keep"] and full["finish_reason"] == "length" and v["completion_tokens"] < 8192 // 2
    for v in streamed:
        if v["finish_reason"] != "abort":
            assert v == {**by_key[(v["id"], v["sample"])], "latency_s": v["latency_s"]}
    assert spent < 0.8 * whole_spent  # the server's own count: it stopped decoding them
    r = run_cli("filter", "--input", str(tmp_path / "stream"), "--preset", str(PRESET), "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    assert read_rows(tmp_path / "f") == streamed  # filter reads a stopped trace as it was stopped


def test_the_rules_applied_in_flight_never_fail_a_prefix_of_a_trace_that_passes() -> None:
    from distill.filters.config import FilterPreset
    from distill.filters.early import failed_already
    from distill.teacher.config import TeacherConfig
    from distill.teacher.prompting import Request
    from distill.teacher.synthetic import raw_output

    preset = FilterPreset.model_validate(yaml.safe_load(PRESET.read_text()))
    cfg = TeacherConfig(backend="synthetic", model="m", max_tokens=4096,
                        synthetic={"lengths": {"right_tokens": 4000, "wrong_tokens": 4000}})  # fmt: skip
    for i in range(30):  # clean long traces: no prefix fails
        text, _ = raw_output(Request(f"p{i}", 0, "math", f"Compute {i} + 7.", str(i + 7), None), cfg)
        reasoning = text.split("</think>")[0]
        assert len(reasoning) > 3000
        for cut in range(500, len(reasoning), 500):
            assert failed_already(reasoning[:cut], "math", "en", preset, 4096) is None, (i, cut)
    looping = cfg.model_copy(update={"synthetic": cfg.synthetic.model_copy(
        update={"faults": cfg.synthetic.faults.model_copy(update={"loop": 1.0})})})  # fmt: skip
    text, finish = raw_output(Request("q", 0, "math", "Compute 2 + 2.", "4", None), looping)
    assert finish == "length"
    codes = [failed_already(text[:cut], "math", "en", preset, 4096) for cut in range(2000, len(text), 2000)]
    first = next(k for k, c in enumerate(codes) if c is not None)
    assert all(c is not None and c[0] == "repetition" for c in codes[first:])  # once failed, failed for good


def test_a_pipeline_step_takes_the_options_and_its_plan_and_run_agree(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "p.jsonl", prompts(30))
    synthetic_teacher(tmp_path)
    (tmp_path / "r1.yaml").write_text(PRESET.read_text())
    pipeline = {
        "name": "adaptive",
        "plan": {"pass_rates": {"alpha": 2, "beta": 1}},
        "steps": [
            {"name": "traces", "stage": "generate", "input": ["p.jsonl"],
             "options": {"teacher": "teacher.yaml", "preset": "r1.yaml", "keep": 2, "max_samples": 6}},
            {"name": "verdicts", "stage": "filter", "input": "traces", "options": {"preset": "r1.yaml"}},
            {"name": "kept", "stage": "select", "input": "verdicts", "options": {"per_prompt": 2}},
        ],
    }  # fmt: skip
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    runs = tmp_path / "runs"
    plan = run_cli("run", str(path), "--dry-run", "--out", str(runs))
    assert plan.returncode == 0, plan.stderr
    line = next(x for x in (plan.stdout + plan.stderr).splitlines() if x.strip().startswith("traces"))
    assert "until 2 pass, at most 6" in line and "Beta(2, 1)" in line and "fixed N = 4 would be" in line
    r = run_cli("run", str(path), "--no-progress", "--out", str(runs))
    assert r.returncode == 0, r.stderr
    passing = {(v["id"], v["sample"]) for v in read_side(runs / "traces", "verdicts") if v["keep"]}
    assert {(x["id"], x["sample"]) for x in read_rows(runs / "kept")} == passing
    assert read_rows(runs / "verdicts") == read_side(runs / "traces", "verdicts")
