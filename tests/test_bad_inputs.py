"""Bad input files: one clear line (exit 2), or rows in _rejects/ with the reason; good rows go through."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import prompts, read_rejects, read_rows, run_cli, write_jsonl


def _pipe(tmp: Path, inputs: list[Path], record: str = "prompt") -> Path:
    path = tmp / "pipe.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "t",
                "steps": [
                    {
                        "name": "ingest",
                        "function": "distill.steps:conform",
                        "input": [str(p) for p in inputs],
                        "input_record": record,
                        "output_record": record,
                        "rows_per_shard": 50,
                        "workers": 1,
                    }
                ],
            }
        )
    )
    return path


def _run(tmp: Path, inputs: list[Path], record: str = "prompt"):
    return run_cli("run", str(_pipe(tmp, inputs, record)), "--out", str(tmp / "out"), "--no-progress")


def _one_line_error(r, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    assert not (Path(r.args[-2]) / "ingest" / "train-00000.parquet").exists()  # nothing half-written


def test_empty_jsonl_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    _one_line_error(_run(tmp_path, [empty]), "empty.jsonl", "empty")


def test_parquet_without_rows_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "none.parquet"
    pq.write_table(pa.table({"problem": pa.array([], pa.string())}), p)
    _one_line_error(_run(tmp_path, [p]), "none.parquet", "no rows")


def test_missing_input_and_empty_glob(tmp_path: Path) -> None:
    _one_line_error(_run(tmp_path, [tmp_path / "nope.jsonl"]), "nope.jsonl", "no such file")
    _one_line_error(_run(tmp_path, [tmp_path / "*.parquet"]), "matches no file")


def test_parquet_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    p = tmp_path / "noproblem.parquet"
    pq.write_table(pa.table({"question": ["what?"]}), p)
    _one_line_error(_run(tmp_path, [p]), "noproblem.parquet", "'problem'", "question")


def test_parquet_wrong_type_names_column_and_types(tmp_path: Path) -> None:
    p = tmp_path / "types.jsonl"
    write_jsonl(p, [{"problem": "x", "sample": 0, "content": "a"}])
    q = tmp_path / "types.parquet"
    pq.write_table(pa.table({"problem": ["x"], "content": ["y"], "sample": [[1, 2]]}), q)
    _one_line_error(_run(tmp_path, [q], record="trace"), "types.parquet", "'sample'", "int32")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    p = tmp_path / "fake.parquet"
    p.write_text("hello")
    _one_line_error(_run(tmp_path, [p]), "fake.parquet", "not a readable Parquet file")


def test_bad_rows_land_in_rejects_and_good_rows_go_through(tmp_path: Path) -> None:
    good = prompts(40)
    big = json.dumps({"problem": "x" * (50 << 20)})  # one 50 MB row
    lines: list[object] = [
        *good[:10],
        "{malformed",
        b'{"problem": "caf\xe9"}',  # Latin-1, not UTF-8
        {"problem": 17},
        {"answer": "no problem"},
        {"problem": "ok", "domain": "astrology"},
        [1, 2, 3],
        big,
        "",  # a blank line is not a row
        *good[10:],
    ]
    p = tmp_path / "mixed.jsonl"
    with open(p, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode())
            f.write(b"\n")
    r = _run(tmp_path, [p])
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "out" / "ingest")
    assert [row["problem"] for row in rows] == [g["problem"] for g in good]
    rejects = read_rejects(tmp_path / "out" / "ingest")
    codes = {rej["row"]: rej["error"].split(":")[0] for rej in rejects}
    assert codes == {
        10: "malformed_json",
        11: "not_utf8",
        12: "wrong_type",
        13: "missing_field",
        14: "bad_value",
        15: "not_an_object",
        16: "row_too_large",
    }
    by_row = {rej["row"]: rej for rej in rejects}
    assert "'problem'" in by_row[12]["error"] and "integer" not in by_row[12]["error"]
    assert by_row[16]["raw_bytes"] > 50 << 20 and len(by_row[16]["raw"]) <= 1 << 20  # kept, bounded
    assert "6 rejected" not in r.stderr and "7 rejected" in r.stderr


def test_last_line_without_newline_and_crlf_are_rows(tmp_path: Path) -> None:
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(b'{"problem": "a"}\r\n{"problem": "b"}\r\n{"problem": "c"}')
    assert _run(tmp_path, [p]).returncode == 0
    assert [r["problem"] for r in read_rows(tmp_path / "out" / "ingest")] == ["a", "b", "c"]


def test_parquet_null_in_required_column_is_a_reject_with_its_row(tmp_path: Path) -> None:
    p = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"problem": ["a", None, "c"], "domain": ["math", "math", "chess"]}), p)
    assert _run(tmp_path, [p]).returncode == 0
    assert [r["problem"] for r in read_rows(tmp_path / "out" / "ingest")] == ["a"]
    rejects = {r["row"]: r["error"] for r in read_rejects(tmp_path / "out" / "ingest")}
    assert rejects[1].startswith("missing_field") and rejects[2].startswith("bad_value")


@pytest.mark.parametrize("record", ["trace", "sft"])
def test_other_records_validate_their_own_columns(tmp_path: Path, record: str) -> None:
    p = tmp_path / "rows.jsonl"
    if record == "trace":
        write_jsonl(
            p,
            [
                {"problem": "p", "sample": 0, "content": "c"},
                {"problem": "p", "sample": "zero", "content": "c"},
            ],
        )
    else:
        write_jsonl(p, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}, {"id": "b", "messages": "hi"}])
    assert _run(tmp_path, [p], record).returncode == 0
    assert len(read_rows(tmp_path / "out" / "ingest")) == 1
    [rej] = read_rejects(tmp_path / "out" / "ingest")
    assert rej["row"] == 1 and rej["error"].startswith("wrong_type")


def test_csv_whose_types_change_after_the_first_block_and_a_broken_csv(tmp_path: Path) -> None:
    p = tmp_path / "big.csv"
    with open(p, "w") as f:
        f.write("problem,answer\n")
        for i in range(30_000):  # several reader blocks of numbers, then text: read as text throughout
            f.write(f"problem {i},{i}\n")
        f.write('last problem,"x/2"\n')
    assert _run(tmp_path, [p]).returncode == 0
    rows = read_rows(tmp_path / "out" / "ingest")
    assert len(rows) == 30_001 and rows[-1]["answer"] == "x/2"
    bad = tmp_path / "bad.csv"
    bad.write_text("problem,answer\n" + "".join(f"p{i},{i}\n" for i in range(30_000)) + "p,1,extra,fields\n")
    (tmp_path / "b").mkdir()
    _one_line_error(_run(tmp_path / "b", [bad]), "bad.csv")
