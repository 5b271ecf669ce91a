"""Every stage reads every input format the README promises, through one reader layer (`distill.sources.inputs`):
JSON lines, one Parquet file, a dataset directory, a plain folder of Parquet files (a downloaded Hub
dataset), with the same rows out whichever it is."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, read_rows, run_cli, write_jsonl

STEPS = "First, note what is given.\n\nThen we combine the two facts and simplify carefully.\n\nSo we are done."


def _traces() -> list[dict]:
    rows = []
    for p in range(6):
        for s in range(3):
            right = (p + s) % 3 != 0
            rows.append({"id": f"p{p}", "source": "t", "domain": "math", "problem": f"What is {p} + 1?",
                         "answer": str(p + 1), "language": "en", "sample": s, "reasoning": f"{STEPS} ({s})",
                         "content": f"So it is \\boxed{{{p + 1 if right else p + 2}}}.", "finish_reason": "stop",
                         "completion_tokens": 40})  # fmt: skip
    return rows


def _as_every_format(rows: list[dict], root: Path, record: str) -> dict[str, Path]:
    """The same rows as a JSONL file, a Parquet file, a dataset directory and a plain folder of Parquet."""
    from distill.records import RECORDS
    from distill.store import DatasetWriter

    root.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, root / "rows.parquet")
    (root / "folder").mkdir()
    half = len(rows) // 2
    pq.write_table(table.slice(0, half), root / "folder" / "part-0.parquet")
    pq.write_table(table.slice(half), root / "folder" / "part-1.parquet")
    with DatasetWriter.for_record(root / "dataset", stage="test", record=RECORDS[record], config={},
                                  inputs=[]) as ds:  # fmt: skip
        ds.open()
        ds.set_plan(1)
        shard = ds.shard(0, None)
        shard.write(table)
        ds.record_shard(shard.commit(rows_in=len(rows), input={"file": 0, "start": 0, "stop": len(rows)}))
        ds.finish({})
    return {
        "jsonl": write_jsonl(root / "rows.jsonl", rows),
        "parquet": root / "rows.parquet",
        "dataset": root / "dataset",
        "folder": root / "folder",
    }


def _key(rows: list[dict], *cols: str) -> list[tuple]:
    return sorted(tuple(r[c] for c in cols) for r in rows)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """filter, then select, then mix, each fed every format of its input."""
    tmp = tmp_path_factory.mktemp("readers")
    out: dict[str, dict[str, Path]] = {"filter": {}, "select": {}, "mix": {}}
    for fmt, path in _as_every_format(_traces(), tmp / "traces", "trace").items():
        r = run_cli("filter", "--input", str(path), "--preset", str(REPO / "filters/r1.yaml"),
                    "--out", str(tmp / f"verdicts-{fmt}"), "--no-progress")  # fmt: skip
        assert r.returncode == 0, f"{fmt}: {r.stderr}"
        out["filter"][fmt] = tmp / f"verdicts-{fmt}"
    verdicts = read_rows(out["filter"]["jsonl"])
    for fmt, path in _as_every_format(verdicts, tmp / "verdict-inputs", "verdict").items():
        r = run_cli("select", "--input", str(path), "--out", str(tmp / f"kept-{fmt}"), "--per-prompt", "1",
                    "--no-progress")  # fmt: skip
        assert r.returncode == 0, f"{fmt}: {r.stderr}"
        out["select"][fmt] = tmp / f"kept-{fmt}"
    kept = read_rows(out["select"]["jsonl"])
    for fmt, path in _as_every_format(kept, tmp / "kept-inputs", "verdict").items():
        cfg = tmp / f"mix-{fmt}.yaml"
        cfg.write_text(f"seed: 0\nsources:\n  - {{name: reasoning, path: {path}, quota: 100}}\n")
        r = run_cli("mix", "--config", str(cfg), "--out", str(tmp / f"sft-{fmt}"), "--no-progress")
        assert r.returncode == 0, f"{fmt}: {r.stderr}"
        out["mix"][fmt] = tmp / f"sft-{fmt}"
    return out


def test_filter_reads_every_format_to_the_same_verdicts(chain: dict) -> None:
    found = {fmt: _key(read_rows(p), "id", "sample", "keep", "reject_reason") for fmt, p in chain["filter"].items()}
    assert len(found["jsonl"]) == 18 and sum(k[2] for k in found["jsonl"]) == 12
    assert found["parquet"] == found["jsonl"] == found["dataset"] == found["folder"]


def test_select_reads_every_format_to_the_same_choice(chain: dict) -> None:
    found = {fmt: _key(read_rows(p), "id", "sample") for fmt, p in chain["select"].items()}
    assert len(found["jsonl"]) == 6  # one kept trace for each of the 6 prompts
    assert found["parquet"] == found["jsonl"] == found["dataset"] == found["folder"]


def test_mix_reads_every_format_to_the_same_sft_rows(chain: dict) -> None:
    found = {fmt: _key(read_rows(p), "id", "num_tokens") for fmt, p in chain["mix"].items()}
    assert len(found["jsonl"]) == 6
    assert found["parquet"] == found["jsonl"] == found["dataset"] == found["folder"]


def test_select_names_a_bad_row_instead_of_an_arrow_traceback(tmp_path: Path) -> None:
    good = {"id": "p", "problem": "1 + 1?", "sample": 0, "content": "2", "keep": True}
    path = write_jsonl(tmp_path / "v.jsonl", ["{not json", good])
    r = run_cli("select", "--input", str(path), "--out", str(tmp_path / "o"), "--per-prompt", "1", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rejects = json.loads((tmp_path / "o" / "_manifest.json").read_text())["stats"]
    assert rejects["rejected"] == 1 and len(read_rows(tmp_path / "o")) == 1


def test_train_reads_a_plain_folder_of_parquet_files(tmp_path: Path, chain: dict) -> None:
    sft = read_rows(chain["mix"]["jsonl"])
    folder = tmp_path / "downloaded"
    folder.mkdir()
    table = pa.Table.from_pylist([{"messages": r["messages"]} for r in sft])  # no id column: computed
    pq.write_table(table.slice(0, 3), folder / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(3), folder / "train-00001-of-00002.parquet")
    r = run_cli("train", str(REPO / "students/tiny.yaml"), "--data", str(folder), "--out", str(tmp_path / "s"),
                "--max-steps", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "s" / "distill_train.json").read_text())["global_step"] == 2
    # a line per log, not the Trainer's raw dicts (those only with --verbose)
    assert "done: 2 steps in" in r.stderr and "{'train_runtime'" not in r.stderr, r.stderr
