"""`--input` specs: dataset directories, Parquet, JSON-lines and CSV files, globs of them, a folder
written by `datasets.Dataset.save_to_disk`, or `hf:NAME[@SPLIT]` for `datasets.load_dataset(NAME)`.

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
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from distill.errors import RowError, UserError
from distill.records import Record, coerce_row, conform_table, output_schema
from distill.sources.layouts import PROMPT_LAYOUTS, Layouts
from distill.sources.mapping import SourceMapping, TraceMapping, apply_mapping, mapping_for
from distill.sources.trace_layouts import TRACES, to_traces
from distill.store import DatasetReader, check_shard, is_dataset_dir

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
MAX_ROW_BYTES = 32 << 20  # a 32K-token R1 trace is ~150 KB; a row 200x that is a broken file, not data
READ_BLOCK = 8 << 20


@dataclass(frozen=True)
class InputFile:
    path: str
    format: str  # "parquet" | "jsonl" | "csv" | "arrow" (the Arrow stream files of a `datasets` folder)
    rows: int  # JSONL: lines, blank ones included (a row's number is its line number - 1)
    fingerprint: str
    source: str  # default `source` for rows that have none: the file's (or dataset directory's) name
    line_offsets: tuple[int, ...] = ()  # JSONL: byte offset of every chunk's first line, then the file size
    record: str | None = None  # a shard of a dataset directory: the record its stage wrote (checked then)

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


def count_rows(specs: list[str]) -> int | None:
    """Rows of local inputs, or None when any is missing or remote (hf:): what a plan counts."""
    if any(s.startswith("hf:") for s in specs):
        return None
    try:
        return sum(f.rows for f in resolve(specs, 10_000))
    except Exception:  # a missing or unreadable input: the plan falls back on its assumption
        return None


def _resolve_one(spec: str, rows_per_shard: int, what: str) -> list[InputFile]:
    if spec.startswith("hf:"):
        return _hub_dataset(spec, what)
    path = Path(spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise UserError(f"{what} {spec}: the glob matches no file; check the pattern")
        return [f for m in matches for f in _resolve_one(m, rows_per_shard, what)]
    if is_dataset_dir(path):
        return _dataset_dir_files(path)
    if path.is_dir() and (path / "state.json").exists():
        return _saved_dataset(path, what)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".csv", *JSONL_SUFFIXES))
        if not found:
            raise UserError(f"{what} {spec}: directory holds no dataset (.parquet, .jsonl or .csv files)")
        return [_file(p, rows_per_shard, what) for p in found]
    if not path.exists():
        raise UserError(f"{what} {spec}: no such file or directory")
    return [_file(path, rows_per_shard, what)]


def _dataset_dir_files(path: Path) -> list[InputFile]:
    manifest = DatasetReader(path).manifest  # a UserError when the directory is unfinished or unreadable
    for _, entry in sorted(manifest.shards.items()):
        # A shard cut short (a copy that stopped, a full disk) fails here, at a stat per shard, not as an Arrow
        # traceback in a worker; a damaged shard of the right size fails when it is read (`_parquet_error`).
        if (problem := check_shard(path, entry, hash_files=False)) is not None:
            raise UserError(
                f"{path}: shard {problem}; the directory is damaged: run `distill inspect --verify {path}`, then "
                "rerun the stage that wrote it (or restore the shard)"
            )
    return [
        InputFile(
            path=str(path / s["file"]),
            format="parquet",
            rows=s["rows"],
            fingerprint=s["sha256"],  # recorded when the shard was written: no need to hash it again
            source=path.name,
            record=manifest.record,
        )
        for _, s in sorted(manifest.shards.items())
    ]


def _file(path: Path, rows_per_shard: int, what: str) -> InputFile:
    if path.suffix == ".parquet":
        return _parquet_file(path, what)
    if path.suffix in JSONL_SUFFIXES:
        return _jsonl_file(path, rows_per_shard, what)
    if path.suffix == ".csv":
        return _csv_file(path, what)
    raise UserError(
        f"{what} {path}: unknown file type {path.suffix!r}; use .parquet, .jsonl, .csv or a dataset directory"
    )


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _csv_file(path: Path, what: str) -> InputFile:
    rows = sum(b.num_rows for b in _csv_batches(str(path), what))
    if rows == 0:
        raise UserError(f"{what} {path}: the file has no rows; remove it from {what}")
    return InputFile(str(path), "csv", rows, _sha256(path), path.stem)


def _csv_batches(path: str, what: str = "--input") -> Iterator[pa.RecordBatch]:
    """Every column as text: a CSV has no types, and guessing them per block breaks on the next block."""
    try:
        with pa_csv.open_csv(path) as probe:  # the header, from the first block only
            header = probe.schema.names
        convert = pa_csv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True)
        with pa_csv.open_csv(path, convert_options=convert) as reader:
            yield from reader
    except (pa.ArrowInvalid, OSError) as e:
        # Planning reads the whole file once, so a broken CSV stops the run before any work.
        raise UserError(f"{what} {path}: not a readable CSV file ({str(e).splitlines()[0]}); check the file") from None


def _saved_dataset(path: Path, what: str) -> list[InputFile]:
    """A folder written by `Dataset.save_to_disk`: its Arrow files, in the order its state.json lists."""
    state = json.loads((path / "state.json").read_text())
    files = [path / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise UserError(f"{what} {path}: state.json lists no data files; is this a `save_to_disk` folder?")
    return [_arrow_file(f, path.name) for f in files]


def _hub_dataset(spec: str, what: str) -> list[InputFile]:
    """`hf:NAME[@SPLIT]`: the real `datasets.load_dataset` (a Hub name, or a local folder of data files)."""
    name, _, split = spec[3:].partition("@")
    from distill.hub_offline import hub_reachable, is_local, reason

    if not is_local(name) and not hub_reachable():
        # datasets reads the offline switch when it is imported: set before, its cache answers without retries
        os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many kinds: not found, offline, bad split, ...
        raise UserError(f"{what} {spec}: datasets.load_dataset failed: {reason(name, e, 'dataset')}") from None
    files = [Path(c["filename"]) for c in ds.cache_files]
    if not files:
        raise UserError(f"{what} {spec}: the dataset has no cache files to read; save it with save_to_disk first")
    return [_arrow_file(f, name.rstrip("/").rsplit("/", 1)[-1]) for f in files]


def _arrow_file(path: Path, source: str) -> InputFile:
    rows = _read_arrow(str(path)).num_rows
    return InputFile(str(path), "arrow", rows, _sha256(path), source)


def _read_arrow(path: str) -> pa.Table:
    # Memory-mapped: slicing a chunk out of a large file reads only that chunk's pages.
    return pa.ipc.open_stream(pa.memory_map(path)).read_all()


def _parquet_file(path: Path, what: str) -> InputFile:
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{what} {path}: not a readable Parquet file ({e}); check the file") from None
    if meta.num_rows == 0:
        raise UserError(f"{what} {path}: the file has no rows; remove it from {what}")
    return InputFile(str(path), "parquet", meta.num_rows, _sha256(path), path.stem)


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


def check_columns(files: list[InputFile], record: Record | None, mappings: list[SourceMapping] | None = None) -> None:
    """File-level checks before any work: every typed input has the record's columns and types.

    Inputs read through a column mapping are checked row by row instead (the mapping makes the columns).
    """
    if record is None:
        return
    for f in files:
        if mappings and mapping_for(f.path, mappings) is not None:
            continue
        if f.format == "parquet":
            try:
                schema = pq.read_schema(f.path)
            except (pa.ArrowInvalid, OSError) as e:
                raise _parquet_error(f.path, e) from None
        elif f.format == "arrow":
            schema = _read_arrow(f.path).schema
        elif f.format == "csv":
            schema = next(_csv_batches(f.path)).schema
        else:
            continue
        conform_table(schema.empty_table(), record, f.path, f.source)


def sample_rows(f: InputFile, k: int = 20) -> tuple[list[str], list[dict[str, Any]]]:
    """A file's columns and its first `k` readable rows: what a layout is recognised by.

    JSON lines have no schema: the columns are every key of the first rows (malformed lines are skipped
    here; reading them later makes them rejects)."""
    if f.format == "jsonl":
        rows: list[dict[str, Any]] = []
        for _, raw in _lines(f.path, 0, f.line_offsets[-1], 0):
            if raw.strip():
                try:
                    obj = _parse_line(raw)
                except RowError:
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                if len(rows) >= k:
                    break
        return list(dict.fromkeys(key for r in rows for key in r)), rows
    chunk = Chunk(f, 0, min(k, f.rows))
    for _, table in _table_slices(chunk, k):
        return table.column_names, table.to_pylist()
    return [], []


def layouts_of(
    files: Sequence[InputFile],
    explicit: Sequence[Any],
    *,
    table: Layouts[Any] = PROMPT_LAYOUTS,
    layout: str | None = None,
    what: str = "--input",
) -> list[tuple[str, Any]]:
    """Per input file: its layout's name (in `table`: the prompt layouts, or `TRACES`) and the mapping that reads
    it (None where the file already has the record's columns). An explicit mapping whose `match` fits the file
    wins over detection; `layout` (a known name) stands for every file no explicit mapping matches."""
    default = None if layout is None else (TraceMapping if table is TRACES else SourceMapping)(layout=layout)
    found: list[tuple[str, Any]] = []
    for f in files:
        chosen = mapping_for(f.path, list(explicit)) or default
        if chosen is None and table.own and f.record in table.own[0]:
            found.append((table.own[1], None))  # a stage's own output: no rows to sample (500 shards cost 0 s)
            continue
        columns, rows = sample_rows(f)
        if chosen is not None and chosen.layout is None:
            found.append(("mapping", chosen))
            continue
        if not rows:  # nothing readable at the top: its rows become rejects one by one, with their reasons
            found.append(("unreadable", None))
            continue
        if chosen is not None:
            name, m = chosen.layout or "", table.resolve(chosen, columns, rows)
        else:
            name, m = table.detect(columns, rows, f"{what} {f.path}")
        m = m.model_copy(update={"match": glob.escape(f.path)})
        found.append((name, None if table.reads_as_is(m, columns) else m))
    return found


def column_has(files: list[InputFile], column: str, value: str) -> bool:
    """Whether any row of the files has `column` == `value`, reading only that column where the format
    allows (JSON lines: only lines that mention the value are parsed)."""
    needle = json.dumps(value).encode()
    for f in files:
        if f.format == "jsonl":
            for _, raw in _lines(f.path, 0, f.line_offsets[-1], 0):
                if needle in raw:
                    try:
                        obj = _parse_line(raw)
                    except RowError:
                        continue
                    if isinstance(obj, dict) and obj.get(column) == value:
                        return True
            continue
        if f.format == "parquet":
            try:
                if column not in pq.read_schema(f.path).names:
                    continue
            except (pa.ArrowInvalid, OSError) as e:
                raise _parquet_error(f.path, e) from None
            batches: Iterator[Any] = pq.ParquetFile(f.path).iter_batches(columns=[column], batch_size=65_536)
        else:
            batches = (t for _, t in _table_slices(Chunk(f, 0, f.rows), 65_536))
        for b in batches:
            if column in b.schema.names and pc.any(pc.equal(b.column(column), value)).as_py():
                return True
    return False


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


def read_chunk(
    chunk: Chunk, record: Record | None, batch_size: int, mappings: Sequence[SourceMapping | TraceMapping] | None = None
) -> Iterator[Batch]:
    """The rows of `chunk` in batches, mapped and conformed to `record`, with the rows that could not be."""
    mapping = mapping_for(chunk.file.path, list(mappings)) if mappings else None
    if chunk.file.format == "jsonl":
        yield from _read_jsonl_chunk(chunk, record, batch_size, mapping)
        return
    for first, table in _table_slices(chunk, batch_size):
        yield _table_batch(table, first, record, chunk.file, mapping)


def _table_slices(chunk: Chunk, batch_size: int) -> Iterator[tuple[int, pa.Table]]:
    """(row number of the first row, rows) for the rows [start, stop) of a tabular file."""
    f = chunk.file
    if f.format == "arrow":
        table = _read_arrow(f.path).slice(chunk.start, chunk.stop - chunk.start)
        for k in range(0, table.num_rows, batch_size):
            yield chunk.start + k, table.slice(k, batch_size)
        return
    if f.format == "csv":
        batches: Iterator[pa.RecordBatch] = _csv_batches(f.path)
        row = 0
    else:
        try:
            pf = pq.ParquetFile(f.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise _parquet_error(f.path, e) from None
        groups, row, seen = [], -1, 0
        for g in range(pf.metadata.num_row_groups):  # read only the row groups that hold the chunk
            n = pf.metadata.row_group(g).num_rows
            if seen + n > chunk.start and seen < chunk.stop:
                row = seen if row < 0 else row
                groups.append(g)
            seen += n
        batches = _guarded(pf.iter_batches(batch_size=batch_size, row_groups=groups), f.path)
    for batch in batches:
        lo, hi = max(chunk.start - row, 0), min(chunk.stop - row, batch.num_rows)
        if hi > lo:
            yield row + lo, pa.Table.from_batches([batch.slice(lo, hi - lo)])
        row += batch.num_rows
        if row >= chunk.stop:
            break


def _parquet_error(path: str, e: Exception) -> UserError:
    return UserError(
        f"{path}: not a readable Parquet file ({str(e).splitlines()[0]}); if it is a shard of a dataset directory, "
        f"run `distill inspect --verify {Path(path).parent}` and rerun the stage that wrote it"
    )


def _guarded(batches: Iterator[pa.RecordBatch], path: str) -> Iterator[pa.RecordBatch]:
    """A Parquet file damaged inside (the right size, broken pages) is one line naming it, not a traceback."""
    try:
        yield from batches
    except (pa.ArrowInvalid, OSError) as e:
        raise _parquet_error(path, e) from None


# Reject codes that say the file's rows do not have the record's shape (as opposed to one odd row).
SCHEMA_CODES = ("missing_field", "wrong_type", "bad_value", "not_an_object")


def preflight(
    files: Sequence[InputFile], record: Record | None, mappings: Sequence[SourceMapping | TraceMapping] = (),
    rows: int = 200, what: str = "--input",
) -> None:  # fmt: skip
    """Before any output is written: a file whose first rows mostly fail one schema check stops the run with one
    line (the reason, the first offending row, the fix), instead of a run that writes nothing and exits 0."""
    if record is None:
        return
    for f in files:
        if f.record is not None:  # a stage's shard: conformed to its record when written (and its columns checked)
            continue
        if f.format == "jsonl":
            chunk = Chunk(f, 0, min(rows, f.rows), 0, f.line_offsets[1] if len(f.line_offsets) > 1 else 0)
        else:
            chunk = Chunk(f, 0, min(rows, f.rows))
        seen: set[int] = set()
        rejects: list[Reject] = []
        for batch in read_chunk(chunk, record, rows, mappings):
            seen.update(batch.rows)
            rejects += batch.rejects
            if len(seen) + len(rejects) >= rows:
                break
        codes = Counter(r.error.split(":", 1)[0] for r in rejects)
        top = next(iter(codes.most_common(1)), None)
        if top is None or top[0] not in SCHEMA_CODES or top[1] * 2 <= len(seen) + len(rejects):
            continue
        first = next(r for r in rejects if r.error.startswith(top[0]))
        raise UserError(
            f"{what} {f.path}: {top[1]} of its first {len(seen) + len(rejects)} rows fail the {record.name} record "
            f"(row {first.row}: {first.error}); {_fix(record, first.error)}"
        )


def _fix(record: Record, error: str) -> str:
    if record.name == "verdict":
        return "give it the output of `distill filter` (a verdict directory, or its rows as .jsonl / .parquet)"
    if record.name == "trace":
        return (
            "map the file's columns with `sources: [{match: FILE, problem: ..., response: ..., answer: ...}]` in "
            "--config, or name its layout with --layout (README, 'Public trace sets')"
        )
    if "'domain'" in error:
        return "give `domain` one of math, code, science, general (or drop the column: the layout then sets it)"
    if record.name == "prompt":
        return "map the file's columns in --config: `sources: [{match: FILE, columns: {YOUR_COLUMN: problem}}]`"
    return f"convert the file to the {record.name} record's columns (docs/datasets.md)"


def _table_batch(
    table: pa.Table, first: int, record: Record | None, f: InputFile, mapping: SourceMapping | TraceMapping | None
) -> Batch:
    if mapping is not None:  # the mapping works on rows: the same path as JSON lines
        rows, numbers, rejects = [], [], []
        for i, obj in enumerate(table.to_pylist()):
            try:
                converted = _convert(obj, record, f.source, mapping, first + i)
                rows.extend(converted)
                numbers.extend([first + i] * len(converted))
            except RowError as e:
                rejects.append(Reject(first + i, str(e), json.dumps(obj, ensure_ascii=False, default=str)))
        return Batch(_to_table(rows, record), numbers, rejects)
    if record is None:
        return Batch(table, list(range(first, first + table.num_rows)), [])
    good, errors = conform_table(table, record, f.path, f.source)
    bad = {i for i, _ in errors}
    rows = [first + i for i in range(table.num_rows) if i not in bad]
    return Batch(good, rows, [Reject(first + i, err, _row_json(table, i)) for i, err in errors])


def take_columns(
    chunk: Chunk, rows: np.ndarray, columns: Sequence[str]
) -> tuple[list[int], dict[str, list[Any]], list[Reject]]:
    """The chosen `rows` of `chunk` (row numbers in the file, sorted, repeats kept) as Python values,
    column by column, for a stage that works on Python values (the mix).

    Returns which entries of `rows` were read (their indices), their `columns` (a column a file lacks is
    all None), and a reject for each chosen row that could not be read (a malformed JSON line, a blank line). No Arrow
    type is inferred across JSON rows: a value of an unexpected type is that row's problem only. Only
    the named columns of the chosen rows become Python objects: a row-by-row reader spends most of a
    short-row mix building dicts of columns it never looks at.
    """
    read: list[int] = []
    values: dict[str, list[Any]] = {c: [] for c in columns}
    rejects: list[Reject] = []
    f = chunk.file
    if f.format == "jsonl":
        wanted = set(rows.tolist())
        found: dict[int, Any] = {}
        for lineno, raw in _lines(f.path, chunk.byte_start, chunk.byte_stop, chunk.start):
            if lineno in wanted and raw.strip():
                try:
                    found[lineno] = _convert(_parse_line(raw), None, f.source, None)[0]
                except RowError as e:
                    found[lineno] = Reject(lineno, str(e), raw)
        for i, n in enumerate(rows.tolist()):
            got = found.get(n)
            if isinstance(got, dict):
                read.append(i)
                for c in columns:
                    values[c].append(got.get(c))
            else:
                rejects.append(got if got is not None else Reject(n, "missing_row: a blank line", ""))
        return read, values, rejects
    for first, table in _table_slices(chunk, 65_536):
        mine = rows[(rows >= first) & (rows < first + table.num_rows)]
        if not len(mine):
            continue
        picked = table.take(pa.array(mine - first))
        for c in columns:
            values[c].extend(picked.column(c).to_pylist() if c in picked.column_names else [None] * len(mine))
    return list(range(len(rows))), values, rejects  # a tabular file has every row it counts


def rows_at(chunk: Chunk, numbers: Sequence[int]) -> dict[int, Any]:
    """Whole rows of `chunk` by row number, as Python values (for the rare rows a stage rejects after
    `take_columns`, whose reject keeps the row as it was)."""
    wanted = set(numbers)
    f = chunk.file
    if f.format == "jsonl":
        lines = _lines(f.path, chunk.byte_start, chunk.byte_stop, chunk.start)
        return {n: _parse_line(raw) for n, raw in lines if n in wanted}
    found: dict[int, Any] = {}
    for first, table in _table_slices(chunk, 65_536):
        mine = sorted(n for n in wanted if first <= n < first + table.num_rows)
        if mine:
            found.update(zip(mine, table.take(pa.array([n - first for n in mine])).to_pylist(), strict=True))
    return found


def _row_json(table: pa.Table, i: int) -> str:
    return json.dumps(table.slice(i, 1).to_pylist()[0], ensure_ascii=False, default=str)


def _read_jsonl_chunk(
    chunk: Chunk, record: Record | None, batch_size: int, mapping: SourceMapping | TraceMapping | None
) -> Iterator[Batch]:
    f = chunk.file
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    for lineno, raw in _lines(f.path, chunk.byte_start, chunk.byte_stop, chunk.start):
        if not raw.strip():
            continue  # blank lines are not rows
        try:
            converted = _convert(_parse_line(raw), record, f.source, mapping, lineno)
            rows.extend(converted)
            numbers.extend([lineno] * len(converted))
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


def _parse_line(raw: bytes) -> Any:
    if len(raw) > MAX_ROW_BYTES:
        raise RowError("row_too_large", f"{len(raw):,} bytes, over the limit of {MAX_ROW_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("not_utf8", f"invalid UTF-8 at byte {e.start}; re-encode the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("malformed_json", f"{e.msg} at column {e.colno}") from None


def _convert(
    obj: Any, record: Record | None, source: str, mapping: SourceMapping | TraceMapping | None, number: int = 0
) -> list[dict[str, Any]]:
    """One input row -> its records: one for a prompt mapping, one per trace for a trace layout (a list of
    generations is many)."""
    if not isinstance(obj, dict):
        raise RowError("not_an_object", "a row must be a JSON object")
    if isinstance(mapping, TraceMapping):
        found = to_traces(obj, mapping, source, number)
    else:
        found = [apply_mapping(obj, mapping) if mapping is not None else obj]
    return [coerce_row(o, record, source) for o in found] if record is not None else found


def _to_table(rows: list[dict[str, Any]], record: Record | None) -> pa.Table:
    if record is None:
        return pa.Table.from_pylist(rows)
    return pa.Table.from_pylist(rows, schema=output_schema(record))
