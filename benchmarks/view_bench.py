"""`distill view` on a large directory: 1M verdict rows, ~10 KB of text each (~10 GB of Arrow text), written
the way `distill filter` writes them (zstd shards of 2,000 rows).

Measured against the real command (`distill view DIR --port 0`, its own process):
- first paint in headless Chromium: from navigation to the overview drawn (manifest facts), and to the funnel,
  histogram and tables drawn (the index of small columns read from all 500 shards);
- API times of a page of 50 rows: the first page, a page half a million rows in, a page filtered by a reason
  (first and next), longest first, one whole row, one prompt's samples; each the median of 5 after the first;
- a text search: time to its first page and to read the whole directory;
- the server's peak RSS.
Goals (the issue's): first paint under 1 s, a page of rows under 200 ms.

    python -m benchmarks.view_bench [--rows 1000000] [--dir .bench/view-1m]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import PeakRSS, headless_chromium
from benchmarks.store_bench import _text
from distill.records import RECORDS
from distill.store import DatasetWriter

BATCH = 2_000  # rows per shard, as `distill filter` writes them
POOL = 8  # distinct batches of text, reused with fresh ids: generating 10 GB of text would be the bottleneck
REASONS = [(None, 0.66), ("wrong_answer", 0.12), ("repetition", 0.05), ("language_mix", 0.05), ("truncated", 0.04),
           ("no_answer", 0.04), ("code_block", 0.02), ("long_paragraph", 0.02)]  # fmt: skip


def make_pool(seed: int = 0) -> list[pa.RecordBatch]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    vocab += ["$\\frac{1}{2}$", "$x^2$", "Wait,", "so", "the", "answer", "is", "\n\n"]
    schema = RECORDS["verdict"].schema.append(pa.field("reject_detail", pa.string()))
    reasons, weights = zip(*REASONS, strict=True)
    pool = []
    for b in range(POOL):
        rows = []
        for i in range(BATCH):
            reason = rng.choices(reasons, weights)[0]
            rows.append({
                "id": "", "source": f"source-{rng.randint(0, 19)}", "domain": rng.choice(["math", "code", "science"]),
                "problem": _text(rng, vocab, 250), "answer": str(rng.randint(0, 999)), "language": "en",
                "sample": i % 4, "reasoning": _text(rng, vocab, 9_400),
                "content": f"so \\boxed{{{rng.randint(0, 999)}}}",
                "finish_reason": "stop", "prompt_tokens": rng.randint(50, 200),
                "completion_tokens": rng.randint(300, 8_000), "teacher": "deepseek-ai/DeepSeek-R1",
                "keep": reason is None, "reject_reason": reason, "correct": reason != "wrong_answer",
                "reject_detail": None if reason != "wrong_answer" else "answered '1', expected '2'",
            })  # fmt: skip
        # a rare word, once per pool batch (the search's needle)
        rows[(b * 397) % BATCH]["reasoning"] += " zebracorn"
        pool.append(pa.RecordBatch.from_pylist(rows, schema=schema))
    return pool


def sizes(root: Path) -> dict:
    files = sorted(root.glob("train-*.parquet"))
    arrow = 0
    for f in files:
        meta = pq.read_metadata(f)
        arrow += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    return {"shards": len(files), "gb": arrow / 1e9, "disk_gb": sum(f.stat().st_size for f in files) / 1e9}


def drop_page_cache() -> bool:
    """Cold reads, as after a reboot or on a node that never read the directory (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def write(root: Path, rows: int) -> dict:
    if (root / "_manifest.json").exists() and json.loads((root / "_manifest.json").read_text())["rows"] == rows:
        return {"reused": True, **sizes(root)}
    pool = make_pool()
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    schema = pool[0].schema
    with DatasetWriter(root, stage="filter", record="verdict", schema_version=1, config={"bench": rows},
                       inputs=[]) as ds:  # fmt: skip
        ds.open()
        for shard_index, start in enumerate(range(0, rows, BATCH)):
            n = min(BATCH, rows - start)
            batch = pool[shard_index % POOL].slice(0, n)
            ids = pa.array([f"p{(start + k) // 4:015d}" for k in range(n)], pa.string())  # 4 samples a prompt
            batch = batch.set_column(0, "id", ids)
            shard = ds.shard(shard_index, schema)
            shard.write(batch)
            ds.record_shard(shard.commit(rows_in=n))
        ds.finish({})
    return {"seconds": time.perf_counter() - started, **sizes(root)}


def _get(base: str, path: str, **params) -> tuple[float, dict]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=600) as r:
        body = json.loads(r.read())
    return (time.perf_counter() - started) * 1000, body


