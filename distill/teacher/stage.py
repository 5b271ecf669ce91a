"""`distill generate`: prompts in, exactly one trace row per (prompt `id`, `sample`) out.

The prompts are planned into chunks as every stage's input is (chunk k -> shard k), but a chunk is
not one task: its samples go out as single requests, many chunks' worth in flight at once, and come
back in any order. Each result is appended to the chunk's journal (`distill.teacher.journal`) as it
arrives; when the last sample of a chunk is in, its shard is written in prompt order (then sample
order), committed, recorded in the manifest, and the journal deleted. So:

- a killed run resumes by reading the journals and asking only for the (id, sample) pairs missing;
- a request that failed after every retry becomes a reject of its shard (`request_failed`, with the
  error), and the next run of the same command takes that shard back, keeps its rows and asks again
  for the failed samples only;
- a prompt id seen earlier in the input is rejected (`duplicate_id`), so no pair can appear twice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from distill import inputs as inputs_mod
from distill.config import StrictModel, load_config
from distill.errors import UserError
from distill.executor import StageResult, already_done
from distill.progress import GenerateProgress
from distill.records import get_record, output_schema
from distill.stages import Context, Flow, PlanContext, Stage, register
from distill.store import (
    WORK,
    DatasetWriter,
    Manifest,
    ShardWriter,
    fingerprint,
    inputs_fingerprint,
    read_manifest,
    shard_files,
)
from distill.teacher.config import TeacherConfig
from distill.teacher.journal import JOURNALS, Journal, journal_path
from distill.teacher.prompting import Request, user_turn

PROMPT, TRACE = get_record("prompt"), get_record("trace")
PARTS = Path(WORK) / "parts"  # `--shard i/n` runs write OUT/.work/parts/i-of-n/ until the last merges them
RESULT_COLUMNS = ("reasoning", "content", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s")
RETRIED_CODES = ("request_failed", "request_rejected")  # rejects a later run asks again for
WRITE_BATCH = 256


def make_backend(cfg: TeacherConfig) -> Any:
    from distill.teacher import offline

    if cfg.backend == "openai":
        from distill.teacher.openai_client import OpenAIBackend

        return OpenAIBackend(cfg)
    return {
        "synthetic": offline.SyntheticBackend,
        "transformers": offline.TransformersBackend,
        "vllm": offline.VLLMBackend,
    }[cfg.backend](cfg)


# --- one chunk of prompts ---------------------------------------------------------------------------


@dataclass
class ChunkWork:
    index: int
    chunk: inputs_mod.Chunk
    file_index: int
    prompts: list[dict[str, Any]]  # the chunk's good rows, in input order
    row_numbers: list[int]  # their row numbers in the input file
    bad: list[tuple[int, str, Any]]  # (row, error, raw) of rows that cannot be prompts
    journal: Journal
    done: dict[tuple[str, int], dict[str, Any]]  # results already in the journal
    todo: list[Request] = field(default_factory=list)
    failures: dict[tuple[str, int], str] = field(default_factory=dict)
    pending: int = 0


def load_chunk(
    index: int, chunk: inputs_mod.Chunk, file_index: int, cfg: TeacherConfig, root: Path, first_row: dict[str, tuple]
) -> ChunkWork:
    """Read a chunk's prompts and its journal; list the requests still to make."""
    prompts, rows, bad = [], [], []
    path = chunk.file.path
    for batch in inputs_mod.read_chunk(chunk, PROMPT, 1024):
        bad += [(r.row, r.error, r.raw) for r in batch.rejects]
        for row_no, row in zip(batch.rows, batch.table.to_pylist(), strict=True):
            if first_row.get(row["id"]) != (path, row_no):
                where = first_row.get(row["id"], ("?", -1))
                bad.append(
                    (
                        row_no,
                        f"duplicate_id: prompt id {row['id']} first seen at {where[0]} row {where[1]}",
                        json.dumps(row, ensure_ascii=False),
                    )
                )
                continue
            prompts.append(row)
            rows.append(row_no)
    journal = Journal(journal_path(root, index))
    work = ChunkWork(index, chunk, file_index, prompts, rows, bad, journal, journal.load())
    for row in prompts:
        for s in range(cfg.samples):
            if (row["id"], s) not in work.done:
                work.todo.append(
                    Request(row["id"], s, row["domain"], row["problem"], row["answer"], cfg.request_seed(row["id"], s))
                )
    work.pending = len(work.todo)
    return work


