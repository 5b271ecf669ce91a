"""The local executor: a stage's pure batch function over planned input chunks, in a process pool.

The unit of work is one chunk of input rows -> one output shard (DESIGN.md, "Stage code"). A worker
reads its chunk itself, applies the batch function and writes the shard under a temporary name; the
parent only records finished shards in the manifest. So the parent's memory does not grow with the
data, the output is in input order (shard k holds chunk k), and a rerun redoes only the shards the
manifest does not list. The same task function is what the Ray executor (`distill/ray_executor.py`)
runs on a cluster.

A batch function is `fn(batch: pyarrow.RecordBatch, **options) -> pyarrow.RecordBatch | pyarrow.Table`.
If it raises on a batch, the batch is retried row by row and only the rows that raise become rejects
(`stage_error`): one odd row never costs a whole run.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import inspect
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from distill.errors import UserError
from distill.progress import StageProgress
from distill.records import Record, conform_table, get_record
from distill.sources import inputs as inputs_mod
from distill.sources.mapping import SourceMapping, TraceMapping
from distill.stages import Context
from distill.store import ShardWriter, StageOutput, StageResult, totals

BatchFunction = Callable[..., pa.RecordBatch | pa.Table]


@dataclass(frozen=True)
class MapStage:
    """A stage made of one pure batch function and its options."""

    name: str
    function: str  # "package.module:callable" or "path/to/file.py:callable"
    options: dict[str, Any] = field(default_factory=dict)
    input_record: str | None = None  # rows are conformed to this record before the function sees them
    output_record: str | None = None  # the function's output is conformed to this record
    batch_size: int = 1024
    # column mappings (prompt or trace layouts) for inputs whose columns differ from the record
    mappings: tuple[SourceMapping | TraceMapping, ...] = ()

    def config(self, rows_per_shard: int) -> dict[str, Any]:
        """What the output depends on, beside the inputs: its fingerprint decides resume vs refuse."""
        return {
            "function": self.function,
            "function_sha256": function_fingerprint(self.function),
            "options": self.options,
            "input_record": self.input_record,
            "output_record": self.output_record,
            "batch_size": self.batch_size,
            "rows_per_shard": rows_per_shard,
            **({"mappings": [m.model_dump() for m in self.mappings]} if self.mappings else {}),
        }


# --- loading batch functions ------------------------------------------------------------------------


def _split_spec(spec: str) -> tuple[str, str]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise UserError(f"function {spec!r}: write it as 'package.module:callable' or 'path/to/file.py:callable'")
    return module, attr


@cache
def load_function(spec: str) -> BatchFunction:
    module_name, attr = _split_spec(spec)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.exists():
                raise UserError(f"function {spec!r}: no such file {module_name}")
            mod_id = "distill_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(mod_id, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_id] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"function {spec!r}: cannot import {e.name!r}; check the module path") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"function {spec!r}: {module_name} has no callable named {attr!r}")
    return fn


def function_fingerprint(spec: str) -> str:
    """SHA-256 of the source file that defines the function: editing it invalidates old output."""
    fn = load_function(spec)
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    if source is None:
        return "unknown"
    with open(source, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- one shard --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    stage: MapStage
    chunk: inputs_mod.Chunk
    file_index: int
    index: int
    out: str


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Read one chunk, apply the batch function, write and commit the shard; return its manifest entry."""
    started = time.perf_counter()
    stage = task.stage
    fn = load_function(stage.function)
    in_record = get_record(stage.input_record) if stage.input_record else None
    out_record = get_record(stage.output_record) if stage.output_record else None
    writer = ShardWriter(Path(task.out), task.index, out_record.schema if out_record else None)
    path = task.chunk.file.path
    rows_in = 0
    try:
        for batch in inputs_mod.read_chunk(task.chunk, in_record, stage.batch_size, list(stage.mappings)):
            rows_in += batch.table.num_rows + len(batch.rejects)
            for r in batch.rejects:
                writer.reject(path, r.row, r.error, r.raw)
            if batch.table.num_rows == 0:
                continue
            out = _apply(fn, stage, batch, writer, path)
            if out is not None and out.num_rows:
                writer.write(_conform_output(out, out_record, stage, writer, path))
        entry = writer.commit(
            rows_in=rows_in,
            input=task.chunk.describe(task.file_index),
            seconds=round(time.perf_counter() - started, 3),
        )
    except BaseException:
        writer.abort()
        raise
    return entry


def _apply(
    fn: BatchFunction, stage: MapStage, inp: inputs_mod.Batch, writer: ShardWriter, path: str
) -> pa.Table | None:
    batch = inp.table.combine_chunks().to_batches()[0]
    try:
        return _as_table(fn(batch, **stage.options), stage)
    except UserError:
        raise
    except Exception:
        pass
    # Find the rows that raise, one at a time; the others go through.
    parts: list[pa.Table] = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            parts.append(_as_table(fn(row, **stage.options), stage))
        except UserError:
            raise
        except Exception as e:
            writer.reject(path, inp.rows[i], f"stage_error: {type(e).__name__}: {e}", _json_row(row))
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts, promote_options="permissive") if parts else None


def _json_row(row: pa.RecordBatch) -> str:
    return json.dumps(row.to_pylist()[0], ensure_ascii=False, default=str)


def _as_table(out: Any, stage: MapStage) -> pa.Table:
    if isinstance(out, pa.RecordBatch):
        return pa.Table.from_batches([out])
    if isinstance(out, pa.Table):
        return out
    raise UserError(
        f"stage {stage.name!r}: {stage.function} returned {type(out).__name__}; "
        "a batch function must return a pyarrow.RecordBatch or Table"
    )


