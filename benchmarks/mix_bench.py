"""`distill mix` at scale: 1M SFT rows from two sources, rendered, tokenized in batches, shuffled.

Sources: 750K reasoning rows (a short problem, ~400 characters of reasoning, a boxed answer) and 250K
chat rows, as Parquet. The real `distill mix` command with the project's tiny fast tokenizer; peak RSS of
the whole process tree. Rows are short on purpose: token counting runs at a fixed rate in MB/s, so rows/s
for 20 KB R1 traces is this figure scaled by their size (reported beside it).

    python -m benchmarks.mix_bench --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import run_measured


def generate(root: Path, rows: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    words = ["the", "sum", "of", "two", "numbers", "is", "even", "so", "we", "add", "one", "and", "check"]
    words += ["the", "result", "again", "carefully"]
    sentences = [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(500)]
    n_reason = rows * 3 // 4
    reasoning = [" ".join(rng.choice(sentences) for _ in range(6)) for _ in range(n_reason)]
    table = pa.table({
        "id": [f"p{i}" for i in range(n_reason)],
        "sample": [0] * n_reason,
        "problem": [f"What is {i} + {i % 97}?" for i in range(n_reason)],
        "reasoning": reasoning,
        "content": [f"The answer is \\boxed{{{i + i % 97}}}." for i in range(n_reason)],
        "domain": ["math"] * n_reason,
    })  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "kept.parquet", row_group_size=50_000)
    n_chat = rows - n_reason
    chat = pa.table({"problem": [f"Write a line about {i}." for i in range(n_chat)],
                     "content": [rng.choice(sentences) for _ in range(n_chat)]})  # fmt: skip
    pq.write_table(chat, root / "chat.parquet", row_group_size=50_000)
    (root / "mix.yaml").write_text(
        f"seed: 1\nsources:\n  - {{name: reasoning, path: kept.parquet, quota: {n_reason}}}\n"
        f"  - {{name: chat, path: chat.parquet, quota: {n_chat}}}\n"
    )
    return int(table.nbytes + chat.nbytes)


def _count_shard(path: str) -> tuple[int, float]:
    """Token counting alone over one output shard's texts, as a mix worker does it (one thread)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from distill.tokenizer import count_tokens, load_tokenizer

    messages = pq.read_table(path, columns=["messages"]).column("messages").to_pylist()
    texts = ["\n".join(m["content"] for m in turns) for turns in messages]
    tokenizer = load_tokenizer(None).backend_tokenizer
    started = time.perf_counter()
    count_tokens(tokenizer, texts)
    return len(texts), time.perf_counter() - started


def tokenizer_alone(out: Path) -> float:
    """Rows/s of the token counting alone: the mix's own texts counted by the same Rust tokenizer in as
    many single-threaded worker processes as the mix ran, nothing else timed (the bound on its rate)."""
    from distill.executor import parallel_map

    workers = os.cpu_count() or 1
    results = list(parallel_map(_count_shard, [str(p) for p in sorted(out.glob("train-*.parquet"))], workers))
    return sum(n for n, _ in results) / (sum(s for _, s in results) / workers)


def run(rows: int, root: Path) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    nbytes = generate(root, rows)
    cmd = [sys.executable, "-m", "distill.cli", "mix", "--config", str(root / "mix.yaml"), "--out", str(root / "out"),
           "--no-progress"]  # fmt: skip
    seconds, peak, err = run_measured(cmd)
    manifest = json.loads((root / "out" / "_manifest.json").read_text())
    bound = tokenizer_alone(root / "out")
    shutil.rmtree(root, ignore_errors=True)
    return {
        "tokenizer_rows_per_s": bound,
        "share_of_tokenizer": rows / seconds / bound,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "mb_per_s": nbytes / 1e6 / seconds,
        "mean_row_bytes": nbytes / rows,
        "peak_rss_mb": peak,
        "tokens": manifest["stats"]["mix"]["tokens"]["total"],
        "summary": err.strip().splitlines()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path(".bench/mix"))
    args = ap.parse_args()
    print(json.dumps(run(args.rows, args.dir), indent=1))


if __name__ == "__main__":
    main()
