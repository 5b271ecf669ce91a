"""SFT throughput of the tiny student with packing vs without, on long-tailed row lengths.

Rows are worked arithmetic conversations whose reasoning length follows a log-normal distribution
(median ~120 tokens, a tail to ~1,000, as R1 traces have at 100x the scale). The real `distill train`
command, one process on CPU, one epoch each way over the same rows, same seed. Effective tokens/s =
the rows' tokens (no padding) / training seconds. Baseline: the same run without packing (padded batches).

    python -m benchmarks.train_bench --rows 1500
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import yaml

from benchmarks.common import run_measured

REPO = Path(__file__).resolve().parent.parent


def make_rows(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ["we", "add", "the", "digits", "carry", "one", "then", "check", "the", "sum", "so", "it", "holds"]
    with open(path, "w") as f:
        for i in range(rows):
            n = min(900, int(rng.lognormvariate(4.2, 1.0)))  # words of reasoning: median ~70, long tail
            think = " ".join(rng.choice(words) for _ in range(n))
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            answer = f"<think>\n{think}\n</think>\n\nThe answer is $\\boxed{{{a + b}}}$."
            msgs = [{"role": "user", "content": f"Compute ${a} + {b}$."}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"id": f"r{i}", "messages": msgs}) + "\n")


def run_one(root: Path, data: Path, packing: bool) -> dict:
    doc = yaml.safe_load((REPO / "students" / "tiny.yaml").read_text())
    doc.update({"packing": packing, "epochs": 1, "max_length": 1024, "per_device_batch_size": 4, "save_steps": 100000,
                "logging_steps": 1000})  # fmt: skip
    cfg = root / f"student-{packing}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = root / f"out-{packing}"
    shutil.rmtree(out, ignore_errors=True)
    _, rss, _ = run_measured(
        [sys.executable, "-m", "distill.cli", "train", str(cfg), "--data", str(data), "--out", str(out)]
    )
    summary = json.loads((out / "distill_train.json").read_text())
    tokens = summary["plan"]["tokens"]
    return {"packing": packing, "tokens": tokens, "seconds": summary["seconds"], "steps": summary["global_step"],
            "tokens_per_s": tokens / summary["seconds"], "peak_rss_mb": rss,
            "padded_tokens": summary["plan"]["padded_tokens"]}  # fmt: skip


def run(root: Path, rows: int = 1500) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "rows.jsonl"
    make_rows(data, rows)
    unpacked = run_one(root, data, packing=False)
    packed = run_one(root, data, packing=True)
    return {
        "rows": rows,
        "packed": packed,
        "unpacked": unpacked,
        "speedup": packed["tokens_per_s"] / unpacked["tokens_per_s"],
        # what packing can save at most: the padded batches' token slots over the real tokens
        "ideal_speedup": unpacked["padded_tokens"] / unpacked["tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--dir", default=".bench/train")
    args = ap.parse_args()
    print(json.dumps(run(Path(args.dir), args.rows), indent=1))


if __name__ == "__main__":
    main()
