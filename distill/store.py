"""Dataset directories: the only thing that passes between stages.

```
DIR/
  train-00000.parquet ...  zstd Parquet shards, row groups of bounded size
  _manifest.json           stage, record + schema version, fingerprints, one entry per finished shard
  _rejects/rejects-00000.parquet   input rows the stage could not process, with `error`
  .lock                    held (flock) by the one run writing DIR
```

Crash safety rests on three rules:
1. A shard is written to a hidden temporary name, fsynced, then renamed: a `train-*.parquet` name only
   ever holds a whole file.
2. The manifest is the truth: a shard counts as done only once the manifest, rewritten atomically
   (temporary file, fsync, rename), lists it with its size and SHA-256. A shard on disk that the
   manifest does not list, or whose size or checksum disagrees, is deleted and redone.
3. A manifest that does not parse (torn by a crash outside these rules, or edited by hand) is not
   trusted: the stage starts again from nothing.

So a run killed at any point loses at most the shards in flight and never duplicates a row; running
the same command again finishes the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import distill
from distill import __version__
from distill.errors import UserError

MANIFEST = "_manifest.json"
REJECTS = "_rejects"
# Side outputs: rows a shard set aside, each kind in its own folder, written and vouched for with the shard.
# `verdicts`: what `generate --preset` judged of each row as it arrived (the verdict record, row for row).
SIDES = {"rejects": REJECTS, "removed": "_removed", "verdicts": "_verdicts"}
LOCK = ".lock"
# Every stage's data in flight lives in DIR/.work/ (hidden: `datasets.load_dataset(data_dir=DIR)`, uploads
# and readers skip it) and is deleted once DIR is complete: prompts' signatures, mix's buckets, generate's
# journals (.work/journal/) and the parts of `generate --shard i/n` (.work/parts/i-of-n/).
WORK = ".work"
_LEGACY_WORK = ("_work", "_parts")  # where generate kept them before 2026-12 (moved on open by generate)
FORMAT = "distill.dataset"
FORMAT_VERSION = 1

ROW_GROUP_BYTES = 64 << 20  # bounds reader memory: one row group of one column is the unit read
REJECT_RAW_BYTES = 1 << 20  # a reject keeps at most this much of its raw text; `input`+`row` locate the rest

REJECT_SCHEMA = pa.schema(
    [
        pa.field("input", pa.string()),  # the input file
        pa.field("row", pa.int64()),  # 0-based row in that file (for JSON lines: line number - 1)
        pa.field("error", pa.string()),  # "<code>: <detail>"
        pa.field("raw", pa.large_string()),  # the row as text (JSON), cut at REJECT_RAW_BYTES
        pa.field("raw_bytes", pa.int64()),  # size of the whole raw row
    ]
)


# Shards are named for the Hub's one default split, "train": `datasets.load_dataset("parquet",
# data_dir=DIR)` and `load_dataset(DIR)` then pick exactly the shards, not the manifest. Reject files
# must avoid every split keyword (train, test, eval, ...), or `datasets` would read them as data.
DATA_PREFIX = "train-"
_SHARD_FILE = re.compile(r"^(train|rejects|removed)-\d{5,}\.parquet$")
_TEMP_FILE = re.compile(r"^\..+\.tmp-\d+$")


def shard_name(index: int, prefix: str = DATA_PREFIX) -> str:
    return f"{prefix}{index:05d}.parquet"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inputs_fingerprint(inputs: list[dict[str, Any]]) -> str:
    """The fingerprint of a stage's inputs (their `describe()` entries) as a manifest records it."""
    return fingerprint([i["fingerprint"] for i in inputs])


