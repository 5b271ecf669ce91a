"""Judging traces in flight (issue 30): teacher tokens per kept trace, fixed N = 4 against `--keep 2`.

2,000 arithmetic prompts, each with its own pass rate drawn from Beta(2, 1) (most easy, a tail of hard ones),
wrong traces longer than right ones (~1,000 against ~600 tokens of reasoning: R1's lengths scaled down 10x for
a CPU), answered by the fault-injecting server in its own process, decoding at a set time per token. Three
arms, each to its kept set:

- fixed: `generate` (samples: 4) -> `filter` -> `select --per-prompt 2`, as before;
- adaptive, max 4: `generate --preset filters/r1.yaml --keep 2 --max-samples 4` -> `filter` -> `select`;
- adaptive, max 8: the same with `--max-samples 8`; and once more with `--speculate 2` (the tail sooner).

The server decodes 2,000 tokens/s per request (a 500-token trace in 0.25 s), 64 requests at once: the teacher,
not this client, is the limit, as with R1 on GPUs.

The bill is what the server itself counted as decoded (cancelled requests up to their abort included). The
theory beside each arm: the sequential rule's expectation for the same prompts' pass rates and the mean
lengths of right and wrong traces measured in the fixed arm.

    python -m benchmarks.adaptive_bench [--prompts 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parent.parent
DISTILL = [sys.executable, "-m", "distill.cli"]
PRESET = REPO / "filters" / "r1.yaml"
SYNTHETIC = {"seed": 0, "pass_rate": {"alpha": 2.0, "beta": 1.0},
             "lengths": {"right_tokens": 600, "wrong_tokens": 1000}}  # fmt: skip


def _rows(directory: Path, columns: list[str]) -> list[dict[str, Any]]:
    files = sorted(directory.glob("train-*.parquet"))
    return pq.read_table(files, columns=columns).to_pylist() if files else []


def _server_tokens(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as r:
        return json.loads(r.read())["generated_tokens"]


def _arm(work: Path, name: str, prompts: Path, teacher: Path, url: str, extra: list[str]) -> dict[str, Any]:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    before = _server_tokens(url)
    started = time.perf_counter()
    common = ["--rows-per-shard", "500", "--no-progress"]
    steps = [
        ["generate", "--input", str(prompts), "--teacher", str(teacher), "--out", str(out / "traces"), *extra],
        ["filter", "--input", str(out / "traces"), "--preset", str(PRESET), "--out", str(out / "verdicts")],
        ["select", "--input", str(out / "verdicts"), "--per-prompt", "2", "--out", str(out / "kept")],
    ]
    seconds = []
    for step in steps:
        t = time.perf_counter()
        r = subprocess.run([*DISTILL, *step, *common], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{name}: {' '.join(step[:1])} failed:\n{r.stderr[-3000:]}")
        seconds.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    tokens = _server_tokens(url) - before
    kept = _rows(out / "kept", ["id"])
    per_prompt: dict[str, int] = {}
    for row in kept:
        per_prompt[row["id"]] = per_prompt.get(row["id"], 0) + 1
    manifest = json.loads((out / "traces" / "_manifest.json").read_text())["stats"]["generate"]
    return {
        "tokens": tokens,
        "kept": len(kept),
        "covered": len(per_prompt),
        "full": sum(1 for n in per_prompt.values() if n >= 2),
        "traces": manifest["traces"],
        "cancelled": manifest.get("adaptive", {}).get("this_run", {}).get("cancelled", 0),
        "removed": manifest.get("adaptive", {}).get("removed", 0),
        "wall_s": wall,
        "generate_s": seconds[0],
        "tokens_per_kept": tokens / len(kept) if kept else float("nan"),
    }


def theory(rates: list[float], right: float, wrong: float, keep: int, cap: int, fixed: bool) -> dict[str, float]:
    """Expected tokens, kept traces, prompts with one and with `keep` kept, for these pass rates (the plan's own
    arithmetic, distill.teacher.adaptive.expected)."""
    from distill.teacher.adaptive import expected

    found = [expected(p, keep, cap, fixed) for p in rates]
    tokens = sum(e.passing * right + (e.drawn - e.passing) * wrong for e in found)
    kept = sum(e.kept for e in found)
    return {"tokens": tokens, "kept": kept, "covered": sum(e.covered for e in found),
            "full": sum(e.full for e in found), "tokens_per_kept": tokens / kept}  # fmt: skip


def late_failures(work: Path, prompts: int = 200, max_tokens: int = 4096) -> dict[str, Any]:
    """Traces that loop or drift into Chinese after reasoning normally, until max_tokens: the same adaptive run
    streamed (each trace watched, stopped once a rule it cannot recover from fails) and whole."""
    from distill.teacher.fault_server import ServerConfig, ThreadedServer

    work.mkdir(parents=True, exist_ok=True)
    src = work / "prompts.jsonl"
    rows = [{"problem": f"Compute {13 * i + 5} + {31 * i + 2}.", "answer": str(44 * i + 7), "domain": "math",
             "source": "bench"} for i in range(prompts)]  # fmt: skip
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    synthetic = {**SYNTHETIC, "faults": {"loop": 0.1, "drift": 0.05}}
    server = ThreadedServer(ServerConfig(seconds_per_token=2e-5, synthetic=synthetic))
    out: dict[str, Any] = {"prompts": prompts, "max_tokens": max_tokens}
    try:
        for stream in (False, True):
            teacher = work / "teacher.yaml"
            teacher.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [server.url],
                                               "samples": 4, "concurrency": 64, "max_tokens": max_tokens,
                                               "stream": stream}))  # fmt: skip
            dest = work / ("stream" if stream else "whole")
            shutil.rmtree(dest, ignore_errors=True)
            before = server.stats.generated_tokens
            r = subprocess.run([*DISTILL, "generate", "--input", str(src), "--teacher", str(teacher), "--out",
                                str(dest), "--preset", str(PRESET), "--keep", "2", "--max-samples", "4",
                                "--no-progress"], cwd=REPO, capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-3000:])
            rows = pq.read_table(sorted((dest / "_verdicts").glob("*.parquet"))).to_pylist()
            out["stream" if stream else "whole"] = {
                "server_tokens": server.stats.generated_tokens - before,
                "rows": {(v["id"], v["sample"]): (v["finish_reason"], v["completion_tokens"], v["keep"]) for v in rows},
            }
    finally:
        server.stop()
    whole, streamed = out["whole"]["rows"], out["stream"]["rows"]
    stopped = [k for k, v in streamed.items() if v[0] == "abort"]
    out["stopped"] = len(stopped)
    out["stopped_tokens"] = sum(streamed[k][1] for k in stopped)
    out["stopped_whole_tokens"] = sum(whole[k][1] for k in stopped)
    out["stopped_that_passed_whole"] = sum(1 for k in stopped if whole[k][2])
    out["same_rows"] = whole.keys() == streamed.keys()
    for arm in ("whole", "stream"):
        del out[arm]["rows"]
    return out


def run(work: Path, prompts: int = 2000, seconds_per_token: float = 5e-4, concurrency: int = 64) -> dict[str, Any]:
    from distill.teacher.config import SyntheticConfig
    from distill.teacher.synthetic import prompt_pass_rate

    work.mkdir(parents=True, exist_ok=True)
    problems = [(f"Compute {17 * i + 3} + {29 * i + 11}.", str(46 * i + 14)) for i in range(prompts)]
    src = work / "prompts.jsonl"
    src.write_text("".join(json.dumps({"problem": q, "answer": a, "domain": "math", "source": "bench"}) + "\n"
                           for q, a in problems))  # fmt: skip
    synthetic_yaml = work / "synthetic.yaml"
    synthetic_yaml.write_text(yaml.safe_dump({"backend": "synthetic", "model": "m", "synthetic": SYNTHETIC}))
    server = subprocess.Popen(
        [sys.executable, "-m", "distill.teacher.fault_server", "--port", "0", "--teacher", str(synthetic_yaml),
         "--seconds-per-token", str(seconds_per_token)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = f"http://127.0.0.1:{int(line.split()[-1])}/v1"
        teacher = work / "teacher.yaml"
        teacher.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [url], "samples": 4,
                                           "concurrency": concurrency, "max_tokens": 32768}))  # fmt: skip
        preset = ["--preset", str(PRESET), "--keep", "2"]
        arms = {
            "fixed": _arm(work, "fixed", src, teacher, url, []),
            "adaptive-4": _arm(work, "adaptive-4", src, teacher, url, [*preset, "--max-samples", "4"]),
            "adaptive-8": _arm(work, "adaptive-8", src, teacher, url, [*preset, "--max-samples", "8"]),
            "adaptive-8-speculate": _arm(
                work, "adaptive-8-speculate", src, teacher, url, [*preset, "--max-samples", "8", "--speculate", "2"]
            ),
        }
    finally:
        server.terminate()
        server.wait()
    verdicts = pq.read_table(sorted((work / "fixed" / "verdicts").glob("train-*.parquet")),
                             columns=["keep", "completion_tokens"]).to_pylist()  # fmt: skip
    passing = [r["completion_tokens"] for r in verdicts if r["keep"]]
    failing = [r["completion_tokens"] for r in verdicts if not r["keep"]]
    right, wrong = sum(passing) / len(passing), sum(failing) / len(failing)
    rates = [prompt_pass_rate(SyntheticConfig(**SYNTHETIC), q) or 0.0 for q, _ in problems]
    expected = {
        "fixed": theory(rates, right, wrong, 2, 4, fixed=True),
        "adaptive-4": theory(rates, right, wrong, 2, 4, fixed=False),
        "adaptive-8": theory(rates, right, wrong, 2, 8, fixed=False),
    }
    expected["adaptive-8-speculate"] = expected["adaptive-8"]
    return {"prompts": prompts, "seconds_per_token": seconds_per_token, "concurrency": concurrency,
            "right_tokens": right, "wrong_tokens": wrong, "arms": arms, "theory": expected}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--work", default=".bench/adaptive")
    args = ap.parse_args()
    print(json.dumps(run(Path(args.work), args.prompts), indent=1))


if __name__ == "__main__":
    main()
