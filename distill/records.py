"""Versioned Arrow schemas of the records that flow between stages, and their validation.

Four records (DESIGN.md, "Records"): a *prompt*, a *trace* (a prompt plus one teacher sample), a
*verdict* (a trace plus the filter's checks) and an *sft* row (chat messages). Each record is an Arrow
schema with a version stored in the schema metadata, so a dataset directory says what it holds.

Two ways rows come in, and each is checked where it is cheapest:
- Arrow tables (Parquet, dataset directories): `conform_table` checks columns and types once per
  file (a missing or ill-typed column is the file's fault: `UserError`), then splits off rows with nulls
  in required columns (the row's fault: they become rejects).
- Python dicts (JSON lines): `coerce_row` checks one row and raises `RowError` naming the column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from distill.config import DOMAINS
from distill.errors import RowError, UserError
from distill.normalize import normalize

MESSAGE = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.large_string())])


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = False  # must be present (non-null) in every input row
    default: Callable[[Mapping[str, Any], str], Any] | None = None  # (row, source name) -> value
    doc: str = ""

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=not self.required)


@dataclass(frozen=True)
class Record:
    name: str
    version: int
    columns: tuple[Column, ...]
    # Unknown JSON keys are folded into this JSON column rather than dropped, when the record has one.
    extras_column: str | None = None
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(c.name for c in self.columns))

    @property
    def schema(self) -> pa.Schema:
        meta = {b"distill.record": self.name.encode(), b"distill.schema_version": str(self.version).encode()}
        return pa.schema([c.field for c in self.columns], metadata=meta)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def stable_id(text: str) -> str:
    """A prompt's `id`: 16 hex digits of the SHA-256 of its matching form (`distill.normalize`)."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:16]


def _id_default(row: Mapping[str, Any], _source: str) -> str | None:
    problem = row.get("problem")
    return stable_id(problem) if isinstance(problem, str) else None


def _source_default(_row: Mapping[str, Any], source: str) -> str:
    return source


PROMPT_COLUMNS = (
    Column("id", pa.string(), required=True, default=_id_default, doc="stable hash of the normalized problem"),
    Column("source", pa.string(), required=True, default=_source_default, doc="where the row came from"),
    Column("domain", pa.string(), required=True, default=lambda r, s: "general", doc="|".join(DOMAINS)),
    Column("problem", pa.large_string(), required=True),
    Column("answer", pa.large_string(), doc="ground truth, when known"),
    Column("tests", pa.large_string(), doc="JSON test cases for code"),
    Column("language", pa.string(), doc="ISO 639-1 code of the prompt's language"),
    Column("meta", pa.large_string(), doc="JSON object of everything else"),
)
TRACE_COLUMNS = (
    *PROMPT_COLUMNS,
    Column("sample", pa.int32(), required=True, doc="index of the teacher sample for this prompt"),
    Column("reasoning", pa.large_string(), doc="inside <think>"),
    Column("content", pa.large_string(), required=True, doc="after </think>"),
    Column("finish_reason", pa.string()),
    Column("prompt_tokens", pa.int64()),
    Column("completion_tokens", pa.int64()),
    Column("teacher", pa.string()),
    Column("params", pa.string(), doc="JSON of the sampling parameters"),
    Column("latency_s", pa.float64(), doc="seconds the teacher took for this sample"),
    Column("prompt", pa.large_string(), doc="the user turn exactly as the teacher got it (problem + instruction)"),
    # A public trace set's own verdict on the trace (its `correct`, `correctness_math_verify`, `deepseek_grade`, ...),
    # kept beside ours so the two can be compared; null for traces this project generated.
    Column("publisher_correct", pa.bool_(), doc="the publisher's own label: was the trace correct?"),
    Column("publisher_label", pa.string(), doc="the column(s) that label came from"),
)
VERDICT_COLUMNS = (
    *TRACE_COLUMNS,
    Column("correct", pa.bool_()),
    Column("readable", pa.bool_()),
    Column("language_ok", pa.bool_()),
    Column("sandbox", pa.string(), doc="code rows whose tests ran: the isolation they ran in"),
    Column("keep", pa.bool_(), required=True),
    Column("reject_reason", pa.string(), doc="null when kept"),
)


