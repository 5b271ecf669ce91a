"""`distill select`: at most K kept traces per prompt, all distinct, chosen by a stated seeded rule.

The rule: among a prompt's kept traces, identical ones (same reasoning and answer, white space
aside) count once (the lowest `sample` stays); the survivors are ordered by xxh64("seed:id:sample")
and the first K are taken. So the choice is random-like, reproducible, independent of input order and
shard layout, and a larger K only adds traces to a smaller K's choice.

Difficulty, as teams that distill select it (s1, Light-R1, OpenThoughts): a prompt's pass rate is the share
of its teacher samples judged correct (samples the checks could not verify do not count); with
`--min-pass-rate` / `--max-pass-rate` only prompts inside the range keep their traces (a prompt with no
verified sample has no rate and stays). Every run records the prompts' pass-rate histogram for the card.
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

from distill.errors import UserError
from distill.executor import check_executor, executor_map
from distill.filters.config import SelectOptions
from distill.filters.difficulty import histogram, histogram_line, prompt_counts, read_rates
from distill.progress import StageProgress
from distill.records import RECORDS
from distill.sources import inputs
from distill.stages import Context, Flow, PlanContext
from distill.store import DatasetReader, ShardWriter, StageOutput, StageResult

VERDICT = RECORDS["verdict"]


def text_key(reasoning: str | None, content: str | None) -> int:
    return xxhash.xxh64_intdigest(" ".join(f"{reasoning or ''}\x1f{content or ''}".split()).encode())


def by_difficulty(
    rows: list[tuple[int, str, int, int]], rates: dict[str, list[int]], low: float, high: float,
    student: dict[str, float | None] | None = None, student_max: float = 1.0,
) -> tuple[list[tuple[int, str, int, int]], dict[str, Any]]:  # fmt: skip
    """The kept traces of prompts whose teacher pass rate (correct / verified samples) lies in [low, high] and,
    given `student` rates (`distill difficulty`), whose student pass rate is at most `student_max`; and the
    counts: prompts too easy, too hard, solved by the student, without a rate, and the rates by bucket."""
    teacher = {pid: (correct / verified if verified else None) for pid, (verified, correct) in rates.items()}
    outside: dict[str, str] = {}
    for pid, rate in teacher.items():
        if rate is not None and rate < low:
            outside[pid] = "too_hard"
        elif rate is not None and rate > high:
            outside[pid] = "too_easy"
        elif student is not None and (s := student.get(pid)) is not None and s > student_max:
            outside[pid] = "student_solves"
    counts = {"too_hard": 0, "too_easy": 0}
    for why in outside.values():
        counts[why] = counts.get(why, 0) + 1
    kept = [r for r in rows if r[1] not in outside]
    hist = histogram(list(teacher.values()))
    stats = {"min": low, "max": high, **counts, "no_rate": hist["no rate"], "histogram": hist}
    if student is not None:
        stats["student"] = {"max": student_max, "solved_dropped": counts.get("student_solves", 0),
                            "histogram": histogram([student.get(pid) for pid in teacher])}  # fmt: skip
    return kept, stats


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


def _keys(task: KeysTask) -> tuple[int, list[tuple[int, str, int, int]], dict[str, list[int]]]:
    # Hashing every kept trace's whole text is the stage's real work (R1 traces: ~20 KB each), so it
    # runs in the workers, one chunk each; the driver only sees a few dozen bytes per trace, and per
    # prompt its verified and correct samples (all of them, kept or not: the pass rate).
    rows, found = 0, []
    rates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for batch in inputs.read_chunk(task.chunk, VERDICT, 4096):
        rows += batch.table.num_rows + len(batch.rejects)
        for pid, (_, verified, correct) in prompt_counts(batch.table).items():
            rates[pid][0] += verified
            rates[pid][1] += correct
        idx = np.flatnonzero(pc.fill_null(batch.table.column("keep"), False).to_numpy(zero_copy_only=False))
        picked = batch.table.select(["id", "sample", "reasoning", "content"]).take(pa.array(idx, pa.int64()))
        found += [
            (task.base + batch.rows[k], r["id"], r["sample"], text_key(r["reasoning"], r["content"]))
            for k, r in zip(idx, picked.to_pylist(), strict=True)
        ]
    return rows, found, dict(rates)


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


def run(ctx: Context) -> StageResult:
    """Two passes over the input chunks (any input format), each chunk a task on the executor: the kept
    traces' keys, then (after the driver's choice) each chunk's chosen rows as the shard of the same number."""
    o: SelectOptions = ctx.options
    input_specs, out, rows_per_shard = ctx.inputs, ctx.out, ctx.rows_per_shard
    workers, executor = ctx.workers, ctx.executor
    per_prompt, seed, min_pass_rate, max_pass_rate = o.per_prompt, o.seed, o.min_pass_rate, o.max_pass_rate
    student_rates = ctx.path(o.student_rates) if o.student_rates else None
    max_student_pass_rate, overwrite, show_progress = o.max_student_pass_rate, ctx.overwrite, ctx.show_progress
    check_executor(executor)
    if per_prompt < 1:
        raise UserError(f"--per-prompt is {per_prompt}; it must be at least 1")
    files = inputs.resolve(input_specs, rows_per_shard)
    inputs.check_columns(files, VERDICT)
    inputs.preflight(files, VERDICT)
    chunks = inputs.plan(files, rows_per_shard)
    if not 0 <= min_pass_rate <= max_pass_rate <= 1:
        raise UserError(f"--min-pass-rate {min_pass_rate} / --max-pass-rate {max_pass_rate}: give 0 <= min <= max <= 1")
    rule = "distinct, then xxh64(seed:id:sample) order"
    config: dict[str, Any] = {"per_prompt": per_prompt, "seed": seed, "rule": rule, "rows_per_shard": rows_per_shard}
    if (min_pass_rate, max_pass_rate) != (0.0, 1.0):  # absent at the defaults: earlier outputs keep their config
        config["pass_rate"] = [min_pass_rate, max_pass_rate]
    student: dict[str, float | None] | None = None
    if student_rates is not None:
        reader = DatasetReader(Path(student_rates))  # one line when it is not a finished `distill difficulty` output
        if reader.manifest.stage != "difficulty":
            raise UserError(f"--student-rates {student_rates}: written by `distill {reader.manifest.stage}`; give the "
                            "--out of `distill difficulty`")  # fmt: skip
        student = read_rates(Path(student_rates))
        config["student_rates"] = {"max": max_student_pass_rate, "config": reader.manifest.config_fingerprint,
                                   "inputs": reader.manifest.input_fingerprint}  # fmt: skip
    elif max_student_pass_rate != 1.0:
        raise UserError("--max-student-pass-rate needs --student-rates (the --out of `distill difficulty`)")
    described = [f.describe() for f in files]
    with StageOutput(out, stage="select", record=VERDICT, config=config, inputs=described, overwrite=overwrite) as o:
        if o.complete:
            return o.skipped()
        file_index = {f.path: k for k, f in enumerate(files)}
        base = np.cumsum([0] + [f.rows for f in files]).tolist()
        total = base[-1]
        kept: list[tuple[int, str, int, int]] = []
        rates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        with StageProgress("select: keys", total, enabled=show_progress) as progress:
            tasks = [KeysTask(c, base[file_index[c.file.path]]) for c in chunks]
            for rows, part, part_rates in executor_map(_keys, tasks, workers, executor):
                kept.extend(part)
                for pid, (verified, correct) in part_rates.items():
                    rates[pid][0] += verified
                    rates[pid][1] += correct
                progress.advance(rows)
        kept.sort()  # tasks finish in any order; the choice must not depend on it
        in_range, difficulty = by_difficulty(kept, rates, min_pass_rate, max_pass_rate, student, max_student_pass_rate)
        chosen, counts = choose(in_range, per_prompt, seed)
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
        stats = {**counts, "kept_in": len(kept), "selected": len(chosen), "pass_rate": difficulty}
        return o.finish({"select": stats})


