"""`distill select`: at most K kept traces per prompt, all distinct, chosen by a stated seeded rule.

The rule: among a prompt's kept traces, identical ones (same reasoning and answer, white space
aside) count once (the lowest `sample` stays); the survivors are ordered by xxh64("seed:id:sample")
and the first K are taken. So the choice is random-like, reproducible, independent of input order and
shard layout, and a larger K only adds traces to a smaller K's choice.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from distill import inputs
from distill.errors import UserError
from distill.executor import StageResult, already_done
from distill.progress import StageProgress
from distill.records import RECORDS
from distill.store import DatasetWriter

VERDICT = RECORDS["verdict"]


def _text_key(reasoning: str | None, content: str | None) -> int:
    return xxhash.xxh64_intdigest(" ".join(f"{reasoning or ''}\x1f{content or ''}".split()).encode())


def choose(rows: list[tuple[int, str, int, int]], per_prompt: int, seed: int) -> tuple[set[int], dict[str, int]]:
    """rows: (position, id, sample, text key) of kept traces -> the chosen positions and counts."""
    groups: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for pos, pid, sample, key in rows:
        groups[pid].append((sample, pos, key))
    chosen: set[int] = set()
    duplicates = capped = 0
    for pid, traces in groups.items():
        seen: set[int] = set()
        distinct = []
        for sample, pos, key in sorted(traces):
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            distinct.append((xxhash.xxh64_intdigest(f"{seed}:{pid}:{sample}".encode()), pos))
        distinct.sort()
        capped += max(0, len(distinct) - per_prompt)
        chosen.update(pos for _, pos in distinct[:per_prompt])
    return chosen, {"prompts": len(groups), "identical_dropped": duplicates, "over_k_dropped": capped}


def run_select(
    input_specs: list[str],
    out: Path,
    *,
    per_prompt: int,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> StageResult:
    started = time.perf_counter()
    if per_prompt < 1:
        raise UserError(f"--per-prompt is {per_prompt}; it must be at least 1")
    files = inputs.resolve(input_specs, 1 << 30)
    inputs.check_columns(files, VERDICT)
    with DatasetWriter.for_record(
        out,
        stage="select",
        record=VERDICT,
        config={"per_prompt": per_prompt, "seed": seed, "rule": "distinct, then xxh64(seed:id:sample) order"},
        inputs=[f.describe() for f in files],
        overwrite=overwrite,
    ) as ds:
        opened = ds.open()
        if done := already_done(opened, started):
            return done
        kept: list[tuple[int, str, int, int]] = []
        offsets = []
        pos = 0
        for f in files:  # pass 1: the kept traces' keys (a few dozen bytes each)
            offsets.append(pos)
            cols = pq.read_table(f.path, columns=["id", "sample", "keep", "reasoning", "content"])
            idx = np.flatnonzero(pc.fill_null(cols.column("keep"), False).to_numpy(zero_copy_only=False))
            for k, row in zip(idx, cols.take(pa.array(idx, pa.int64())).to_pylist(), strict=True):
                kept.append((pos + int(k), row["id"], row["sample"], _text_key(row["reasoning"], row["content"])))
            pos += f.rows
        chosen, counts = choose(kept, per_prompt, seed)
        ds.set_plan(len(files))
        with StageProgress("select", pos, enabled=show_progress) as progress:
            for k, f in enumerate(files):  # pass 2: input file k -> shard k
                if k not in opened.done:
                    ds.record_shard(_write(ds, k, f, offsets[k], chosen))
                progress.advance(f.rows)
        stats: dict[str, Any] = {**counts, "kept_in": len(kept), "selected": len(chosen)}
        manifest = ds.finish({"select": stats, "seconds": round(time.perf_counter() - started, 3)})
    return StageResult(manifest, False, time.perf_counter() - started, opened.redone)


def _write(ds: DatasetWriter, k: int, f: inputs.InputFile, offset: int, chosen: set[int]) -> dict[str, Any]:
    table = pq.read_table(f.path)
    mask = pa.array([offset + i in chosen for i in range(table.num_rows)])
    sh = ds.shard(k)
    try:
        sh.write(table.filter(mask))
        return sh.commit(rows_in=table.num_rows, input={"file": k, "start": 0, "stop": table.num_rows})
    except BaseException:
        sh.abort()
        raise
