"""`distill select`: at most K kept traces per prompt, all distinct, chosen by a stated seeded rule.

The rule: among a prompt's kept traces, identical ones (same reasoning and answer, white space
aside) count once (the lowest `sample` stays); the survivors are ordered by xxh64("seed:id:sample")
and the first K are taken. So the choice is random-like, reproducible, independent of input order and
shard layout, and a larger K only adds traces to a smaller K's choice.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from distill import inputs
from distill.errors import UserError
from distill.executor import StageResult, already_done, check_executor, executor_map
from distill.progress import StageProgress
from distill.records import RECORDS
from distill.store import DatasetWriter, ShardWriter

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


@dataclass(frozen=True)
class KeysTask:
    """Pass 1 over one input file: the kept traces' (position, id, sample, text key)."""

    path: str
    offset: int


@dataclass(frozen=True)
class WriteTask:
    """Pass 2 over one input file: its chosen rows as shard `index`."""

    out: str
    index: int
    path: str
    chosen: tuple[int, ...]  # row numbers within the file


def _keys(task: KeysTask) -> tuple[int, list[tuple[int, str, int, int]]]:
    # Hashing every kept trace's whole text is the stage's real work (R1 traces: ~20 KB each), so it
    # runs in the workers, one input file each; the driver only sees a few dozen bytes per trace.
    cols = pq.read_table(task.path, columns=["id", "sample", "keep", "reasoning", "content"])
    idx = np.flatnonzero(pc.fill_null(cols.column("keep"), False).to_numpy(zero_copy_only=False))
    return cols.num_rows, [
        (task.offset + int(k), row["id"], row["sample"], _text_key(row["reasoning"], row["content"]))
        for k, row in zip(idx, cols.take(pa.array(idx, pa.int64())).to_pylist(), strict=True)
    ]


def _write(task: WriteTask) -> dict[str, Any]:
    table = pq.read_table(task.path)
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[list(task.chosen)] = True
    shard = ShardWriter(Path(task.out), task.index)
    try:
        shard.write(table.filter(pa.array(mask)))
        return shard.commit(rows_in=table.num_rows, input={"file": task.index, "start": 0, "stop": table.num_rows})
    except BaseException:
        shard.abort()
        raise


def run_select(
    input_specs: list[str],
    out: Path,
    *,
    per_prompt: int,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    workers: int | None = None,
    executor: str = "local",
) -> StageResult:
    """Two passes over the input files, each file a task on the executor: the kept traces' keys, then
    (after the driver's choice) each file's chosen rows as the shard of the same number."""
    started = time.perf_counter()
    check_executor(executor)
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
        offsets = np.cumsum([0] + [f.rows for f in files]).tolist()
        total = offsets[-1]
        kept: list[tuple[int, str, int, int]] = []
        with StageProgress("select: keys", total, enabled=show_progress) as progress:
            tasks = [KeysTask(f.path, offsets[k]) for k, f in enumerate(files)]
            for rows, part in executor_map(_keys, tasks, workers, executor):
                kept.extend(part)
                progress.advance(rows)
        kept.sort()  # tasks finish in any order; the choice must not depend on it
        chosen, counts = choose(kept, per_prompt, seed)
        ds.set_plan(len(files))
        by_file: list[list[int]] = [[] for _ in files]
        for position in chosen:
            k = bisect.bisect_right(offsets, position) - 1
            by_file[k].append(position - offsets[k])
        todo = [WriteTask(str(out), k, f.path, tuple(sorted(by_file[k]))) for k, f in enumerate(files)
                if k not in opened.done]  # fmt: skip
        with StageProgress("select", total, sum(f.rows for k, f in enumerate(files) if k in opened.done),
                           enabled=show_progress) as progress:  # fmt: skip
            for entry in executor_map(_write, todo, workers, executor):
                ds.record_shard(entry)
                progress.advance(entry["rows_in"])
        stats: dict[str, Any] = {**counts, "kept_in": len(kept), "selected": len(chosen)}
        manifest = ds.finish({"select": stats, "seconds": round(time.perf_counter() - started, 3)})
    return StageResult(manifest, False, time.perf_counter() - started, opened.redone)