def first_rows(chunks: list[inputs_mod.Chunk]) -> tuple[dict[str, tuple[str, int]], int]:
    """Where each prompt id first appears (file, row), and the number of good prompt rows."""
    first: dict[str, tuple[str, int]] = {}
    good = 0
    for chunk in chunks:
        for batch in inputs_mod.read_chunk(chunk, PROMPT, 4096):
            for row_no, pid in zip(batch.rows, batch.table.column("id").to_pylist(), strict=True):
                first.setdefault(pid, (chunk.file.path, row_no))
                good += 1
    return first, good


def commit_chunk(work: ChunkWork, cfg: TeacherConfig, root: Path) -> dict[str, Any]:
    """Write chunk k's shard from its journal, in prompt then sample order, with its rejects."""
    results = work.journal.load()
    schema = output_schema(TRACE)
    writer = ShardWriter(root, work.index, schema)
    params = json.dumps(cfg.params(), sort_keys=True)
    path = work.chunk.file.path
    tokens = Counter()
    try:
        buf: list[dict[str, Any]] = []
        for row_no, prompt in zip(work.row_numbers, work.prompts, strict=True):
            for s in range(cfg.samples):
                key = (prompt["id"], s)
                res = results.get(key)
                if res is None:
                    error = work.failures.get(key, "request_failed: no result (the run stopped before it came back)")
                    writer.reject(path, row_no, error, json.dumps({**prompt, "sample": s}, ensure_ascii=False))
                    continue
                buf.append(
                    {
                        **prompt,
                        "sample": s,
                        **{c: res.get(c) for c in RESULT_COLUMNS},
                        "teacher": cfg.teacher_name,
                        "params": params,
                        "prompt": user_turn(prompt["problem"], prompt["domain"], cfg),
                    }
                )
                tokens["prompt_tokens"] += res.get("prompt_tokens") or 0
                tokens["completion_tokens"] += res.get("completion_tokens") or 0
                if len(buf) >= WRITE_BATCH:
                    writer.write(pa.Table.from_pylist(buf, schema=schema))
                    buf = []
        if buf:
            writer.write(pa.Table.from_pylist(buf, schema=schema))
        for row_no, error, raw in work.bad:
            writer.reject(path, row_no, error, raw)
        failed = sum(writer.reject_codes[c] for c in RETRIED_CODES)
        return writer.commit(
            rows_in=len(work.prompts) + len(work.bad),
            input=work.chunk.describe(work.file_index),
            failed_requests=failed,
            **tokens,
        )
    except BaseException:
        writer.abort()
        raise


def export_shard(root: Path, entry: dict[str, Any], index: int) -> None:
    """Copy a finished shard's results into its chunk's journal, so that redoing it keeps them."""
    journal = Journal(journal_path(root, index))
    if entry["rows"]:
        with pq.ParquetFile(root / entry["file"]) as pf:
            for batch in pf.iter_batches(columns=["id", "sample", *RESULT_COLUMNS]):
                for row in batch.to_pylist():
                    journal.append(row)
    journal.close()


# --- the whole stage --------------------------------------------------------------------------------


@dataclass
class RunTotals:
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def _generate(
    backend: Any,
    cfg: TeacherConfig,
    ds: DatasetWriter,
    todo: list[tuple[int, inputs_mod.Chunk, int]],
    root: Path,
    first: dict[str, tuple[str, int]],
    progress: GenerateProgress,
    totals: RunTotals,
) -> None:
    queue: asyncio.Queue[tuple[ChunkWork, Request] | None] = asyncio.Queue(
        maxsize=max(64, 2 * backend.workers * backend.batch_size)
    )
    commits: list[asyncio.Task[None]] = []

    async def commit(work: ChunkWork) -> None:
        entry = await asyncio.to_thread(commit_chunk, work, cfg, root)
        ds.record_shard(entry)
        work.journal.remove()

    def record(work: ChunkWork, req: Request, res: dict[str, Any]) -> None:
        if "error" in res:
            work.failures[req.key] = res["error"]
            totals.failed += 1
        else:
            work.journal.append({"id": req.id, "sample": req.sample, **res})
            totals.prompt_tokens += res.get("prompt_tokens") or 0
            totals.completion_tokens += res.get("completion_tokens") or 0
        totals.requests += 1
        work.pending -= 1
        if work.pending == 0:
            commits.append(asyncio.create_task(commit(work)))

    async def worker() -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < backend.batch_size and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    queue.put_nowait(None)  # leave the stop signal for the next worker
                    break
                batch.append(nxt)
            results = await backend.generate([req for _, req in batch])
            for (work, req), res in zip(batch, results, strict=True):
                record(work, req, res)
            tokens = sum(r.get("completion_tokens") or 0 for r in results)
            progress.advance(len(batch), tokens, backend.stats.errors if backend.stats else None)

    async def produce() -> None:
        for index, chunk, file_index in todo:
            work = await asyncio.to_thread(load_chunk, index, chunk, file_index, cfg, root, first)
            if work.pending == 0:  # everything was in the journal (or the chunk has no good rows)
                commits.append(asyncio.create_task(commit(work)))
                continue
            for req in work.todo:
                await queue.put((work, req))
        for _ in range(backend.workers):
            await queue.put(None)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        for _ in range(backend.workers):
            group.create_task(worker())
    # Commits are started by the last result of each chunk; all results are in, so wait for them.
    for task in commits:
        await task