def _messages_id(row: Mapping[str, Any], _source: str) -> str | None:
    """An SFT row without an id gets the hash of its conversation (an id is what resume and dedup key on)."""
    messages = row.get("messages")
    if messages is None:
        return None
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


SFT_COLUMNS = (
    Column("id", pa.string(), required=True, default=_messages_id, doc="computed from the messages when absent"),
    Column("source", pa.string(), required=True, default=_source_default),
    Column("domain", pa.string(), required=True, default=lambda r, s: "general"),
    Column("messages", pa.list_(MESSAGE), required=True),
    Column("num_tokens", pa.int64()),
)

RECORDS: dict[str, Record] = {
    "prompt": Record("prompt", 1, PROMPT_COLUMNS, extras_column="meta"),
    "trace": Record("trace", 1, TRACE_COLUMNS, extras_column="meta"),
    "verdict": Record("verdict", 1, VERDICT_COLUMNS, extras_column="meta"),
    "sft": Record("sft", 1, SFT_COLUMNS),
}


def get_record(name: str) -> Record:
    try:
        return RECORDS[name]
    except KeyError:
        raise UserError(f"unknown record type {name!r}; use one of {', '.join(RECORDS)}") from None


# --- rows from JSON ---------------------------------------------------------------------------------

_JSON_TEXT_COLUMNS = {"tests", "meta", "params"}  # may arrive as JSON objects; stored as JSON text


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _coerce_value(col: Column, value: Any) -> Any:
    t = col.type
    if value is None:
        return None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if isinstance(value, str):
            return value
        if col.name in _JSON_TEXT_COLUMNS and isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        # A numeric ground truth (`"answer": 42`) is common in JSON files and means the string "42".
        if col.name == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise RowError("wrong_type", f"column '{col.name}' must be a string, got {_type_name(value)}")
    if pa.types.is_integer(t):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RowError("wrong_type", f"column '{col.name}' must be an integer, got {_type_name(value)}")
    if pa.types.is_boolean(t):
        if isinstance(value, bool):
            return value
        raise RowError("wrong_type", f"column '{col.name}' must be true or false, got {_type_name(value)}")
    if pa.types.is_floating(t):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise RowError("wrong_type", f"column '{col.name}' must be a number, got {_type_name(value)}")
    if col.name == "messages":
        return _coerce_messages(value)
    raise AssertionError(f"no JSON coercion for column type {t}")  # a bug in a record definition


