"""`distill generate`: exactly one row per (id, sample) whatever the servers do, resumable after SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from distill.errors import UserError
from distill.stages import invoke
from distill.teacher.config import R1_MATH_SUFFIX, TeacherConfig
from distill.teacher.fault_server import FAULTS, ServerConfig, ThreadedServer
from distill.teacher.parse import from_message, split_output
from distill.teacher.prompting import Request, completion_prompt
from tests.conftest import DISTILL, REPO, prompts, read_rejects, read_rows, run_cli, write_jsonl

SYNTHETIC = REPO / "configs" / "teacher" / "synthetic.yaml"


def keys(rows: list[dict]) -> Counter:
    return Counter((r["id"], r["sample"]) for r in rows)


def teacher(url: str | list[str], **kw) -> TeacherConfig:
    urls = [url] if isinstance(url, str) else url
    base = dict(
        backend="openai",
        model="m",
        base_urls=urls,
        samples=2,
        concurrency=16,
        request_timeout_s=1.0,
        backoff_s=0.02,
        max_backoff_s=0.2,
        max_retries=30,
        endpoint_cooldown_s=0.2,
    )
    return TeacherConfig(**{**base, **kw})


def ids_of(path: Path) -> list[str]:
    from distill.records import stable_id

    return [stable_id(json.loads(line)["problem"]) for line in path.read_text().splitlines()]


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "prompts.jsonl", prompts(60))


def assert_exactly_once(out: Path, prompt_file: Path, samples: int) -> list[dict]:
    rows = read_rows(out)
    counts = keys(rows)
    assert max(counts.values()) == 1, "a (id, sample) pair appears twice"
    assert set(counts) == {(i, s) for i in ids_of(prompt_file) for s in range(samples)}
    return rows


# --- parsing and prompts ------------------------------------------------------------------------------


def test_reasoning_comes_from_the_parser_field_or_inline_tags() -> None:
    assert from_message({"reasoning_content": "\nthink\n", "content": "\nans"}, think_forced=False) == ("think", "ans")
    assert from_message({"reasoning": "t", "content": None}, think_forced=False) == ("t", "")  # vLLM >= 0.10
    assert split_output("<think>\nA\n</think>\n\nB", think_forced=False) == ("A", "B")
    assert split_output("A\n</think>\nB", think_forced=True) == ("A", "B")  # the template opened the block
    # Never closed: everything stays in content, opened, so the filter sees an unclosed block.
    assert split_output("half a thought", think_forced=True) == (None, "<think>\nhalf a thought")
    assert split_output("plain answer", think_forced=False) == (None, "plain answer")


def test_completion_prompt_is_r1_format_and_math_gets_the_boxed_instruction() -> None:
    cfg = TeacherConfig(backend="openai", model="m", base_urls=["http://x/v1"], api="completion")
    math = completion_prompt(Request("a", 0, "math", "What is 2+2?", None, 1), cfg)
    assert math == f"<｜begin▁of▁sentence｜><｜User｜>What is 2+2?\n{R1_MATH_SUFFIX}<｜Assistant｜><think>\n"
    code = completion_prompt(Request("b", 0, "code", "Write f.", None, 1), cfg)
    assert code == "<｜begin▁of▁sentence｜><｜User｜>Write f.<｜Assistant｜><think>\n"


def test_request_seeds_are_stable_per_prompt_and_sample() -> None:
    cfg = TeacherConfig(backend="synthetic", model="s")
    assert cfg.request_seed("abc", 0) == cfg.request_seed("abc", 0)
    assert len({cfg.request_seed("abc", s) for s in range(50)}) == 50
    assert TeacherConfig(backend="synthetic", model="s", seed=None).request_seed("abc", 0) is None


# --- the synthetic teacher ----------------------------------------------------------------------------


def test_synthetic_teacher_faults_reach_every_filter(tmp_path: Path) -> None:
    r = run_cli(
        "generate",
        "--input",
        "data/demo/prompts.jsonl",
        "--teacher",
        str(SYNTHETIC),
        "--out",
        str(tmp_path / "traces"),
        "--rows-per-shard",
        "100",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "traces")
    assert all(r["prompt"] == f"{r['problem']}\n{R1_MATH_SUFFIX}" for r in rows if r["domain"] == "math")
    assert max(keys(rows).values()) == 1 and len(rows) == 602 * 4  # 608 lines: 5 malformed, 1 repeated prompt
    assert {"duplicate_id", "malformed_json"} <= {x["error"].split(":")[0] for x in read_rejects(tmp_path / "traces")}
    r = run_cli(
        "filter",
        "--input",
        str(tmp_path / "traces"),
        "--preset",
        "filters/r1.yaml",
        "--out",
        str(tmp_path / "verdicts"),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    reasons = Counter(v["reject_reason"] for v in read_rows(tmp_path / "verdicts"))
    for code in (
        "wrong_answer",
        "no_answer",
        "truncated",
        "unclosed_think",
        "repetition",
        "language_mix",
        "code_block",
        "long_paragraph",
    ):
        assert reasons[code] > 0, (code, reasons)
    assert reasons[None] > 0.6 * len(rows)  # most traces are good: the faults are set to ~34%


def test_synthetic_kill_at_commit_steps_then_rerun_gives_the_clean_rows(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(40))
    args = ["generate", "--input", str(src), "--teacher", str(SYNTHETIC), "--rows-per-shard", "10", "--no-progress"]
    assert run_cli(*args, "--out", str(tmp_path / "clean")).returncode == 0
    clean = read_rows(tmp_path / "clean")
    for point in ("file_renamed:2", "manifest_renamed:3", "manifest_renamed:5"):
        out = tmp_path / point.replace(":", "-")
        assert run_cli(*args, "--out", str(out), env={"DISTILL_CRASH_AT": point}).returncode == -signal.SIGKILL
        r = run_cli(*args, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert read_rows(out) == clean, point


# --- against a fault-injecting server -------------------------------------------------------------------


def test_every_fault_and_a_dead_endpoint_still_give_each_pair_exactly_once(tmp_path: Path, prompt_file: Path) -> None:
    server = ThreadedServer(ServerConfig(fault_rate=0.35, hang_s=3.0, seed=7))
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    try:
        result = invoke(
            "generate",
            [str(prompt_file)],
            tmp_path / "out",
            settings=teacher([server.url, dead]),
            rows_per_shard=25,
            show_progress=False,
        )
    finally:
        server.stop()
    rows = assert_exactly_once(tmp_path / "out", prompt_file, samples=2)
    assert all(r["content"] and r["finish_reason"] == "stop" and r["completion_tokens"] for r in rows)
    stats = result.manifest.stats["generate"]
    assert stats["failed_requests"] == 0 and not read_rejects(tmp_path / "out")
    assert set(server.stats.faults) == set(FAULTS)  # every fault was served ...
    errors = stats["this_run"]["errors"]
    for kind in ("http_429", "http_5xx", "timeout", "dropped", "refused"):  # ... and met by the client
        assert errors.get(kind, 0) > 0, errors
    assert not (tmp_path / "out" / ".work").exists()  # journals are data in flight: gone once complete


def test_retry_after_is_honoured(tmp_path: Path, prompt_file: Path) -> None:
    server = ThreadedServer(
        ServerConfig(fault_rate=0.5, faults=("http_429",), retry_after="0.3", seed=1), keep_events=True
    )
    try:
        invoke(
            "generate",
            [str(prompt_file)],
            tmp_path / "out",
            settings=teacher(server.url, samples=1),
            rows_per_shard=100,
            show_progress=False,
        )
        events = list(server.stats.events)
    finally:
        server.stop()
    by_key: dict[str, list[tuple[float, str]]] = {}
    for key, t, what in events:
        by_key.setdefault(key, []).append((t, what))
    gaps = [b[0] - a[0] for seq in by_key.values() for a, b in itertools.pairwise(seq) if a[1] == "http_429"]
    assert len(gaps) >= 10
    assert min(gaps) >= 0.29, min(gaps)  # backoff alone would be <= 0.2 s here


def test_streamed_and_completion_api_answers_parse_like_whole_ones(tmp_path: Path, prompt_file: Path) -> None:
    server = ThreadedServer(ServerConfig(reasoning_parser=True))
    try:
        outs = {}
        for name, kw in {"whole": {}, "stream": {"stream": True}, "completion": {"api": "completion"}}.items():
            invoke(
                "generate", [str(prompt_file)], tmp_path / name, settings=teacher(server.url, **kw), show_progress=False
            )
            outs[name] = {(r["id"], r["sample"]): r for r in assert_exactly_once(tmp_path / name, prompt_file, 2)}
    finally:
        server.stop()
    for key, row in outs["whole"].items():
        assert row["reasoning"] and "\\boxed{" in row["content"]
        assert (outs["stream"][key]["reasoning"], outs["stream"][key]["content"]) == (row["reasoning"], row["content"])
        assert outs["stream"][key]["completion_tokens"] == row["completion_tokens"]  # usage from the last event
        assert outs["completion"][key]["content"].startswith("The answer is")


def test_failed_requests_are_rejected_then_the_next_run_fills_only_them(tmp_path: Path, prompt_file: Path) -> None:
    server = ThreadedServer(ServerConfig(fail_matching="Compute 7 + 8"))  # one prompt always fails
    out = tmp_path / "out"
    try:
        cfg = teacher(server.url, max_retries=2)
        first = invoke("generate", [str(prompt_file)], out, settings=cfg, rows_per_shard=20, show_progress=False)
        assert first.manifest.complete and first.manifest.stats["generate"]["failed_requests"] == 2
        rejects = read_rejects(out)
        assert [r["error"].split(":")[0] for r in rejects] == ["request_failed"] * 2
        assert "HTTP 500" in rejects[0]["error"] and "Compute 7 + 8" in rejects[0]["raw"]
        untouched = {s["file"]: s["sha256"] for s in json.loads((out / "_manifest.json").read_text())["shards"]}
        answered_before = server.stats.answered
        server.server.cfg.fail_matching = None  # the server recovers
        second = invoke("generate", [str(prompt_file)], out, settings=cfg, rows_per_shard=20, show_progress=False)
    finally:
        server.stop()
    assert server.stats.answered - answered_before == 2  # only the two failed samples were asked again
    assert second.manifest.stats["generate"]["failed_requests"] == 0 and not read_rejects(out)
    assert_exactly_once(out, prompt_file, 2)
    after = {s["file"]: s["sha256"] for s in json.loads((out / "_manifest.json").read_text())["shards"]}
    assert sum(after[f] != untouched[f] for f in after) == 1  # only the shard with the failures was rewritten


@pytest.mark.parametrize("legacy", [False, True])
def test_sigkill_mid_run_then_rerun_requests_only_what_is_missing(tmp_path: Path, legacy: bool) -> None:
    """`legacy`: the killed run's journals are where versions before 2026-12 kept them (OUT/_work/)."""
    src = write_jsonl(tmp_path / "p.jsonl", prompts(150))
    server = ThreadedServer(ServerConfig(latency_s=0.02))
    out = tmp_path / "out"
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(
        yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [server.url], "samples": 2, "concurrency": 4})
    )
    args = ["generate", "--input", str(src), "--teacher", str(cfg), "--out", str(out), "--rows-per-shard", "40"]
    args += ["--no-progress"]
    try:
        proc = subprocess.Popen([*DISTILL, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _done_pairs(out) < 110:  # past the first shard (80 samples)
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _done_pairs(out)
        assert 80 <= done < 300
        if legacy:
            (out / ".work" / "journal").rename(out / "_work")
            (out / ".work").rmdir()
        asked_before = server.stats.requests
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        asked = server.stats.requests - asked_before
    finally:
        server.stop()
    assert asked == 300 - done, (done, r.stderr[-2000:])
    assert_exactly_once(out, src, 2)


def _done_pairs(out: Path) -> int:
    """Samples on disk: rows of committed shards plus whole lines of the journals of chunks not committed (a
    kill between a shard's commit and its journal's removal leaves both; the rerun drops that journal)."""
    n, committed = 0, set()
    manifest = out / "_manifest.json"
    if manifest.exists():
        with contextlib.suppress(json.JSONDecodeError, KeyError):  # caught mid-rewrite
            shards = json.loads(manifest.read_text())["shards"]
            n += sum(s["rows"] for s in shards)
            committed = {f"chunk-{s['index']:05d}.jsonl" for s in shards}
    for work in (out / ".work" / "journal", out / "_work"):
        for j in work.glob("chunk-*.jsonl"):
            if j.name in committed:
                continue
            n += len(
                {
                    tuple(json.loads(line)[k] for k in ("id", "sample"))
                    for line in j.read_bytes().splitlines(keepends=True)
                    if line.endswith(b"\n")
                }
            )
    return n


# --- mistakes -------------------------------------------------------------------------------------------


def test_wrong_api_key_stops_the_run_with_one_line(tmp_path: Path, prompt_file: Path) -> None:
    server = ThreadedServer(ServerConfig(api_key="right"))
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [server.url], "api_key_env": "TEST_KEY"})
    )
    try:
        args = ("generate", "--input", str(prompt_file), "--teacher", str(cfg), "--out", str(tmp_path / "o"))
        r = run_cli(*args, env={"TEST_KEY": "wrong"})
        unset = run_cli(*args, env={"TEST_KEY": ""})
        ok = run_cli(*args, "--no-progress", env={"TEST_KEY": "right"})
    finally:
        server.stop()
    assert r.returncode == 2 and "HTTP 401" in r.stderr and "api_key_env" in r.stderr and "Traceback" not in r.stderr
    assert unset.returncode == 2 and "TEST_KEY" in unset.stderr
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"backend": "openai", "model": "m"}, "needs base_urls"),
        ({"backend": "synthetic", "model": "m", "temperatur": 0.6}, "did you mean 'temperature'"),
        (
            {"backend": "synthetic", "model": "m", "synthetic": {"faults": {"truncated": 0.8, "repetition": 0.5}}},
            "at most one fault per sample",
        ),
        ({"backend": "sglang", "model": "m"}, "backend"),
    ],
)
def test_bad_teacher_yaml_is_one_line(tmp_path: Path, prompt_file: Path, doc: dict, message: str) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    r = run_cli("generate", "--input", str(prompt_file), "--teacher", str(cfg), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serving_settings_may_change_between_runs_but_sampling_may_not(tmp_path: Path, prompt_file: Path) -> None:
    base = TeacherConfig(backend="synthetic", model="s", samples=1)
    invoke("generate", [str(prompt_file)], tmp_path / "o", settings=base, show_progress=False)
    again = invoke(
        "generate",
        [str(prompt_file)],
        tmp_path / "o",
        settings=base.model_copy(update={"concurrency": 7, "batch_size": 3}),
        show_progress=False,
    )
    assert again.skipped
    with pytest.raises(UserError, match="config differs"):
        invoke(
            "generate",
            [str(prompt_file)],
            tmp_path / "o",
            settings=base.model_copy(update={"temperature": 1.0}),
            show_progress=False,
        )


def test_transformers_backend_generates_from_the_tiny_model(tmp_path: Path) -> None:
    from distill.train.tiny import tiny_model_path

    src = write_jsonl(tmp_path / "p.jsonl", prompts(5))
    cfg = TeacherConfig(backend="transformers", model=str(tiny_model_path()), samples=2, max_tokens=12, batch_size=4)
    invoke("generate", [str(src)], tmp_path / "o", settings=cfg, show_progress=False)
    rows = assert_exactly_once(tmp_path / "o", src, 2)
    assert all(0 < r["completion_tokens"] <= 12 and r["prompt_tokens"] > 0 for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["content"].startswith("<think>") for r in rows if r["reasoning"] is None)  # opened by the template


def test_shipped_teacher_configs_load_and_serving_scripts_parse() -> None:
    from distill.config import load_config

    yamls = sorted((REPO / "configs" / "teacher").glob("*.yaml"))
    assert len(yamls) >= 5
    for path in yamls:
        cfg = load_config(path, TeacherConfig)
        if path.stem.startswith(("judge-", "v3", "replay-")):  # a judge, DeepSeek-V3 for the non-reasoning rows
            continue
        assert cfg.temperature == 0.6 and cfg.top_p == 0.95, path  # the R1 recipe
    scripts = sorted((REPO / "configs" / "teacher" / "serve").glob("*.sh")) + sorted(
        (REPO / "configs" / "slurm").glob("*.sbatch")
    )
    assert len(scripts) >= 5
    for script in scripts:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)
    served = (REPO / "configs" / "teacher" / "serve" / "vllm-r1-2x8xh100.sh").read_text()
    assert "--reasoning-parser deepseek_r1" in served and "--pipeline-parallel-size 2" in served