def run_generate(
    input_specs: list[str],
    out: Path,
    cfg: TeacherConfig,
    *,
    rows_per_shard: int = 1_000,
    overwrite: bool = False,
    show_progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> StageResult:
    """Generate into `out`; with `shard=(i, n)`, only chunks k with k % n == i, into `out/.work/parts/i-of-n/`,
    and whichever of the n processes finds all parts complete merges them into `out` (`merge_parts`)."""
    started = time.perf_counter()
    out = Path(out)
    files = inputs_mod.resolve(input_specs, rows_per_shard)
    inputs_mod.check_columns(files, PROMPT)
    chunks = inputs_mod.plan(files, rows_per_shard)
    config = {"teacher": cfg.fingerprint_fields(), "rows_per_shard": rows_per_shard}
    inputs = [f.describe() for f in files]
    mine, n = (shard[0], shard[1]) if shard else (0, 1)
    root = out
    _move_legacy_work(out)
    if shard is not None:
        if merged := merged_already(out, config, inputs, started):
            return merged
        root = part_dir(out, mine, n)
        config = {**config, "shard": [mine, n]}
    with DatasetWriter.for_record(
        root, stage="generate", record=TRACE, config=config, inputs=inputs, overwrite=overwrite
    ) as ds:
        opened = ds.open()
        retried = [k for k, e in sorted(opened.manifest.shards.items()) if e.get("failed_requests")]
        for k in retried:  # keep the rows, ask again for the failed samples
            export_shard(root, opened.manifest.shards[k], k)
            ds.reopen_shard(k)
            opened.done.discard(k)
        if done := already_done(opened, started):
            return _merge_if_whole(out, n, done)
        _drop_stale_journals(root, opened.done)
        ds.set_plan(len(chunks))
        file_index = {f.path: i for i, f in enumerate(files)}
        todo = [(k, c, file_index[c.file.path]) for k, c in enumerate(chunks) if k not in opened.done and k % n == mine]
        # Ids are deduplicated over the whole input, so every part rejects the same repeats.
        first, good = first_rows(chunks)
        total = _own_prompts(first, chunks, mine, n) * cfg.samples
        have = sum(s["rows"] for s in ds.manifest.shards.values()) + _journaled(root, todo)
        backend = make_backend(cfg)
        totals = RunTotals()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run(backend, cfg, ds, todo, root, first, total, have, show_progress, totals))
        stats = generate_stats(ds, cfg, totals, backend, good, time.perf_counter() - started)
        manifest = ds.finish({"generate": stats, "seconds": round(time.perf_counter() - started, 3)})
        _remove_empty(root / JOURNALS, root / WORK)  # every chunk is a shard: no journal is left
    result = StageResult(
        manifest,
        False,
        time.perf_counter() - started,
        opened.redone + [f"shard {k}: retrying its failed requests" for k in retried],
    )
    return _merge_if_whole(out, n, result)


def _own_prompts(first: dict[str, tuple[str, int]], chunks: list[inputs_mod.Chunk], mine: int, n: int) -> int:
    """How many distinct prompts fall in this part's chunks (k % n == mine)."""
    if n == 1:
        return len(first)
    starts: dict[str, list[tuple[int, int]]] = {}
    for k, c in enumerate(chunks):
        starts.setdefault(c.file.path, []).append((c.start, k))
    count = 0
    for path, row in first.values():
        spans = starts[path]
        count += spans[bisect.bisect_right(spans, (row, len(chunks))) - 1][1] % n == mine
    return count


# --- sharded runs: n client processes, one dataset directory -----------------------------------------


