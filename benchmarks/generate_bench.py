"""Teacher-client overhead: `distill generate` against a local zero-latency OpenAI-compatible server.

10K prompts, one sample each, concurrency 1,000, against `distill.teacher.fault_server --canned` (a
raw-asyncio server answering one fixed completion, in its own process: one core for it, one for the
client). The real `distill generate` command end to end (planning, requests, parsing, journals,
shards, manifest); peak RSS of the client's process tree. Baseline: sequential calls of the `openai`
SDK, the way a naive generation script is written.

    python -m benchmarks.generate_bench --prompts 10000 --concurrency 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.common import run_measured


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.teacher.fault_server", "--canned", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def distill_client(root: Path, url: str, prompts: int, concurrency: int) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(prompts):
            f.write(json.dumps({"problem": f"What is {i} + {i % 97}?", "answer": str(i + i % 97), "domain": "math"}))
            f.write("\n")
    (root / "teacher.yaml").write_text(
        f"backend: openai\nmodel: canned\nbase_urls: ['{url}']\nconcurrency: {concurrency}\nsamples: 1\n"
    )
    cmd = [sys.executable, "-m", "distill.cli", "generate", "--input", str(root / "prompts.jsonl"),
           "--teacher", str(root / "teacher.yaml"), "--out", str(root / "traces"), "--no-progress",
           "--rows-per-shard", "2000"]  # fmt: skip
    seconds, rss, _ = run_measured(cmd)
    stats = json.loads((root / "traces" / "_manifest.json").read_text())["stats"]["generate"]
    assert stats["traces"] == prompts and stats["failed_requests"] == 0
    run = stats["this_run"]
    return {
        "requests": run["requests"],
        "stage_seconds": run["seconds"],
        "req_per_s": run["requests"] / run["seconds"],
        "process_seconds": seconds,
        "req_per_s_process": run["requests"] / seconds,
        "peak_rss_mb": rss,
    }


def openai_sequential(url: str, requests: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="none", max_retries=0)
    started = time.perf_counter()
    for i in range(requests):
        client.chat.completions.create(
            model="canned", messages=[{"role": "user", "content": f"What is {i} + 1?"}], temperature=0.6, top_p=0.95
        )
    seconds = time.perf_counter() - started
    return {"requests": requests, "seconds": seconds, "req_per_s": requests / seconds}


def run(root: Path, prompts: int = 10_000, concurrency: int = 1_000, naive_requests: int = 2_000) -> dict:
    server, url = start_server()
    try:
        ours = distill_client(root, url, prompts, concurrency)
        naive = openai_sequential(url, naive_requests)
    finally:
        server.kill()
        server.wait()
    return {"prompts": prompts, "concurrency": concurrency, "distill": ours, "openai_sequential": naive}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=1_000)
    ap.add_argument("--dir", default=".bench/generate")
    args = ap.parse_args()
    print(json.dumps(run(Path(args.dir), args.prompts, args.concurrency), indent=1))


if __name__ == "__main__":
    main()