def plan(p: PlanContext) -> Flow:
    src, k = p.upstream, p.options.per_prompt
    kept = src.extra.get("kept", src.rows) if src else 0
    if src and "expected_kept" in src.extra:  # judged in flight: at most `keep` passing per prompt already
        kept = min(kept, src.extra["expected_kept"])
    elif src and "prompts" in src.extra:  # prompts with at least one kept sample, k of them each at most
        samples = src.extra["samples"]
        with_one = src.extra["prompts"] * (1 - (1 - src.extra.get("keep_rate", p.assumptions.keep_rate)) ** samples)
        kept = min(kept, with_one * min(k, samples))
    o = p.options
    band = f", prompts with a teacher pass rate in [{o.min_pass_rate:g}, {o.max_pass_rate:g}]"
    band = band if (o.min_pass_rate, o.max_pass_rate) != (0.0, 1.0) else ""
    return Flow(kept, src.tokens_per_row if src else 0, f"~{kept:,.0f} traces (at most {k} per prompt{band})")


def details(result: StageResult, ctx: Context) -> None:
    s = result.manifest.stats["select"]
    print(
        f"  {s['selected']:,} traces for {s['prompts']:,} prompts; dropped {s['identical_dropped']:,} identical, "
        f"{s['over_k_dropped']:,} over --per-prompt",
        file=sys.stderr,
    )
    rate = s["pass_rate"]
    line = f"  teacher pass rate per prompt: {histogram_line(rate['histogram'])}"
    if (rate["min"], rate["max"]) != (0.0, 1.0):
        line += (f"; kept prompts in [{rate['min']:g}, {rate['max']:g}]: dropped {rate['too_easy']:,} too easy, "
                 f"{rate['too_hard']:,} too hard")  # fmt: skip
    print(line, file=sys.stderr)
    if "student" in rate:
        st = rate["student"]
        print(f"  student pass rate per prompt: {histogram_line(st['histogram'])}; dropped {st['solved_dropped']:,} "
              f"the student solves more often than {st['max']:g}", file=sys.stderr)  # fmt: skip