def fingerprint(obj: Any) -> str:
    """SHA-256 of canonical JSON: equal configs give equal fingerprints, whatever the key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    crash_point("manifest_written")
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    crash_point("manifest_renamed")


def crash_point(name: str) -> None:
    """Die by SIGKILL here when DISTILL_CRASH_AT=name:N and this is the N-th time in this process.

    The crash tests use it to kill a stage at each step of the commit protocol exactly, beside the
    kills at random times; unset (always, outside the tests) it costs one dictionary lookup.
    """
    spec = os.environ.get("DISTILL_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_crash_counts: dict[str, int] = {}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- writing one shard ------------------------------------------------------------------------------


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    # Short categorical strings (source, domain, finish_reason, ...) compress well with dictionaries;
    # long text (large_string: problem, reasoning, content) does not, and trying costs write speed.
    return [f.name for f in schema if pa.types.is_string(f.type)]


class _ParquetSink:
    """A Parquet file written under a temporary name, in row groups of about ROW_GROUP_BYTES."""

    def __init__(self, final: Path, schema: pa.Schema | None = None, *, strict: bool = True) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        # strict: every batch must have `schema`'s columns. Otherwise `schema` is only the default of a
        # file that gets no rows, and the first batch decides (a stage may add columns to its record).
        self.schema = schema if strict else None
        self.default_schema = schema
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            if self.schema is None:
                self.schema = batch.schema
            return
        if self.schema is None:
            self.schema = batch.schema
        elif batch.schema != self.schema:
            batch = _cast_like(batch, self.schema)
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for b in batches:
            self._pending.append(b)
            self._pending_bytes += b.nbytes
            self.rows += b.num_rows
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _open_writer(self) -> pq.ParquetWriter:
        if self._writer is None:
            if self.schema is None:
                self.schema = self.default_schema if self.default_schema is not None else pa.schema([])
            schema = self.schema
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self.tmp,
                schema,
                compression="zstd",
                compression_level=1,
                use_dictionary=_dictionary_columns(schema),
                write_statistics=_dictionary_columns(schema),
            )
        return self._writer

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._open_writer().write_table(table, row_group_size=table.num_rows)
        self._pending, self._pending_bytes = [], 0

    def close(self) -> dict[str, Any]:
        """Finish the file, fsync it and rename it into place; returns its manifest entry."""
        self._flush()
        self._open_writer().close()  # a shard with no rows is still a valid, empty Parquet file
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("file_written")
        os.replace(self.tmp, self.final)
        crash_point("file_renamed")
        _fsync_dir(self.final.parent)
        return {"rows": self.rows, "bytes": self.final.stat().st_size, "sha256": sha256_file(self.final)}

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _cast_like(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    if batch.schema.names != schema.names:
        raise ValueError(f"batch columns {batch.schema.names} differ from the shard's columns {schema.names}")
    return batch.cast(schema)


def _side_schema(side: str) -> pa.Schema | None:
    return REJECT_SCHEMA if side == "rejects" else None  # removed rows: the stage's own columns


class ShardWriter:
    """Writes one output shard and its rejects; nothing is visible until `commit`."""

    def __init__(self, root: Path, index: int, schema: pa.Schema | None = None) -> None:
        self.index = index
        self._data = _ParquetSink(root / shard_name(index), schema, strict=False)
        self._sides = {
            side: _ParquetSink(root / folder / shard_name(index, f"{side}-"), _side_schema(side))
            for side, folder in SIDES.items()
        }
        self._reject_rows: list[dict[str, Any]] = []
        self.reject_codes: Counter[str] = Counter()

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        self._data.write(batch)

    def reject(self, input_path: str, row: int, error: str, raw: str | bytes | None) -> None:
        if isinstance(raw, bytes):
            raw_bytes = len(raw)
            raw = raw[:REJECT_RAW_BYTES].decode("utf-8", errors="replace")
        else:
            raw_bytes = len(raw.encode("utf-8", errors="replace")) if raw is not None else 0
            if raw is not None and raw_bytes > REJECT_RAW_BYTES:
                raw = raw.encode("utf-8", errors="replace")[:REJECT_RAW_BYTES].decode("utf-8", errors="ignore")
        self._reject_rows.append({"input": input_path, "row": row, "error": error, "raw": raw, "raw_bytes": raw_bytes})
        self.reject_codes[error.split(":", 1)[0]] += 1
        if len(self._reject_rows) >= 1024:
            self._flush_rejects()

    def _flush_rejects(self) -> None:
        if self._reject_rows:
            self._sides["rejects"].write(pa.Table.from_pylist(self._reject_rows, schema=REJECT_SCHEMA))
            self._reject_rows = []

    def remove(self, table: pa.Table | pa.RecordBatch) -> None:
        """Set rows aside on purpose (a dedup stage's duplicates), with the columns that say why."""
        self._sides["removed"].write(table)

    def side(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        """Rows of another side output (`SIDES`) that belong with this shard."""
        self._sides[name].write(table)

    @property
    def rows(self) -> int:
        return self._data.rows

    def commit(self, **extra: Any) -> dict[str, Any]:
        """Make the shard whole on disk; the caller records the returned entry in the manifest."""
        self._flush_rejects()
        entry: dict[str, Any] = {"index": self.index, "file": shard_name(self.index)}
        for side, sink in self._sides.items():  # side files first: the data file's rename is the last step
            if sink.rows:
                entry[side] = {"file": sink.final.relative_to(sink.final.parent.parent).as_posix(), **sink.close()}
            else:
                sink.abort()
        if "rejects" in entry:
            entry["rejects"]["codes"] = dict(self.reject_codes)
        entry.update(self._data.close())
        entry.update(extra)
        return entry

    def abort(self) -> None:
        self._data.abort()
        for sink in self._sides.values():
            sink.abort()


# --- the directory ----------------------------------------------------------------------------------


@dataclass
class Manifest:
    stage: str
    record: str | None
    schema_version: int | None
    config: dict[str, Any]
    config_fingerprint: str
    inputs: list[dict[str, Any]]
    input_fingerprint: str
    planned_shards: int | None = None
    shards: dict[int, dict[str, Any]] = field(default_factory=dict)
    complete: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    distill_version: str = __version__
    command: str | None = field(default_factory=lambda: distill.COMMAND)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "stage": self.stage,
            "record": self.record,
            "schema_version": self.schema_version,
            "config": self.config,
            "config_fingerprint": self.config_fingerprint,
            "inputs": self.inputs,
            "input_fingerprint": self.input_fingerprint,
            "planned_shards": self.planned_shards,
            "complete": self.complete,
            "rows": self.rows,
            "stats": self.stats,
            "shards": [self.shards[i] for i in sorted(self.shards)],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "distill_version": self.distill_version,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise ValueError("not a distill manifest")
        return cls(
            stage=d["stage"],
            record=d.get("record"),
            schema_version=d.get("schema_version"),
            config=d["config"],
            config_fingerprint=d["config_fingerprint"],
            inputs=d["inputs"],
            input_fingerprint=d["input_fingerprint"],
            planned_shards=d.get("planned_shards"),
            shards={int(s["index"]): s for s in d["shards"]},
            complete=bool(d.get("complete")),
            stats=d.get("stats") or {},
            created_at=d.get("created_at", _now()),
            updated_at=d.get("updated_at", _now()),
            distill_version=d.get("distill_version", "?"),
            command=d.get("command"),
        )

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards.values())

    def input_paths(self, root: Path) -> list[Path]:
        """Where the inputs are: recorded relative to the dataset directory `root` (so a run directory can be
        moved, and a manifest read from anywhere), or absolute; `hf:` names are not paths and are skipped."""
        return [input_path(root, i["path"]) for i in self.inputs if not str(i.get("path", "hf:")).startswith("hf:")]

    @property
    def fingerprint(self) -> str:
        """Identifies this dataset's content, for the fingerprint of whatever reads it."""
        return fingerprint([self.shards[i]["sha256"] for i in sorted(self.shards)])


def input_path(root: Path, recorded: str) -> Path:
    """A path a manifest recorded, resolved from the manifest's directory (never the working directory)."""
    return (Path(root) / recorded).resolve()


def _recorded(inputs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Input entries with their local paths made relative to the dataset directory that records them."""
    out = []
    for entry in inputs:
        path = entry.get("path")
        if isinstance(path, str) and not path.startswith("hf:"):
            entry = {**entry, "path": os.path.relpath(os.path.abspath(path), os.path.abspath(root))}
        out.append(entry)
    return out


def read_manifest(root: Path) -> Manifest | None:
    """The manifest of `root`, or None if there is none or it cannot be trusted."""
    try:
        return Manifest.from_json(json.loads((root / MANIFEST).read_bytes()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).exists()


class DirLock:
    """An exclusive flock on DIR/.lock: the kernel drops it when the holder dies, even by SIGKILL."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{self.path.parent}: another run (pid {holder}) is writing this directory; "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class OpenResult:
    manifest: Manifest
    done: set[int]  # shard indices already finished and verified
    redone: list[str]  # what was found broken and will be redone (for the log)


class DatasetWriter:
    """The writing side of one dataset directory for one stage run.

    `open()` takes the lock, then either starts afresh, resumes (same stage, config and inputs:
    finished shards are verified and kept), or refuses (the directory holds another run's output and
    --overwrite was not given).
    """

    def __init__(
        self,
        root: Path,
        *,
        stage: str,
        record: str | None,
        schema_version: int | None,
        config: dict[str, Any],
        inputs: list[dict[str, Any]],
        overwrite: bool = False,
        verify: bool = True,
    ) -> None:
        self.root = Path(root)
        self.stage = stage
        inputs = _recorded(inputs, self.root)
        self._new = Manifest(
            stage=stage,
            record=record,
            schema_version=schema_version,
            config=config,
            config_fingerprint=fingerprint(config),
            inputs=inputs,
            input_fingerprint=inputs_fingerprint(inputs),
        )
        self.overwrite = overwrite
        self.verify = verify
        self.lock = DirLock(self.root)
        self.manifest: Manifest = self._new

    @classmethod
    def for_record(
        cls,
        root: Path,
        *,
        stage: str,
        record: Any,
        config: dict[str, Any],
        inputs: list[dict[str, Any]],
        overwrite: bool = False,
    ) -> DatasetWriter:
        """A writer for rows of `record` (a `distill.records.Record`, or None for untyped rows)."""
        return cls(
            root,
            stage=stage,
            record=record.name if record is not None else None,
            schema_version=record.version if record is not None else None,
            config=config,
            inputs=inputs,
            overwrite=overwrite,
        )

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def open(self) -> OpenResult:
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: --out must be a directory, but a file is there; choose another --out")
        if self.root.is_dir() and not self.overwrite and not (self.root / MANIFEST).exists():
            stray = [
                p.name
                for p in self.root.iterdir()
                if p.name not in (LOCK, REJECTS, WORK, *_LEGACY_WORK)  # data in flight
                and not _SHARD_FILE.match(p.name)
                and not _TEMP_FILE.match(p.name)
            ]
            if stray:
                raise UserError(
                    f"{self.root}: exists and is not a distill dataset directory (holds {stray[0]!r}); "
                    "choose an empty or new --out"
                )
        self.lock.acquire()
        try:
            return self._open_locked()
        except BaseException:
            self.lock.release()
            raise

    def _open_locked(self) -> OpenResult:
        redone: list[str] = []
        old = read_manifest(self.root)
        if self.overwrite:
            self._clear()
        elif old is None and (self.root / MANIFEST).exists():
            redone.append(f"{MANIFEST} is unreadable (torn by a crash?): starting this stage again")
            self._clear()
        elif old is not None:
            changed = self._differences(old)
            if changed:
                raise UserError(
                    f"{self.root}: holds the output of a different run ({'; '.join(changed)}); "
                    "pass --overwrite to replace it or choose another --out"
                )
            self.manifest = old
        done = self._reconcile(redone)
        if redone:
            self.manifest.complete = False
        if not (self.manifest is old and old.complete and not redone):  # an intact finished stage is left as is
            self._write_manifest()
        return OpenResult(self.manifest, done, redone)

    def _differences(self, old: Manifest) -> list[str]:
        new = self._new
        out = []
        if old.stage != new.stage:
            out.append(f"stage {old.stage!r}, not {new.stage!r}")
        if old.record != new.record or old.schema_version != new.schema_version:
            out.append(f"record {old.record} v{old.schema_version}, not {new.record} v{new.schema_version}")
        if old.config_fingerprint != new.config_fingerprint:
            keys = sorted(k for k in set(old.config) | set(new.config) if old.config.get(k) != new.config.get(k))
            out.append(f"config differs in {', '.join(keys) or 'content'}")
        if old.input_fingerprint != new.input_fingerprint:
            out.append("inputs differ")
        return out

    def _clear(self) -> None:
        for p in self.root.iterdir():
            if p.name == LOCK:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        self.manifest = self._new

    def _reconcile(self, redone: list[str]) -> set[int]:
        """Keep the shards the manifest vouches for; delete everything else a crash may have left."""
        done: set[int] = set()
        for idx, entry in sorted(self.manifest.shards.items()):
            problem = self._check_entry(entry)
            if problem:
                redone.append(f"{entry['file']}: {problem}: redoing it")
                del self.manifest.shards[idx]
            else:
                done.add(idx)
        keep = {f["file"] for i in done for f in shard_files(self.manifest.shards[i])}
        for folder in (self.root, *(self.root / f for f in SIDES.values())):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                rel = p.relative_to(self.root).as_posix()
                # temporaries of an interrupted write, and shards the manifest does not vouch for
                if p.is_file() and (_TEMP_FILE.match(p.name) or (_SHARD_FILE.match(p.name) and rel not in keep)):
                    p.unlink()
        return done

    def _check_entry(self, entry: dict[str, Any]) -> str | None:
        """Why a shard the manifest lists cannot be kept, or None.

        Resuming a stage cut short hashes every finished shard (a crash may have left anything);
        a stage that completed is only checked for presence and size, so that skipping it does not
        read the whole dataset on every run (`distill inspect --verify` hashes it on demand).
        """
        return check_shard(self.root, entry, hash_files=self.verify and not self.manifest.complete)

    def _write_manifest(self) -> None:
        self.manifest.updated_at = _now()
        blob = json.dumps(self.manifest.to_json(), indent=1, ensure_ascii=False).encode()
        atomic_write_bytes(self.root / MANIFEST, blob)

    def set_plan(self, planned_shards: int) -> None:
        self.manifest.planned_shards = planned_shards

    def shard(self, index: int, schema: pa.Schema | None = None) -> ShardWriter:
        return ShardWriter(self.root, index, schema)

    def record_shard(self, entry: dict[str, Any]) -> None:
        """Record a committed shard; from now on a rerun keeps it."""
        self.manifest.shards[int(entry["index"])] = entry
        self._write_manifest()

    def reopen_shard(self, index: int) -> None:
        """Take a finished shard out of the manifest to redo it; the caller saved whatever it keeps first."""
        entry = self.manifest.shards.pop(index)
        self.manifest.complete = False
        self._write_manifest()
        for f in shard_files(entry):
            (self.root / f["file"]).unlink(missing_ok=True)

    def finish(self, stats: dict[str, Any] | None = None) -> Manifest:
        self.manifest.complete = True
        self.manifest.stats = {**totals(self.manifest), **(stats or {})}
        self._write_manifest()
        return self.manifest


@dataclass
class StageResult:
    manifest: Manifest
    skipped: bool  # the output was already complete with the same fingerprints
    seconds: float
    redone: list[str]  # what was found broken and redone (for the log)


class StageOutput:
    """The one path by which every stage writes its dataset directory: lock, open (start, resume or
    refuse), skip when complete, finish with the stats and the time taken, remove `DIR/.work/`.

        with StageOutput(out, stage="select", record=VERDICT, config=..., inputs=...) as o:
            if o.complete:
                return o.skipped()
            ...  # o.writer.set_plan / record_shard for the shards not in o.opened.done
            return o.finish({"select": stats})
    """

    def __init__(self, root: Path, *, stage: str, record: Any, config: dict[str, Any],
                 inputs: list[dict[str, Any]], overwrite: bool = False) -> None:  # fmt: skip
        self.started = time.perf_counter()
        self.root = Path(root)
        self.writer = DatasetWriter.for_record(
            self.root, stage=stage, record=record, config=config, inputs=inputs, overwrite=overwrite
        )

    def __enter__(self) -> StageOutput:
        self.opened = self.writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.__exit__(*exc)

    @property
    def complete(self) -> bool:
        return self.opened.manifest.complete

    def _result(self, manifest: Manifest, skipped: bool) -> StageResult:
        shutil.rmtree(self.root / WORK, ignore_errors=True)  # nothing is in flight in a complete directory
        return StageResult(manifest, skipped, time.perf_counter() - self.started, self.opened.redone)

    def skipped(self) -> StageResult:
        return self._result(self.opened.manifest, True)

    def finish(self, stats: dict[str, Any], seconds: float | None = None) -> StageResult:
        """Complete the directory; `seconds`: the stage's time when it is not this run's (a merge of parts)."""
        seconds = round(time.perf_counter() - self.started if seconds is None else seconds, 3)
        return self._result(self.writer.finish({**stats, "seconds": seconds}), False)


def shard_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The data file of a shard entry and its side files, each with `file`, `bytes` and `sha256`."""
    return [entry] + [entry[side] for side in SIDES if side in entry]


def check_shard(root: Path, entry: dict[str, Any], *, hash_files: bool = True) -> str | None:
    """What is wrong with a shard's files on disk against its manifest entry, or None."""
    for f in shard_files(entry):
        path = root / f["file"]
        if not path.exists():
            return f"{f['file']} is missing"
        size = path.stat().st_size
        if size != f["bytes"]:
            return f"{f['file']} has {size} bytes, the manifest says {f['bytes']}"
        if hash_files and sha256_file(path) != f["sha256"]:
            return f"{f['file']} does not match its checksum"
    return None


def totals(manifest: Manifest) -> dict[str, Any]:
    """Rows in / out / rejected (by code) over all shards: correct across any number of resumes."""
    rows_in = sum(s.get("rows_in", 0) for s in manifest.shards.values())
    codes: Counter[str] = Counter()
    for s in manifest.shards.values():
        codes.update(s.get("rejects", {}).get("codes", {}))
    return {
        "rows_in": rows_in,
        "rows_out": manifest.rows,
        "rejected": sum(codes.values()),
        # by count, then name: the same order whichever shard finished first
        "rejects_by_code": dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


# --- reading ----------------------------------------------------------------------------------------


class DatasetReader:
    """Streams a finished dataset directory shard by shard, row group by row group.

    Memory stays at about one row group (ROW_GROUP_BYTES) whatever the size of the dataset.
    """

    def __init__(self, root: Path, *, allow_partial: bool = False) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            what = "unreadable" if (self.root / MANIFEST).exists() else "missing"
            raise UserError(f"{self.root}: {MANIFEST} is {what}; is this the --out of a distill stage?")
        if not manifest.complete and not allow_partial:
            raise UserError(
                f"{self.root}: stage {manifest.stage!r} has not finished ({len(manifest.shards)} of "
                f"{manifest.planned_shards or '?'} shards); rerun it to finish, then use its output"
            )
        self.manifest = manifest

    @property
    def files(self) -> list[Path]:
        """The shards that hold rows, in order (a shard whose rows were all rejected may have no columns)."""
        return [
            self.root / self.manifest.shards[i]["file"]
            for i in sorted(self.manifest.shards)
            if self.manifest.shards[i]["rows"]
        ]

    @property
    def num_rows(self) -> int:
        return self.manifest.rows

    @property
    def schema(self) -> pa.Schema:
        files = self.files
        return pq.read_schema(files[0]) if files else pa.schema([])

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
        for path in self.files:
            pf = pq.ParquetFile(path, memory_map=False)
            try:
                yield from pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=True)
            finally:
                pf.close()

    def iter_side(self, side: str, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
        """The rows set aside (`rejects`, `removed`), shard by shard."""
        for i in sorted(self.manifest.shards):
            entry = self.manifest.shards[i].get(side)
            if entry:
                with pq.ParquetFile(self.root / entry["file"]) as pf:
                    yield from pf.iter_batches(batch_size=batch_size)

    def verify(self) -> list[str]:
        """Every problem found by checking each shard against the manifest (size and SHA-256)."""
        problems = (check_shard(self.root, self.manifest.shards[i]) for i in sorted(self.manifest.shards))
        return [p for p in problems if p]