def parse_shard(spec: str) -> tuple[int, int]:
    """`i/n` (0 <= i < n), or `slurm` for (SLURM_PROCID, SLURM_NTASKS)."""
    if spec == "slurm":
        try:
            i, n = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        except (KeyError, ValueError):
            raise UserError("--shard slurm: SLURM_PROCID / SLURM_NTASKS are not set; run it under srun") from None
    else:
        head, sep, tail = spec.partition("/")
        if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
            raise UserError(f"--shard {spec!r}: write it as i/n, e.g. 0/4 for the first of 4 parts")
        i, n = int(head), int(tail)
    if not 0 <= i < n:
        raise UserError(f"--shard {spec!r}: i must be in 0..n-1 (here n is {n})")
    return i, n


def part_dir(out: Path, i: int, n: int) -> Path:
    return out / PARTS / f"{i}-of-{n}"


def merged_already(
    out: Path, config: dict[str, Any], inputs: list[dict[str, Any]], started: float
) -> StageResult | None:
    """The merged output, when an earlier sharded run already completed it with the same teacher and inputs."""
    manifest = read_manifest(out)
    if (
        manifest is not None
        and manifest.complete
        and manifest.config_fingerprint == fingerprint(config)
        and manifest.input_fingerprint == inputs_fingerprint(inputs)
    ):
        return StageResult(manifest, True, time.perf_counter() - started, [])
    return None


def _merge_if_whole(out: Path, n: int, result: StageResult) -> StageResult:
    if n == 1:
        return result
    merged = merge_parts(out, n)
    return result if merged is None else StageResult(merged, result.skipped, result.seconds, result.redone)


def merge_parts(out: Path, n: int) -> Manifest | None:
    """Assemble `out` from its n complete parts, or None while a part is unfinished.

    Each part holds the shards of its own chunks under their global numbers (chunk k -> shard k), so
    merging is linking their files into `out` and listing them in one manifest: the rows and their order
    equal a single process's. Crash-safe: the manifest, written last, makes the merge; a rerun relinks.
    """
    found = [read_manifest(part_dir(out, i, n)) for i in range(n)]
    parts = [p for p in found if p is not None and p.complete]
    if len(parts) < n:
        return None
    first = parts[0]
    config = {k: v for k, v in first.config.items() if k != "shard"}
    for i, p in enumerate(parts):
        if {k: v for k, v in p.config.items() if k != "shard"} != config or p.inputs != first.inputs:
            raise UserError(
                f"{part_dir(out, i, n)}: made with another teacher config or other inputs than part 0; "
                f"rerun that part with the same command (and --overwrite)"
            )
    # the parts record their inputs relative to themselves: given to the merged directory as real paths
    inputs = [{**e, "path": str(p)} for e, p in zip(first.inputs, first.input_paths(part_dir(out, 0, n)), strict=True)]
    with DatasetWriter(out, stage="generate", record=first.record, schema_version=first.schema_version,
                       config=config, inputs=inputs) as ds:  # fmt: skip
        opened = ds.open()
        if opened.manifest.complete:
            return opened.manifest
        ds.set_plan(sum(p.planned_shards or 0 for p in parts) // n)
        for i, p in enumerate(parts):
            for index, entry in sorted(p.shards.items()):
                for f in shard_files(entry):
                    _link(part_dir(out, i, n) / f["file"], out / f["file"])
                ds.manifest.shards[index] = entry
        stats = [p.stats.get("generate", {}) for p in parts]
        merged = {
            "teacher": stats[0].get("teacher"),
            "backend": stats[0].get("backend"),
            "samples_per_prompt": stats[0].get("samples_per_prompt"),
            "parts": n,
            **{
                k: sum(s.get(k, 0) for s in stats)
                for k in ("traces", "failed_requests", "prompt_tokens", "completion_tokens")
            },
            "prompts": stats[0].get("prompts"),  # every part counts the whole input's prompts
        }
        manifest = ds.finish({"generate": merged, "seconds": max(p.stats.get("seconds", 0) for p in parts)})
    shutil.rmtree(out / PARTS, ignore_errors=True)  # the files live on in `out` (hard links)
    _remove_empty(out / JOURNALS, out / WORK)
    return manifest


def _link(src: Path, dst: Path) -> None:
    """Hard-link a part's file into the merged directory (a copy where the filesystem has no links)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


async def _run(
    backend: Any,
    cfg: TeacherConfig,
    ds: DatasetWriter,
    todo: list,
    root: Path,
    first: dict,
    total: int,
    have: int,
    show_progress: bool,
    totals: RunTotals,
) -> None:
    await backend.start()
    try:
        with GenerateProgress(total, have, enabled=show_progress) as progress:
            await _generate(backend, cfg, ds, todo, root, first, progress, totals)
    except BaseExceptionGroup as group:  # the TaskGroup's: raise the first cause as itself (a UserError first)
        errors = sorted(group.exceptions, key=lambda e: not isinstance(e, UserError))
        raise errors[0] from None
    finally:
        await backend.close()


def _loop_factory() -> Any:
    """uvloop when installed: the same asyncio, with less CPU per request (benchmarks/generate_bench.py)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _journaled(root: Path, todo: list[tuple[int, inputs_mod.Chunk, int]]) -> int:
    """Samples already in the journals of unfinished chunks (for the progress bar's start)."""
    n = 0
    for k, _, _ in todo:
        path = journal_path(root, k)
        if path.exists():
            with open(path, "rb") as f:
                n += sum(1 for _ in f)
    return n


def _move_legacy_work(out: Path) -> None:
    """Journals and parts of a run started before they moved under .work/ (2026-12): moved there, so an
    interrupted run resumes instead of asking the teacher again."""
    moves = [(p / "_work", p / JOURNALS) for p in sorted((out / "_parts").glob("*-of-*"))]  # inside parts first
    moves += [(out / "_work", out / JOURNALS), (out / "_parts", out / PARTS)]
    for old, new in moves:
        if old.is_dir() and not new.exists():
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)


