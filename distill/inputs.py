"""`--input` specs: dataset directories, Parquet files, JSON-lines files, globs of them.

Inputs are planned before any work starts: each file is cut into *chunks* of at most
`rows_per_shard` rows, and chunk k of the plan becomes output shard k. The plan depends only on the
input files, so a rerun cuts them the same way and a finished chunk is never done twice.

File-level problems (no such file, an empty file, a missing column, a column of the wrong type) are
found while planning and stop the run with one line (`UserError`). Row-level problems (a malformed
or non-UTF-8 JSON line, a wrong type in one row, an oversized row) are found while reading and become
rejects, so the good rows still go through.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import RowError, UserError
from distill.records import Record, coerce_row, conform_table, output_schema
from distill.store import DatasetReader, is_dataset_dir

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
MAX_ROW_BYTES = 32 << 20  # a 32K-token R1 trace is ~150 KB; a row 200x that is a broken file, not data
READ_BLOCK = 8 << 20


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str  # "parquet" | "jsonl"
    rows: int  # JSONL: lines, blank ones included (a row's number is its line number - 1)
    fingerprint: str
    source: str  # default `source` for rows that have none: the file's (or dataset directory's) name
    line_offsets: tuple[int, ...] = ()  # JSONL: byte offset of every chunk's first line, then the file size

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "rows": self.rows, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Chunk:
    file: InputFile
    start: int  # first row (inclusive)
    stop: int  # last row (exclusive)
    byte_start: int = 0  # JSONL only
    byte_stop: int = 0

    def describe(self, file_index: int) -> dict[str, int]:
        return {"file": file_index, "start": self.start, "stop": self.stop}


def resolve(specs: list[str], rows_per_shard: int, *, what: str = "--input") -> list[InputFile]:
    """Every input file behind `specs`, in order, with its fingerprint and chunk boundaries."""
    if not specs:
        raise UserError(f"no {what} given; pass a dataset directory, a .parquet or .jsonl file, or a glob")
    files: list[InputFile] = []
    for spec in specs:
        files.extend(_resolve_one(spec, rows_per_shard, what))
    return files


def _resolve_one(spec: str, rows_per_shard: int, what: str) -> list[InputFile]:
    path = Path(spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise UserError(f"{what} {spec}: the glob matches no file; check the pattern")
        return [f for m in matches for f in _resolve_one(m, rows_per_shard, what)]
    if is_dataset_dir(path):
        return _dataset_dir_files(path)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", *JSONL_SUFFIXES))
        if not found:
            raise UserError(f"{what} {spec}: directory holds no dataset (.parquet or .jsonl files)")
        return [_file(p, rows_per_shard, what) for p in found]
    if not path.exists():
        raise UserError(f"{what} {spec}: no such file or directory")
    return [_file(path, rows_per_shard, what)]


def _dataset_dir_files(path: Path) -> list[InputFile]:
    manifest = DatasetReader(path).manifest  # a UserError when the directory is unfinished or unreadable
    return [
        InputFile(
            path=str(path / s["file"]),
            format="parquet",
            rows=s["rows"],
            fingerprint=s["sha256"],  # recorded when the shard was written: no need to hash it again
            source=path.name,
        )
        for _, s in sorted(manifest.shards.items())
    ]


def _file(path: Path, rows_per_shard: int, what: str) -> InputFile:
    if path.suffix == ".parquet":
        return _parquet_file(path, what)
    if path.suffix in JSONL_SUFFIXES:
        return _jsonl_file(path, rows_per_shard, what)
    raise UserError(f"{what} {path}: unknown file type {path.suffix!r}; use .parquet, .jsonl or a dataset directory")


def _parquet_file(path: Path, what: str) -> InputFile:
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{what} {path}: not a readable Parquet file ({e}); check the file") from None
    if meta.num_rows == 0:
        raise UserError(f"{what} {path}: the file has no rows; remove it from {what}")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return InputFile(str(path), "parquet", meta.num_rows, digest, path.stem)


def _jsonl_file(path: Path, rows_per_shard: int, what: str) -> InputFile:
    """One pass over the bytes: the SHA-256 and the byte offset where every chunk of lines starts."""
    h = hashlib.sha256()
    offsets = [0]
    lines = 0
    pos = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            h.update(block)
            start = 0
            while (nl := block.find(b"\n", start)) != -1:
                lines += 1
                if lines % rows_per_shard == 0:
                    offsets.append(pos + nl + 1)
                start = nl + 1
            pos += len(block)
            last = block[-1:]
    if pos == 0:
        raise UserError(f"{what} {path}: the file is empty; remove it from {what}")
    if last != b"\n":
        lines += 1  # a last line with no newline is still a line
    if offsets[-1] != pos:
        offsets.append(pos)
    return InputFile(str(path), "jsonl", lines, h.hexdigest(), path.stem, tuple(offsets))


def plan(files: list[InputFile], rows_per_shard: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for f in files:
        if f.format == "jsonl":
            for k in range(len(f.line_offsets) - 1):
                start = k * rows_per_shard
                chunks.append(
                    Chunk(
                        f,
                        start,
                        min(start + rows_per_shard, f.rows),
                        f.line_offsets[k],
                        f.line_offsets[k + 1],
                    )
                )
        else:
            for start in range(0, f.rows, rows_per_shard):
                chunks.append(Chunk(f, start, min(start + rows_per_shard, f.rows)))
    return chunks


def check_columns(files: list[InputFile], record: Record | None) -> None:
    """File-level checks before any work: every Parquet input has the record's columns and types."""
    if record is None:
        return
    for f in files:
        if f.format == "parquet":
            schema = pq.read_schema(f.path)
            conform_table(schema.empty_table(), record, f.path, f.source)