def _conform_output(out: pa.Table, record: Record | None, stage: MapStage, writer: ShardWriter, path: str) -> pa.Table:
    if record is None:
        return out
    good, errors = conform_table(out, record, f"stage {stage.name!r} output", stage.name)
    for i, err in errors:
        writer.reject(path, -1, f"bad_output: {err}", _json_row(out.slice(i, 1).to_batches()[0]))
    return good


# --- the whole stage --------------------------------------------------------------------------------


def run_map_stage(
    stage: MapStage,
    ctx: Context,
    *,
    rows_per_shard: int | None = None,
    files: list[inputs_mod.InputFile] | None = None,
    extra_stats: Callable[[], dict[str, Any]] | None = None,
) -> StageResult:
    """Run `stage` over the context's inputs into its `out` (`rows_per_shard`: other than the step's, e.g. the
    filter's traces per row; `files`: the inputs already resolved at that size); `extra_stats` adds to the
    manifest's stats once all shards are in."""
    input_specs, out, executor = ctx.inputs, ctx.out, ctx.executor
    rows_per_shard = rows_per_shard or ctx.rows_per_shard
    if rows_per_shard < 1:
        raise UserError(f"rows_per_shard is {rows_per_shard}; it must be at least 1")
    check_executor(executor)
    load_function(stage.function)  # a bad function spec fails before anything is read
    files = files or inputs_mod.resolve(input_specs, rows_per_shard)
    in_record = get_record(stage.input_record) if stage.input_record else None
    inputs_mod.check_columns(files, in_record, list(stage.mappings))
    inputs_mod.preflight(files, in_record, stage.mappings)  # a file the record refuses stops here, before writing
    chunks = inputs_mod.plan(files, rows_per_shard)
    out_record = get_record(stage.output_record) if stage.output_record else None
    described = [f.describe() for f in files]
    with StageOutput(out, stage=stage.name, record=out_record, config=stage.config(rows_per_shard),
                     inputs=described, overwrite=ctx.overwrite) as o:  # fmt: skip
        if o.complete:
            return o.skipped()
        o.writer.set_plan(len(chunks))
        file_index = {f.path: i for i, f in enumerate(files)}
        todo = [ShardTask(stage, c, file_index[c.file.path], k, str(out)) for k, c in enumerate(chunks)
                if k not in o.opened.done]  # fmt: skip
        total_rows = sum(c.stop - c.start for c in chunks)
        done_rows = sum(s.get("rows_in", 0) for s in o.opened.manifest.shards.values())
        with StageProgress(stage.name, total_rows, done_rows, enabled=ctx.show_progress) as progress:
            for entry in executor_map(run_shard, todo, ctx.workers, executor):
                o.writer.record_shard(entry)
                progress.advance(entry["rows_in"], Counter(entry.get("rejects", {}).get("codes", {})))
        nothing_out(stage.name, o.writer.manifest, out)
        return o.finish(extra_stats() if extra_stats else {})


def nothing_out(name: str, manifest: Any, out: Path) -> None:
    """A stage never fails silently: rows in and none out (every row rejected) is an error, and the directory is
    left unfinished, so no later stage takes it for a result."""
    t = totals(manifest)
    if t["rows_in"] and not manifest.rows:
        codes = ", ".join(f"{k} {v:,}" for k, v in t["rejects_by_code"].items()) or "none"
        raise UserError(
            f"{name}: {t['rows_in']:,} rows in, none out (rejects: {codes}); see {out}/_rejects/ for each row's "
            "reason, fix the input, then rerun with --overwrite"
        )


EXECUTORS = ("local", "ray")


def check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")


def executor_map(
    fn: Callable[[Any], Any], tasks: list[Any], workers: int | None, executor: str = "local"
) -> Iterator[Any]:
    """`fn` over the tasks on the chosen executor, results in the order they finish: the local process
    pool, or Ray (`distill.ray_executor`), which runs the same task functions on a cluster."""
    check_executor(executor)
    if executor == "ray":
        from distill.ray_executor import ray_map

        return ray_map(fn, tasks, workers)
    return parallel_map(fn, tasks, workers or os.cpu_count() or 1)


def parallel_map(fn: Callable[[Any], Any], tasks: list[Any], workers: int) -> Iterator[Any]:
    """Yield `fn(task)` for every task as it finishes, at most 2 tasks per worker in flight.

    `fn` must be a module-level function (it is sent to the workers by name). One worker, or one
    task, runs in this process.
    """
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t)
        return
    # forkserver: workers start from a clean process, not a fork of a parent that runs a progress
    # thread (forking a threaded process can deadlock the child on a lock held at fork time).
    ctx = mp.get_context("forkserver")
    pending: set[Future[Any]] = set()
    queue = list(reversed(tasks))
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_die_with_parent
    ) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    pending.add(pool.submit(fn, queue.pop()))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        except BrokenProcessPool:
            raise RuntimeError(
                "a worker process died (killed, or out of memory?); rerun the same command to resume"
            ) from None
        finally:
            for fut in pending:
                fut.cancel()


def _die_with_parent() -> None:
    """Pool worker start-up: die with the command that started the pool.

    Without it a command killed by SIGKILL (or the OOM killer) leaves its workers running: they finish
    their task, then wait forever on a queue nobody feeds, holding memory and the command's output
    pipes. The worker's sentinel pipe reaches end-of-file when the command dies; with O_ASYNC the
    kernel then sends SIGIO, whose default action ends the process. No watcher thread: a threaded
    worker could not fork the math-verify child cheaply.
    """
    parent = mp.parent_process()
    if parent is None or not hasattr(os, "O_ASYNC") or not hasattr(fcntl, "F_SETOWN"):
        return
    fd = parent.sentinel
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    if not parent.is_alive():  # it died before the line above: no signal will come
        os._exit(1)