def _remove_empty(*folders: Path) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):  # not there, or not empty: left as it is
            folder.rmdir()


def _drop_stale_journals(root: Path, done: set[int]) -> None:
    """A crash between committing a shard and deleting its journal leaves a journal of a done chunk."""
    if (root / JOURNALS).is_dir():
        for k in done:
            journal_path(root, k).unlink(missing_ok=True)


def generate_stats(
    ds: DatasetWriter, cfg: TeacherConfig, totals: RunTotals, backend: Any, good: int, seconds: float
) -> dict[str, Any]:
    shards = ds.manifest.shards.values()
    prompt_tokens = sum(s.get("prompt_tokens", 0) for s in shards)
    completion_tokens = sum(s.get("completion_tokens", 0) for s in shards)
    stats: dict[str, Any] = {
        "teacher": cfg.teacher_name,
        "backend": cfg.backend,
        "prompts": good,
        "samples_per_prompt": cfg.samples,
        "traces": ds.manifest.rows,
        "failed_requests": sum(s.get("failed_requests", 0) for s in shards),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "this_run": {
            "requests": totals.requests,
            "failed": totals.failed,
            "completion_tokens": totals.completion_tokens,
            "seconds": round(seconds, 3),
            "requests_per_s": round(totals.requests / seconds, 2) if seconds else None,
            "tokens_per_s": round(totals.completion_tokens / seconds, 2) if seconds else None,
            "errors": dict(backend.stats.errors) if backend.stats else {},
            "retries": backend.stats.retries if backend.stats else 0,
        },
    }
    if (shard := ds.manifest.config.get("shard")) is not None:
        stats["part"] = shard
    if cfg.prices is not None:
        stats["cost_usd"] = round(cfg.prices.cost(prompt_tokens, completion_tokens), 4)
    return stats


def print_generate(stats: dict[str, Any], merged_hint: bool = False) -> None:
    """The summary lines of a generate run; `merged_hint`: a --shard run that found the parts merged."""
    run = stats.get("this_run") or {"requests": 0}  # a merge of parts has no run of its own
    line = (
        f"  {stats['traces']:,} traces of {stats['prompts']:,} prompts x {stats['samples_per_prompt']} samples; "
        f"{stats['prompt_tokens']:,} prompt + {stats['completion_tokens']:,} completion tokens"
    )
    if "cost_usd" in stats:
        line += f"; cost ${stats['cost_usd']:,.2f}"
    if "part" in stats:
        line = f"  part {stats['part'][0]} of {stats['part'][1]}:" + line[1:] + "; merged when every part is done"
    elif "parts" in stats:
        line += f"; merged from {stats['parts']} parts"
    print(line, file=sys.stderr)
    if run["requests"]:
        errors = ", ".join(f"{k} {v:,}" for k, v in run["errors"].items()) or "none"
        print(
            f"  this run: {run['requests']:,} requests ({run['failed']:,} failed), {run['requests_per_s']:,.0f} req/s, "
            f"{run['tokens_per_s']:,.0f} tok/s; transient errors {errors}; {run['retries']:,} retries",
            file=sys.stderr,
        )
    if stats["failed_requests"]:
        print(
            f"  {stats['failed_requests']:,} samples failed after every retry (see _rejects/); "
            + (
                "the parts are merged: run the command without --shard to retry them"
                if merged_hint
                else "run the same command again to retry them"
            ),
            file=sys.stderr,
        )


