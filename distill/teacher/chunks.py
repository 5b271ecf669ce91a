"""One chunk of prompts -> one shard of traces: its requests, its journal, its commit.

A chunk is read once (its good prompts, the rows that cannot be prompts or repeat an earlier id), the
requests still missing from its journal are listed, and when the last result is in, its shard is written
from the journal in prompt then sample order, with a reject for every sample that failed every retry.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distill.records import get_record, output_schema
from distill.sources import inputs as inputs_mod
from distill.store import ShardWriter
from distill.teacher.config import TeacherConfig
from distill.teacher.journal import JOURNALS, Journal, journal_path
from distill.teacher.prompting import Request, user_turn

PROMPT, TRACE = get_record("prompt"), get_record("trace")
RESULT_COLUMNS = ("reasoning", "content", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s")
RETRIED_CODES = ("request_failed", "request_rejected")  # rejects a later run asks again for
WRITE_BATCH = 256


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


def trace_row(prompt: dict[str, Any], sample: int, res: dict[str, Any], cfg: TeacherConfig, params: str) -> dict:
    """The trace record of one result: the prompt's columns, the sample, the result, who answered and how."""
    return {
        **prompt,
        "sample": sample,
        **{c: res.get(c) for c in RESULT_COLUMNS},
        "teacher": cfg.teacher_name,
        "params": params,
        "prompt": user_turn(prompt["problem"], prompt["domain"], cfg),
    }


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
                    reject_sample(writer, path, row_no, prompt, s, error)
                    continue
                buf.append(trace_row(prompt, s, res, cfg, params))
                tokens["prompt_tokens"] += res.get("prompt_tokens") or 0
                tokens["completion_tokens"] += res.get("completion_tokens") or 0
                if len(buf) >= WRITE_BATCH:
                    writer.write(pa.Table.from_pylist(buf, schema=schema))
                    buf = []
        if buf:
            writer.write(pa.Table.from_pylist(buf, schema=schema))
        return commit_shard(writer, work, **tokens)
    except BaseException:
        writer.abort()
        raise


def reject_sample(writer: ShardWriter, path: str, row_no: int, prompt: dict[str, Any], sample: int, error: str) -> None:
    """A sample with no result (its request failed every retry, or the run stopped first): a reject the next run
    of the same command asks for again."""
    writer.reject(path, row_no, error, json.dumps({**prompt, "sample": sample}, ensure_ascii=False))


def commit_shard(writer: ShardWriter, work: ChunkWork, **extra: Any) -> dict[str, Any]:
    """The end of a chunk's shard: the rows that could not be prompts as rejects, the failed requests counted (the
    next run retries them), the shard committed with `extra` in its manifest entry."""
    for row_no, error, raw in work.bad:
        writer.reject(work.chunk.file.path, row_no, error, raw)
    failed = sum(writer.reject_codes[c] for c in RETRIED_CODES)
    return writer.commit(
        rows_in=len(work.prompts) + len(work.bad),
        input=work.chunk.describe(work.file_index),
        failed_requests=failed,
        **extra,
    )


def export_shard(root: Path, entry: dict[str, Any], index: int) -> None:
    """Copy a finished shard's results into its chunk's journal, so that redoing it keeps them."""
    journal = Journal(journal_path(root, index))
    if entry["rows"]:
        with pq.ParquetFile(root / entry["file"]) as pf:
            for batch in pf.iter_batches(columns=["id", "sample", *RESULT_COLUMNS]):
                for row in batch.to_pylist():
                    journal.append(row)
    journal.close()


def journaled(root: Path, todo: list[tuple[int, inputs_mod.Chunk, int]]) -> int:
    """Samples already in the journals of unfinished chunks (for the progress bar's start)."""
    n = 0
    for k, _, _ in todo:
        path = journal_path(root, k)
        if path.exists():
            with open(path, "rb") as f:
                n += sum(1 for _ in f)
    return n


def drop_stale_journals(root: Path, done: set[int]) -> None:
    """A crash between committing a shard and deleting its journal leaves a journal of a done chunk."""
    if (root / JOURNALS).is_dir():
        for k in done:
            journal_path(root, k).unlink(missing_ok=True)
