"""`distill select`: at most K kept traces per prompt, all distinct, chosen by a stated seeded rule.

The rule: among a prompt's kept traces, identical ones (same reasoning and answer, white space
aside) count once (the lowest `sample` stays); the survivors are ordered by xxh64("seed:id:sample")
and the first K are taken. So the choice is random-like, reproducible, independent of input order and
shard layout, and a larger K only adds traces to a smaller K's choice.
"""

from __future__ import annotations

import bisect
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from distill import inputs
from distill.config import StrictModel
from distill.errors import UserError
from distill.executor import check_executor, executor_map
from distill.progress import StageProgress
from distill.records import RECORDS
from distill.stages import Context, Flow, PlanContext, Stage, register
from distill.store import ShardWriter, StageOutput, StageResult

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
    """Pass 1 over one chunk of the input: the kept traces' (position, id, sample, text key)."""

    chunk: inputs.Chunk
    base: int  # the position of the chunk's file's first row among all input rows


@dataclass(frozen=True)
class WriteTask:
    """Pass 2 over one chunk: its chosen rows (row numbers within its file) as shard `index`."""

    out: str
    index: int
    file_index: int
    chunk: inputs.Chunk
    chosen: frozenset[int]


def _keys(task: KeysTask) -> tuple[int, list[tuple[int, str, int, int]]]:
    # Hashing every kept trace's whole text is the stage's real work (R1 traces: ~20 KB each), so it
    # runs in the workers, one chunk each; the driver only sees a few dozen bytes per trace.
    rows, found = 0, []
    for batch in inputs.read_chunk(task.chunk, VERDICT, 4096):
        rows += batch.table.num_rows + len(batch.rejects)
        idx = np.flatnonzero(pc.fill_null(batch.table.column("keep"), False).to_numpy(zero_copy_only=False))
        picked = batch.table.select(["id", "sample", "reasoning", "content"]).take(pa.array(idx, pa.int64()))
        found += [
            (task.base + batch.rows[k], r["id"], r["sample"], _text_key(r["reasoning"], r["content"]))
            for k, r in zip(idx, picked.to_pylist(), strict=True)
        ]
    return rows, found


def _write(task: WriteTask) -> dict[str, Any]:
    shard = ShardWriter(Path(task.out), task.index, VERDICT.schema)
    rows_in = 0
    try:
        for batch in inputs.read_chunk(task.chunk, VERDICT, 4096):
            rows_in += batch.table.num_rows + len(batch.rejects)
            for r in batch.rejects:  # unreadable rows surface here (pass 1 skipped them)
                shard.reject(task.chunk.file.path, r.row, r.error, r.raw)
            mask = pa.array([n in task.chosen for n in batch.rows], pa.bool_())
            shard.write(batch.table.filter(mask))
        return shard.commit(rows_in=rows_in, input=task.chunk.describe(task.file_index))
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
    rows_per_shard: int = 10_000,
) -> StageResult:
    """Two passes over the input chunks (any input format), each chunk a task on the executor: the kept
    traces' keys, then (after the driver's choice) each chunk's chosen rows as the shard of the same number."""
    check_executor(executor)
    if per_prompt < 1:
        raise UserError(f"--per-prompt is {per_prompt}; it must be at least 1")
    files = inputs.resolve(input_specs, rows_per_shard)
    inputs.check_columns(files, VERDICT)
    chunks = inputs.plan(files, rows_per_shard)
    config = {"per_prompt": per_prompt, "seed": seed, "rule": "distinct, then xxh64(seed:id:sample) order",
              "rows_per_shard": rows_per_shard}  # fmt: skip
    described = [f.describe() for f in files]
    with StageOutput(out, stage="select", record=VERDICT, config=config, inputs=described, overwrite=overwrite) as o:
        if o.complete:
            return o.skipped()
        file_index = {f.path: k for k, f in enumerate(files)}
        base = np.cumsum([0] + [f.rows for f in files]).tolist()
        total = base[-1]
        kept: list[tuple[int, str, int, int]] = []
        with StageProgress("select: keys", total, enabled=show_progress) as progress:
            tasks = [KeysTask(c, base[file_index[c.file.path]]) for c in chunks]
            for rows, part in executor_map(_keys, tasks, workers, executor):
                kept.extend(part)
                progress.advance(rows)
        kept.sort()  # tasks finish in any order; the choice must not depend on it
        chosen, counts = choose(kept, per_prompt, seed)
        o.writer.set_plan(len(chunks))
        by_file: list[set[int]] = [set() for _ in files]
        for position in chosen:
            k = bisect.bisect_right(base, position) - 1
            by_file[k].add(position - base[k])
        todo = []
        for index, c in enumerate(chunks):
            if index not in o.opened.done:
                k = file_index[c.file.path]
                rows = frozenset(r for r in by_file[k] if c.start <= r < c.stop)
                todo.append(WriteTask(str(out), index, k, c, rows))
        done_rows = sum(c.stop - c.start for i, c in enumerate(chunks) if i in o.opened.done)
        with StageProgress("select", total, done_rows, enabled=show_progress) as progress:
            for entry in executor_map(_write, todo, workers, executor):
                o.writer.record_shard(entry)
                progress.advance(entry["rows_in"])
        return o.finish({"select": {**counts, "kept_in": len(kept), "selected": len(chosen)}})


class SelectOptions(StrictModel):
    """The options of `distill select` and of a pipeline step with `stage: select`."""

    per_prompt: int = Field(ge=1, description="At most this many traces per prompt")
    seed: int = Field(default=0, description="Seed of the choice among a prompt's kept traces")


def _stage_run(ctx: Context) -> StageResult:
    return run_select(ctx.inputs, ctx.out, per_prompt=ctx.options.per_prompt, seed=ctx.options.seed,
                      overwrite=ctx.overwrite, show_progress=ctx.show_progress, workers=ctx.workers,
                      executor=ctx.executor, rows_per_shard=ctx.rows_per_shard)  # fmt: skip


def _stage_plan(p: PlanContext) -> Flow:
    src, k = p.upstream, p.options.per_prompt
    kept = src.extra.get("kept", src.rows) if src else 0
    if src and "prompts" in src.extra:  # prompts with at least one kept sample, k of them each at most
        samples = src.extra["samples"]
        with_one = src.extra["prompts"] * (1 - (1 - src.extra.get("keep_rate", p.assumptions.keep_rate)) ** samples)
        kept = min(kept, with_one * min(k, samples))
    return Flow(kept, src.tokens_per_row if src else 0, f"~{kept:,.0f} traces (at most {k} per prompt)")


def _stage_details(result: StageResult, ctx: Context) -> None:
    s = result.manifest.stats["select"]
    print(
        f"  {s['selected']:,} traces for {s['prompts']:,} prompts; dropped {s['identical_dropped']:,} identical, "
        f"{s['over_k_dropped']:,} over --per-prompt",
        file=sys.stderr,
    )


STAGE = register(
    Stage(
        name="select",
        help="""Keep at most K kept traces per prompt: identical traces count once, then a seeded order decides.

    Example:

      distill select --input runs/demo/verdicts --out runs/kept-4 --per-prompt 4
    """,
        options=SelectOptions,
        run=_stage_run,
        plan=_stage_plan,
        details=_stage_details,
        input_help="Verdicts: the --out of `distill filter`, or verdict rows in any input format.",
        out_help="Output dataset directory of the chosen traces.",
    )
)
