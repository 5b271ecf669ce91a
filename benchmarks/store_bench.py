"""Store throughput: write, then stream-read, N trace rows of ~4 KB through a dataset directory.

Each phase runs in its own process so that its peak RSS (ru_maxrss) is its own. MB/s counts the
rows' in-memory (Arrow) bytes, the data a stage hands to the store, not the compressed bytes on disk.

    python -m benchmarks.store_bench --rows 1000000 --dir .bench/store
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from distill.records import RECORDS
from distill.store import DatasetReader, DatasetWriter

BATCH_ROWS = 2_000
POOL_BATCHES = 10  # distinct batches of text, reused with fresh ids: generating 4 GB of text would be the bottleneck
ROWS_PER_SHARD = 50_000


def _words(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    vocab += ["=", "+", "\\frac{1}{2}", "x^2", "Wait,", "so", "the", "answer", "is", "\\boxed{42}", "\n\n"]
    return vocab


def _text(rng: random.Random, vocab: list[str], chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(vocab)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def make_pool(seed: int = 0) -> list[pa.RecordBatch]:
    """Trace rows of ~4 KB: ~3.3 KB reasoning, ~400 B content, ~250 B problem, and the small columns."""
    rng = random.Random(seed)
    vocab = _words(rng)
    schema = RECORDS["trace"].schema
    pool = []
    for b in range(POOL_BATCHES):
        rows = []
        for i in range(BATCH_ROWS):
            rows.append(
                {
                    "id": f"{b:04d}{i:012d}",
                    "source": "bench",
                    "domain": "math",
                    "problem": _text(rng, vocab, 250),
                    "answer": str(rng.randint(0, 999)),
                    "language": "en",
                    "sample": rng.randint(0, 3),
                    "reasoning": _text(rng, vocab, 3300),
                    "content": _text(rng, vocab, 400),
                    "finish_reason": "stop",
                    "prompt_tokens": rng.randint(50, 200),
                    "completion_tokens": rng.randint(500, 2000),
                    "teacher": "deepseek-ai/DeepSeek-R1",
                    "params": '{"temperature":0.6,"top_p":0.95}',
                }
            )
        pool.append(pa.RecordBatch.from_pylist(rows, schema=schema))
    return pool


def write(root: Path, rows: int) -> dict:
    pool = make_pool()
    schema = RECORDS["trace"].schema
    id_col = schema.get_field_index("id")
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    nbytes = written = 0
    with DatasetWriter(root, stage="bench", record="trace", schema_version=1, config={"rows": rows}, inputs=[]) as ds:
        ds.open()
        shard_index = 0
        while written < rows:
            shard = ds.shard(shard_index, schema)
            in_shard = 0
            while in_shard < ROWS_PER_SHARD and written < rows:
                batch = pool[(written // BATCH_ROWS) % POOL_BATCHES]
                n = min(BATCH_ROWS, rows - written, ROWS_PER_SHARD - in_shard)
                ids = pa.array([f"{written + k:016d}" for k in range(n)], pa.string())
                batch = batch.slice(0, n).set_column(id_col, "id", ids)
                shard.write(batch)
                nbytes += batch.nbytes
                written += n
                in_shard += n
            ds.record_shard(shard.commit(rows_in=in_shard))
            shard_index += 1
        ds.finish()
    seconds = time.perf_counter() - started
    disk = sum(p.stat().st_size for p in root.glob("train-*.parquet"))
    return {
        "rows": written,
        "mb": nbytes / 1e6,
        "seconds": seconds,
        "mb_s": nbytes / 1e6 / seconds,
        "disk_mb": disk / 1e6,
        "peak_rss_mb": _peak_rss_mb(),
    }


def read(root: Path) -> dict:
    started = time.perf_counter()
    reader = DatasetReader(root)
    rows = nbytes = 0
    for batch in reader.iter_batches(batch_size=4096):
        rows += batch.num_rows
        nbytes += batch.nbytes
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "mb": nbytes / 1e6,
        "seconds": seconds,
        "mb_s": nbytes / 1e6 / seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


def naive_jsonl(path: Path, rows: int) -> dict:
    """The baseline: what a script without a store does, one JSON line per row with the json module."""
    pool = [b.to_pylist() for b in make_pool()]
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    nbytes = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            row = pool[(i // BATCH_ROWS) % POOL_BATCHES][i % BATCH_ROWS]
            line = json.dumps({**row, "id": f"{i:016d}"})
            nbytes += len(line) + 1
            f.write(line + "\n")
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            n += 1
    read_s = time.perf_counter() - started
    path.unlink()
    return {
        "rows": n,
        "mb": nbytes / 1e6,
        "write_mb_s": nbytes / 1e6 / write_s,
        "read_mb_s": nbytes / 1e6 / read_s,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows: int, root: Path) -> dict:
    """Both phases, each in a fresh interpreter."""
    out = {}
    for phase in ("write", "read"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.store_bench",
                "--phase",
                phase,
                "--rows",
                str(rows),
                "--dir",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path(".bench/store"))
    ap.add_argument("--phase", choices=["write", "read", "both", "naive"], default="both")
    args = ap.parse_args()
    if args.phase == "write":
        print(json.dumps(write(args.dir, args.rows)))
    elif args.phase == "read":
        print(json.dumps(read(args.dir)))
    elif args.phase == "naive":
        print(json.dumps(naive_jsonl(args.dir / "naive.jsonl", args.rows)))
    else:
        print(json.dumps(run(args.rows, args.dir), indent=1))


if __name__ == "__main__":
    main()
