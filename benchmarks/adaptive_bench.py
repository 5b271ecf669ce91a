"""Judging traces in flight (issue 30): teacher tokens per kept trace, fixed N = 4 against `--keep 2`.

2,000 arithmetic prompts, each with its own pass rate drawn from Beta(2, 1) (most easy, a tail of hard ones),
wrong traces longer than right ones (~1,000 against ~600 tokens of reasoning: R1's lengths scaled down 10x for
a CPU), answered by the fault-injecting server in its own process, decoding at a set time per token. Three
arms, each to its kept set:

- fixed: `generate` (samples: 4) -> `filter` -> `select --per-prompt 2`, as before;
- adaptive, max 4: `generate --preset filters/r1.yaml --keep 2 --max-samples 4` -> `filter` -> `select`;
- adaptive, max 8: the same with `--max-samples 8`.

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
from math import comb
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
    """Expected tokens, kept traces, prompts with one and with `keep` kept, for these pass rates."""
    tokens = kept = covered = full = 0.0
    for p in rates:
        binom = [comb(cap, j) * p**j * (1 - p) ** (cap - j) for j in range(cap + 1)]
        k = sum(min(keep, j) * b for j, b in enumerate(binom))
        if fixed:
            drawn, rights = float(cap), cap * p
        else:  # samples drawn until `keep` pass or `cap`: sum over t of P(fewer than keep passes in t samples)
            drawn = sum(sum(comb(t, j) * p**j * (1 - p) ** (t - j) for j in range(keep)) for t in range(cap))
            rights = k  # every passing sample drawn is kept: the rule stops at `keep`
        tokens += rights * right + (drawn - rights) * wrong
        kept += k
        covered += 1 - (1 - p) ** cap
        full += sum(b for j, b in enumerate(binom) if j >= keep)
    return {"tokens": tokens, "kept": kept, "covered": covered, "full": full, "tokens_per_kept": tokens / kept}


def run(work: Path, prompts: int = 2000, seconds_per_token: float = 2e-5, concurrency: int = 64) -> dict[str, Any]:
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