# --- reading a chunk --------------------------------------------------------------------------------


@dataclass
class Reject:
    row: int
    error: str
    raw: str | bytes | None


@dataclass
class Batch:
    table: pa.Table  # the rows that conform
    rows: list[int]  # their row numbers in the input file
    rejects: list[Reject]  # the rows that do not


def read_chunk(chunk: Chunk, record: Record | None, batch_size: int) -> Iterator[Batch]:
    """The rows of `chunk` in batches, conformed to `record`, with the rows that could not be."""
    if chunk.file.format == "jsonl":
        yield from _read_jsonl_chunk(chunk, record, batch_size)
    else:
        yield from _read_parquet_chunk(chunk, record, batch_size)


def _read_parquet_chunk(chunk: Chunk, record: Record | None, batch_size: int) -> Iterator[Batch]:
    f = chunk.file
    with pq.ParquetFile(f.path) as pf:
        groups, first_row, row = [], 0, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row + n > chunk.start and row < chunk.stop:
                if not groups:
                    first_row = row
                groups.append(g)
            row += n
        row = first_row
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups):
            lo, hi = max(chunk.start - row, 0), min(chunk.stop - row, batch.num_rows)
            batch_start = row
            row += batch.num_rows
            if hi <= lo:
                continue
            table = pa.Table.from_batches([batch.slice(lo, hi - lo)])
            first = batch_start + lo
            if record is None:
                yield Batch(table, list(range(first, first + table.num_rows)), [])
                continue
            good, errors = conform_table(table, record, f.path, f.source)
            bad = {i for i, _ in errors}
            rows = [first + i for i in range(table.num_rows) if i not in bad]
            yield Batch(good, rows, [Reject(first + i, err, _row_json(table, i)) for i, err in errors])


def _row_json(table: pa.Table, i: int) -> str:
    return json.dumps(table.slice(i, 1).to_pylist()[0], ensure_ascii=False, default=str)


def _read_jsonl_chunk(chunk: Chunk, record: Record | None, batch_size: int) -> Iterator[Batch]:
    f = chunk.file
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    for lineno, raw in _lines(f.path, chunk.byte_start, chunk.byte_stop, chunk.start):
        if not raw.strip():
            continue  # blank lines are not rows
        try:
            rows.append(_parse_line(raw, record, f.source))
            numbers.append(lineno)
        except RowError as e:
            rejects.append(Reject(lineno, str(e), raw))
        if len(rows) + len(rejects) >= batch_size:
            yield Batch(_to_table(rows, record), numbers, rejects)
            rows, numbers, rejects = [], [], []
    if rows or rejects:
        yield Batch(_to_table(rows, record), numbers, rejects)


def _lines(path: str, byte_start: int, byte_stop: int, first_row: int) -> Iterator[tuple[int, bytes]]:
    """Lines of the byte range [byte_start, byte_stop), read in blocks (a line may span many)."""
    row = first_row
    with open(path, "rb") as fh:
        fh.seek(byte_start)
        remaining = byte_stop - byte_start
        carry = b""
        while remaining > 0:
            block = fh.read(min(READ_BLOCK, remaining))
            if not block:
                break
            remaining -= len(block)
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            for line in parts:
                yield row, line
                row += 1
        if carry:
            yield row, carry


def _parse_line(raw: bytes, record: Record | None, source: str) -> dict[str, Any]:
    if len(raw) > MAX_ROW_BYTES:
        raise RowError("row_too_large", f"{len(raw):,} bytes, over the limit of {MAX_ROW_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("not_utf8", f"invalid UTF-8 at byte {e.start}; re-encode the file as UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("malformed_json", f"{e.msg} at column {e.colno}") from None
    if record is None:
        if not isinstance(obj, dict):
            raise RowError("not_an_object", "a row must be a JSON object")
        return obj
    return coerce_row(obj, record, source)


def _to_table(rows: list[dict[str, Any]], record: Record | None) -> pa.Table:
    if record is None:
        return pa.Table.from_pylist(rows)
    return pa.Table.from_pylist(rows, schema=output_schema(record))