def _coerce_messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise RowError("wrong_type", f"column 'messages' must be an array, got {_type_name(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise RowError("wrong_type", f"messages[{i}] must be an object with string 'role' and 'content'")
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def coerce_row(obj: Any, record: Record, source: str) -> dict[str, Any]:
    """One JSON value -> a row of `record`, or `RowError` naming what is wrong."""
    if not isinstance(obj, dict):
        raise RowError("not_an_object", f"a row must be a JSON object, got {_type_name(obj)}")
    row = {col.name: _coerce_value(col, obj.get(col.name)) for col in record.columns}
    # Columns with defaults last: `id` is derived from `problem`, so a missing `problem` is named as such.
    for col in sorted(record.columns, key=lambda c: c.default is not None):
        if row[col.name] is None and col.default is not None:
            row[col.name] = col.default(row, source)
        if row[col.name] is None and col.required:
            raise RowError("missing_field", f"column '{col.name}' is missing or null")
    if col_domain := row.get("domain"):
        _check_domain(col_domain)
    extras = {k: v for k, v in obj.items() if k not in record.names}
    if extras and record.extras_column:
        merged = json.loads(row[record.extras_column]) if row.get(record.extras_column) else {}
        if not isinstance(merged, dict):
            raise RowError("wrong_type", f"column '{record.extras_column}' must be a JSON object")
        merged.update(extras)
        row[record.extras_column] = json.dumps(merged, ensure_ascii=False, sort_keys=True)
    return row


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise RowError("bad_value", f"column 'domain' is {domain!r}; use one of {', '.join(DOMAINS)}")


# --- Arrow tables -----------------------------------------------------------------------------------


def conform_table(table: pa.Table, record: Record, where: str, source: str) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Cast `table` to `record`'s schema (extra columns kept after it).

    Returns the conforming rows and, for rows that break a row-level rule (a null in a required
    column, an unknown domain), their positions in `table` with the error. A missing required column
    or a type that cannot be cast is the whole file's fault and raises `UserError` naming it.
    """
    n = table.num_rows
    columns: list[pa.Array | pa.ChunkedArray] = []
    bad = pa.array([False] * n, pa.bool_()) if n else pa.array([], pa.bool_())
    errors: dict[int, str] = {}
    derived_errors: dict[int, str] = {}
    for col in record.columns:
        if col.name in table.column_names:
            arr = table.column(col.name)
            if arr.type != col.type:
                try:
                    arr = arr.cast(col.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise UserError(
                        f"{where}: column '{col.name}' has type {arr.type}, expected {col.type}; "
                        f"convert the column or rename it"
                    ) from None
        elif col.default is not None:
            arr = pa.array(_defaults(col, table, source), col.type)
        elif col.required:
            raise UserError(
                f"{where}: required column '{col.name}' is missing (columns: {', '.join(table.column_names)})"
                "; add it or rename the matching column"
            )
        else:
            arr = pa.nulls(n, col.type)
        if col.required and arr.null_count:
            nulls = pc.is_null(arr)
            found = derived_errors if col.default is not None else errors
            for i in _true_positions(nulls):
                found.setdefault(i, f"missing_field: column '{col.name}' is null")
            bad = pc.or_(bad, nulls)
        columns.append(arr)
    # A derived column (`id`) is null because a row's own column (`problem`) is: name that one.
    errors = {**derived_errors, **errors}
    if "domain" in record.names and n:
        domain = columns[[c.name for c in record.columns].index("domain")]
        unknown = pc.invert(pc.fill_null(pc.is_in(domain, value_set=pa.array(DOMAINS)), True))
        for i in _true_positions(unknown):
            errors.setdefault(
                i, f"bad_value: column 'domain' is {domain[i].as_py()!r}; use one of {', '.join(DOMAINS)}"
            )
        bad = pc.or_(bad, unknown)
    names = [c.name for c in record.columns]
    fields = [c.field.with_nullable(True) for c in record.columns]  # nullability is enforced above
    for name in table.column_names:
        if name not in record.names:
            names.append(name)
            columns.append(table.column(name))
            fields.append(table.schema.field(name))
    out = pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=record.schema.metadata))
    if errors:
        out = out.filter(pc.invert(bad))
    return out, sorted(errors.items())


_DEFAULT_INPUTS = ("problem", "messages")  # the columns that defaults are computed from (ids)


def _defaults(col: Column, table: pa.Table, source: str) -> list[Any]:
    assert col.default is not None
    given = {c: table.column(c).to_pylist() for c in _DEFAULT_INPUTS if c in table.column_names}
    return [col.default({c: v[i] for c, v in given.items()}, source) for i in range(table.num_rows)]


def _true_positions(mask: pa.Array | pa.ChunkedArray) -> Iterable[int]:
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def output_schema(record: Record, extra: pa.Schema | None = None) -> pa.Schema:
    """The schema a stage writes: the record's columns, then whatever extra columns it adds."""
    fields = [c.field.with_nullable(True) for c in record.columns]
    if extra is not None:
        fields += [f for f in extra if f.name not in record.names]
    return pa.schema(fields, metadata=record.schema.metadata)