class GenerateOptions(StrictModel):
    """The options of `distill generate` and of a pipeline step with `stage: generate`."""

    teacher: str = Field(description="Teacher YAML (configs/teacher/*.yaml): backend, model, sampling")
    shard: str | None = Field(
        default=None,
        description="i/n: this process takes the i-th of n disjoint parts of the prompts (0-based); `slurm`: i and "
        "n from SLURM_PROCID and SLURM_NTASKS. The last part to finish merges all n into --out",
    )
    base_url: list[str] | None = Field(
        default=None, description="Server base URL(s) for this process, replacing the YAML's base_urls"
    )


def _stage_load(ctx: Context) -> TeacherConfig:
    opts: GenerateOptions = ctx.options
    cfg = load_config(ctx.path(opts.teacher), TeacherConfig)
    if opts.shard is not None:
        parse_shard(opts.shard)  # a bad --shard is named before anything is read
    return cfg.model_copy(update={"base_urls": opts.base_url}) if opts.base_url else cfg


def _stage_run(ctx: Context) -> StageResult:
    shard = parse_shard(ctx.options.shard) if ctx.options.shard is not None else None
    return run_generate(ctx.inputs, ctx.out, ctx.settings, rows_per_shard=ctx.rows_per_shard,
                        overwrite=ctx.overwrite, show_progress=ctx.show_progress, shard=shard)  # fmt: skip


def _stage_plan(p: PlanContext) -> Flow:
    a, cfg, src = p.assumptions, p.ctx.settings, p.upstream
    requests = (src.rows if src else 0) * cfg.samples
    tokens = requests * a.mean_completion_tokens
    gpu_h = tokens / a.teacher_tokens_per_s / 3600 * a.gpus_per_teacher_replica
    serving = (
        f"{gpu_h:,.0f} GPU-hours at {a.teacher_tokens_per_s:,.0f} tok/s per {a.gpus_per_teacher_replica}-GPU replica"
    )
    if cfg.backend == "synthetic":  # the offline arithmetic teacher needs no GPU
        gpu_h, serving = 0.0, "synthetic teacher: no GPU"
    return Flow(
        requests,
        a.mean_prompt_tokens + a.mean_completion_tokens,
        extra={"prompts": src.rows if src else 0, "samples": cfg.samples},
        note=f"{requests:,.0f} requests ({cfg.samples} samples), {tokens / 1e9:,.2f}B teacher tokens "
        f"(plan.mean_completion_tokens {a.mean_completion_tokens:,.0f}); {serving}",
        teacher_gpu_h=gpu_h,
    )


def _stage_details(result: StageResult, ctx: Context) -> None:
    stats = result.manifest.stats["generate"]
    print_generate(stats, merged_hint=ctx.options.shard is not None and "parts" in stats)


STAGE = register(
    Stage(
        name="generate",
        help="""Sample the teacher: `samples` traces per prompt, exactly one row per (`id`, `sample`).

    Each row has the prompt's columns, `sample`, `reasoning` (inside <think>), `content` (after
    </think>), `finish_reason`, token counts, `teacher`, `params` and `latency_s`. Killed and rerun,
    it asks only for the samples not yet written; samples that failed every retry are in
    `OUT/_rejects/` and are asked for again by the next run of the same command.

    Example:

      distill generate --input runs/demo/prompts --teacher configs/teacher/synthetic.yaml --out runs/traces

    With the full R1 behind vLLM: `--teacher configs/teacher/r1-vllm.yaml` (its `base_urls`); one client of
    16, each beside its own server: `--shard 3/16 --base-url http://localhost:8000/v1` (README, "Teacher
    traces").
    """,
        options=GenerateOptions,
        load=_stage_load,
        run=_stage_run,
        plan=_stage_plan,
        details=_stage_details,
        rows_per_shard=1_000,
        rows_help="Prompts per shard (a shard is written once all its samples are in): the unit of resume.",
        parallel=False,  # one process of many concurrent requests; more processes: --shard
        input_help="Prompts: the --out of `distill prompts`, or any prompt file.",
        out_help="Output dataset directory of traces.",
    )
)
