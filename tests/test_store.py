"""Dataset directories: manifest, resume rules, lock, streaming reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from distill.errors import UserError
from distill.records import RECORDS
from distill.store import MANIFEST, WORK, DatasetReader, DatasetWriter, StageOutput, fingerprint


def _writer(root: Path, config: dict | None = None, inputs: list | None = None, **kw) -> DatasetWriter:
    return DatasetWriter(
        root,
        stage="s",
        record="prompt",
        schema_version=1,
        config=config or {"a": 1},
        inputs=inputs or [{"path": "x", "fingerprint": "f"}],
        **kw,
    )


def _table(n: int, start: int = 0) -> pa.Table:
    rows = [{"id": str(i), "source": "t", "domain": "math", "problem": f"p{i}"} for i in range(start, start + n)]
    return pa.Table.from_pylist(rows, schema=RECORDS["prompt"].schema)


def _write_shards(ds: DatasetWriter, k: int, rows: int = 10) -> None:
    for i in range(k):
        sh = ds.shard(i, RECORDS["prompt"].schema)
        sh.write(_table(rows, i * rows))
        ds.record_shard(sh.commit(rows_in=rows))


def test_manifest_records_shards_and_reader_streams_them_in_order(tmp_path: Path) -> None:
    with _writer(tmp_path / "d") as ds:
        ds.open()
        _write_shards(ds, 3)
        m = ds.finish()
    assert m.complete and m.rows == 30
    on_disk = json.loads((tmp_path / "d" / MANIFEST).read_text())
    assert on_disk["schema_version"] == 1 and on_disk["record"] == "prompt"
    assert [s["rows"] for s in on_disk["shards"]] == [10, 10, 10]
    assert all(len(s["sha256"]) == 64 for s in on_disk["shards"])
    reader = DatasetReader(tmp_path / "d")
    ids = [i for b in reader.iter_batches(columns=["id"], batch_size=7) for i in b.column(0).to_pylist()]
    assert ids == [str(i) for i in range(30)]
    assert reader.schema.metadata[b"distill.record"] == b"prompt"
    assert reader.verify() == []


def test_stage_output_resumes_skips_when_complete_and_removes_the_work_folder(tmp_path: Path) -> None:
    """The one writing path of every stage: a cut-short run resumes its shards, a finished one is
    skipped, its work folder is gone, another config is refused without --overwrite."""
    root, kw = tmp_path / "d", {"stage": "s", "record": RECORDS["prompt"], "inputs": []}

    def run(config: dict, crash_after: int | None = None, overwrite: bool = False) -> tuple[object, set[int]]:
        with StageOutput(root, config=config, overwrite=overwrite, **kw) as o:
            if o.complete:
                return o.skipped(), set(o.opened.done)
            resumed = set(o.opened.done)
            (root / WORK).mkdir(exist_ok=True)
            (root / WORK / "state").write_text("in flight")
            o.writer.set_plan(3)
            for i in range(3):
                if i in o.opened.done:
                    continue
                if i == crash_after:
                    return None, resumed
                sh = o.writer.shard(i, RECORDS["prompt"].schema)
                sh.write(_table(10, i * 10))
                o.writer.record_shard(sh.commit(rows_in=10))
            return o.finish({"note": 1}), resumed

    assert run({"a": 1}, crash_after=2) == (None, set())
    assert (root / WORK / "state").exists()  # a cut-short run keeps what is in flight
    result, resumed = run({"a": 1})
    assert resumed == {0, 1} and not result.skipped and result.manifest.rows == 30
    assert result.manifest.stats["note"] == 1 and result.manifest.stats["seconds"] >= 0
    assert not (root / WORK).exists()
    again, _ = run({"a": 1})
    assert again.skipped and again.manifest.rows == 30
    with pytest.raises(UserError, match="overwrite"):
        run({"a": 2})
    assert run({"a": 2}, overwrite=True)[0].manifest.config == {"a": 2}


def test_resume_keeps_done_shards_and_same_fingerprint_is_required(tmp_path: Path) -> None:
    with _writer(tmp_path / "d") as ds:
        ds.open()
        _write_shards(ds, 2)
    with _writer(tmp_path / "d") as ds:
        assert ds.open().done == {0, 1}
    with (
        pytest.raises(UserError, match=r"config differs in a.*--overwrite"),
        _writer(tmp_path / "d", {"a": 2}) as ds,
    ):
        ds.open()
    other_inputs = [{"path": "x", "fingerprint": "g"}]
    with pytest.raises(UserError, match="inputs differ"), _writer(tmp_path / "d", inputs=other_inputs) as ds:
        ds.open()
    with _writer(tmp_path / "d", {"a": 2}, overwrite=True) as ds:
        assert ds.open().done == set()
    assert not (tmp_path / "d" / "train-00000.parquet").exists()


def test_unfinished_directory_is_refused_as_input(tmp_path: Path) -> None:
    with _writer(tmp_path / "d") as ds:
        ds.open()
        _write_shards(ds, 1)
    with pytest.raises(UserError, match="has not finished"):
        DatasetReader(tmp_path / "d")


def test_refuses_to_write_into_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a distill dataset directory"), _writer(tmp_path / "d") as ds:
        ds.open()
    assert (tmp_path / "d" / "notes.txt").exists()


def test_lock_stops_a_second_writer_and_dies_with_its_holder(tmp_path: Path) -> None:
    root = tmp_path / "d"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from distill.store import DatasetWriter
            ds = DatasetWriter({str(root)!r}, stage="s", record="prompt", schema_version=1,
                               config={{"a": 1}}, inputs=[{{"path": "x", "fingerprint": "f"}}])
            ds.open(); print("locked", flush=True); time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another run \(pid {holder.pid}\)"), _writer(root) as ds:
            ds.open()
    finally:
        holder.kill()
        holder.wait()
    with _writer(root) as ds:
        ds.open()  # the kernel released the dead holder's lock


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_rejects_are_stored_with_their_reason(tmp_path: Path) -> None:
    with _writer(tmp_path / "d") as ds:
        ds.open()
        sh = ds.shard(0, RECORDS["prompt"].schema)
        sh.write(_table(3))
        sh.reject("in.jsonl", 4, "malformed_json: oops", b"{bad")
        ds.record_shard(sh.commit(rows_in=4))
        m = ds.finish()
    assert m.stats["rejects_by_code"] == {"malformed_json": 1}
    [rej] = [r for b in DatasetReader(tmp_path / "d").iter_side("rejects") for r in b.to_pylist()]
    assert rej == {
        "input": "in.jsonl",
        "row": 4,
        "error": "malformed_json: oops",
        "raw": "{bad",
        "raw_bytes": 4,
    }


def test_datasets_load_dataset_reads_the_shards_and_nothing_else(tmp_path: Path) -> None:
    """DESIGN.md promises `datasets.load_dataset("parquet", data_dir=DIR)`: the real loader, offline."""
    import datasets

    with _writer(tmp_path / "d") as ds:
        ds.open()
        _write_shards(ds, 2)
        sh = ds.shard(2, RECORDS["prompt"].schema)
        sh.write(_table(5, 20))
        sh.reject("in.jsonl", 0, "malformed_json: x", "{")  # rejects must not be read as data
        ds.record_shard(sh.commit(rows_in=6))
        ds.finish()
    for loaded in (
        datasets.load_dataset("parquet", data_dir=str(tmp_path / "d"), split="train", cache_dir=str(tmp_path / "c")),
        datasets.load_dataset(str(tmp_path / "d"), split="train", cache_dir=str(tmp_path / "c2")),
    ):
        assert loaded.num_rows == 25
        assert sorted(loaded["id"], key=int) == [str(i) for i in range(25)]