def _timed(base: str, path: str, repeat: int = 5, **params) -> dict:
    first, _ = _get(base, path, **params)
    again = [_get(base, path, **params)[0] for _ in range(repeat)]
    return {"first_ms": first, "median_ms": statistics.median(again)}


def browser_paint(base: str, ds: str, row: int) -> dict:
    driver = headless_chromium()
    out = {}
    try:
        key = urllib.parse.quote(ds, safe="")
        for name, frag, marks in (("overview", f"#/ds/{key}", ("overview", "stats")),
                                  ("rows", f"#/ds/{key}/rows?reason=repetition", ("rows",)),
                                  ("row", f"#/ds/{key}/row/{row}", ("row",))):  # fmt: skip
            driver.get("about:blank")
            driver.get(f"{base}/{frag}")
            deadline = time.monotonic() + 120
            while driver.execute_script("return document.body.dataset.painted") != marks[-1]:
                assert time.monotonic() < deadline, f"{name} not drawn"
                time.sleep(0.01)
            for mark in marks:
                t = driver.execute_script(f"return performance.getEntriesByName('painted-{mark}')[0].startTime")
                out[f"{name}:{mark}"] = t
    finally:
        driver.quit()
    return out


def run(rows: int, root: Path) -> dict:
    made = write(root, rows)
    cold = drop_page_cache()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "view", str(root), "--port", "0"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    peak = PeakRSS(proc.pid)
    try:
        line = proc.stderr.readline()
        ready_s = time.perf_counter() - started
        base = re.search(r"http://\S+/", line).group().rstrip("/")
        ds = root.name
        paint = browser_paint(base, ds, rows * 7 // 9)  # the cold start: the index is built while the page waits for it
        api = {
            "first page": _timed(base, "/api/rows", ds=ds, limit=50),
            "page half way in": _timed(base, "/api/rows", ds=ds, limit=50, offset=rows // 2),
            "filtered by a reason": _timed(base, "/api/rows", ds=ds, limit=50, reason="language_mix"),
            "filtered, next page": _timed(base, "/api/rows", ds=ds, limit=50, reason="language_mix", offset=50),
            "longest first": _timed(base, "/api/rows", ds=ds, limit=50, sort="length", order="desc"),
            "one whole row": _timed(base, "/api/row", ds=ds, i=rows // 8 + 1),
            "one prompt's 4 samples": _timed(base, "/api/prompt", id=f"p{rows // 8:015d}"),
        }
        drop_page_cache()
        t0 = time.perf_counter()
        first, page = _get(base, "/api/rows", ds=ds, q="zebracorn", limit=50)
        offset = 0
        while not (page["done"] and offset + 200 >= page["total"]):  # page through every match, as a reader would
            offset += 200 if len(page["rows"]) == 200 else 0
            _, page = _get(base, "/api/rows", ds=ds, q="zebracorn", limit=200, offset=offset)
        search = {"first_answer_ms": first, "whole_s": time.perf_counter() - t0, "found": page["total"]}
        t0 = time.perf_counter()
        common_ms, common = _get(base, "/api/rows", ds=ds, q="wait", limit=50)
        search["common_first_page_ms"], search["common_rows"] = common_ms, len(common["rows"])
    finally:
        rss = peak.stop()
        proc.terminate()
        proc.wait()
    return {"rows": rows, "made": made, "cold": cold, "ready_s": ready_s, "paint_ms": paint, "api": api,
            "search": search, "rss_mb": rss}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path(".bench/view-1m"))
    a = ap.parse_args()
    print(json.dumps(run(a.rows, a.dir), indent=1))


if __name__ == "__main__":
    main()
