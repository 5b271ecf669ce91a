from __future__ import annotations

import json

import pyarrow as pa
import pytest

from distill.errors import RowError, UserError
from distill.records import RECORDS, coerce_row, conform_table, stable_id


def test_every_record_is_versioned_and_traces_extend_prompts() -> None:
    for name, rec in RECORDS.items():
        meta = rec.schema.metadata
        assert meta[b"distill.record"] == name.encode() and int(meta[b"distill.schema_version"]) >= 1
    assert RECORDS["prompt"].names < RECORDS["trace"].names < RECORDS["verdict"].names
    assert {"keep", "reject_reason"} <= RECORDS["verdict"].names
    assert RECORDS["sft"].schema.field("messages").type.value_type.names == ["role", "content"]


def test_id_is_a_stable_hash_of_the_normalized_problem() -> None:
    assert stable_id("Compute  1 +\n1.") == stable_id("Compute 1 + 1.")
    assert stable_id("ｘ＝１") == stable_id("x=1")  # NFKC folds full-width forms
    assert stable_id("Compute 1 + 1.") != stable_id("Compute 1 + 2.")
    row = coerce_row({"problem": "Compute 1 + 1."}, RECORDS["prompt"], "src")
    assert row["id"] == stable_id("Compute 1 + 1.") and row["source"] == "src" and row["domain"] == "general"


def test_coerce_row_names_the_column() -> None:
    rec = RECORDS["prompt"]
    with pytest.raises(RowError, match="wrong_type: column 'problem' must be a string, got int"):
        coerce_row({"problem": 3}, rec, "s")
    with pytest.raises(RowError, match="missing_field: column 'problem'"):
        coerce_row({"answer": "3"}, rec, "s")
    with pytest.raises(RowError, match="bad_value: column 'domain'"):
        coerce_row({"problem": "p", "domain": "poetry"}, rec, "s")
    with pytest.raises(RowError, match="not_an_object"):
        coerce_row([1], rec, "s")
    with pytest.raises(RowError, match="column 'sample' must be an integer"):
        coerce_row({"problem": "p", "sample": True, "content": "c"}, RECORDS["trace"], "s")


def test_coerce_row_keeps_everything() -> None:
    row = coerce_row({"problem": "p", "answer": 42, "tests": [{"in": "1"}], "level": 5}, RECORDS["prompt"], "s")
    assert row["answer"] == "42"
    assert json.loads(row["tests"]) == [{"in": "1"}]
    assert json.loads(row["meta"]) == {"level": 5}  # unknown keys are kept, not dropped


def test_conform_table_file_errors_and_row_errors() -> None:
    rec = RECORDS["prompt"]
    with pytest.raises(UserError, match=r"f\.parquet: required column 'problem' is missing"):
        conform_table(pa.table({"q": ["x"]}), rec, "f.parquet", "f")
    with pytest.raises(UserError, match=r"column 'answer' has type list<item: int64>"):
        conform_table(pa.table({"problem": ["x"], "answer": [[1]]}), rec, "f.parquet", "f")
    table, errors = conform_table(
        pa.table({"problem": ["a", None, "c"], "answer": [1, 2, 3], "x": [1, 2, 3]}), rec, "f", "f"
    )
    assert table.column("problem").to_pylist() == ["a", "c"]
    assert table.column("answer").to_pylist() == ["1", "3"]  # int64 -> string cast
    assert table.column("x").to_pylist() == [1, 3]  # extra columns kept
    assert errors == [(1, "missing_field: column 'problem' is null")]
