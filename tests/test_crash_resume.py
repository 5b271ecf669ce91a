"""A stage killed by SIGKILL at any point, then run again, ends with exactly the rows of a clean run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.store import DatasetReader
from tests.conftest import REPO, prompts, read_rejects, read_rows, run_cli, write_jsonl

N_ROWS = 600
ROWS_PER_SHARD = 40  # 15 shards: enough commit steps for kills to land between them


def _pipeline(tmp: Path, stage_fns: Path, inp: Path, delay: float, workers: int) -> Path:
    path = tmp / "pipe.yaml"
    path.write_text(
        f"""
name: crash
steps:
  - name: shout
    function: {stage_fns}:shout
    input: {inp}
    input_record: prompt
    output_record: prompt
    rows_per_shard: {ROWS_PER_SHARD}
    batch_size: 20
    workers: {workers}
    options: {{delay: {delay}}}
"""
    )
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows: list[object] = prompts(N_ROWS)
    rows[7] = "{not json"  # rejects must survive crashes exactly once, too
    rows[300] = {"problem": None}
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _clean_run(tmp_path: Path, stage_fns: Path, data: Path) -> tuple[list[dict], list[dict]]:
    out = tmp_path / "clean"
    r = run_cli("run", str(_pipeline(tmp_path, stage_fns, data, 0.0, 1)), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    return read_rows(out / "shout"), read_rejects(out / "shout")


def _assert_same_as_clean(out: Path, clean: list[dict], clean_rejects: list[dict]) -> None:
    rows = read_rows(out)
    assert len(rows) == len(clean)
    assert rows == clean  # same rows, same order: none lost, none duplicated
    assert len({r["id"] for r in rows}) == len(rows)
    assert read_rejects(out) == clean_rejects
    assert DatasetReader(out).verify() == []  # every shard matches the manifest's size and SHA-256


# Each step of the commit protocol (store.py), at an early and a later shard.
CRASH_POINTS = [
    "file_written:1",  # rejects file of shard 0 written, not renamed
    "file_renamed:1",  # rejects file renamed, data shard not yet written
    "file_written:2",  # data shard fsynced under its temporary name, not renamed
    "file_renamed:2",  # data shard renamed, manifest does not list it yet
    "manifest_written:3",  # new manifest written to its temporary name, not renamed
    "manifest_renamed:3",  # manifest renamed: the shard is done
    "file_renamed:9",
    "manifest_written:8",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_commit_step_then_rerun_matches_clean_run(
    tmp_path: Path, stage_fns: Path, data: Path, point: str
) -> None:
    clean, clean_rejects = _clean_run(tmp_path, stage_fns, data)
    pipe = _pipeline(tmp_path, stage_fns, data, 0.0, 1)
    out = tmp_path / "run"
    r = run_cli("run", str(pipe), "--out", str(out), "--no-progress", env={"DISTILL_CRASH_AT": point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    manifest = json.loads((out / "shout" / "_manifest.json").read_text())
    assert not manifest["complete"]
    r = run_cli("run", str(pipe), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    _assert_same_as_clean(out / "shout", clean, clean_rejects)


def test_sigkill_at_random_times_with_two_workers(tmp_path: Path, stage_fns: Path, data: Path) -> None:
    """Five kills at seeded random moments of a parallel run, each followed by a resume."""
    clean, clean_rejects = _clean_run(tmp_path, stage_fns, data)
    pipe = _pipeline(tmp_path, stage_fns, data, 0.3, 2)  # ~4.5 s of work on 2 workers
    out = tmp_path / "run"
    rng = random.Random(1234)
    cmd = [sys.executable, "-m", "distill.cli", "run", str(pipe), "--out", str(out), "--no-progress"]
    kills = 0
    manifest_path = out / "shout" / "_manifest.json"
    for _ in range(12):
        before = manifest_path.stat().st_mtime_ns if manifest_path.exists() else None
        # start_new_session: the kill takes the forkserver and its workers down with the parent
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        # Kill mid-work: once this run has opened the stage (it rewrites the manifest), whatever the
        # interpreter's start-up took on this machine.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest_path.exists() and manifest_path.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 1.2))
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        if kills == 5:
            break
    assert kills >= 5, "the stage finished before it could be killed five times; slow it down"
    manifest = json.loads((out / "shout" / "_manifest.json").read_text())
    assert not manifest["complete"]
    r = run_cli("run", str(pipe), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    _assert_same_as_clean(out / "shout", clean, clean_rejects)


def _truncate_shard(d: Path) -> str:
    shard = d / "train-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])  # a torn write the manifest does not vouch for
    return "train-00001.parquet has"


def _flip_a_byte(d: Path) -> str:
    shard = d / "train-00002.parquet"
    blob = bytearray(shard.read_bytes())
    blob[100] ^= 0xFF  # same size, other content: only the checksum can tell
    shard.write_bytes(bytes(blob))
    return "train-00002.parquet does not match its checksum"


def _tear_manifest(d: Path) -> str:
    manifest = d / "_manifest.json"
    blob = manifest.read_bytes()
    manifest.write_bytes(blob[: len(blob) // 2])
    return "_manifest.json is unreadable"


@pytest.mark.parametrize("damage", [_truncate_shard, _flip_a_byte, _tear_manifest])
def test_damage_found_on_restart_is_redone_not_trusted(tmp_path: Path, stage_fns: Path, data: Path, damage) -> None:
    clean, clean_rejects = _clean_run(tmp_path, stage_fns, data)
    pipe = _pipeline(tmp_path, stage_fns, data, 0.0, 1)
    out = tmp_path / "run"
    args = ("run", str(pipe), "--out", str(out), "--no-progress")
    assert run_cli(*args, env={"DISTILL_CRASH_AT": "manifest_renamed:6"}).returncode == -signal.SIGKILL
    expected = damage(out / "shout")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert expected in r.stderr
    _assert_same_as_clean(out / "shout", clean, clean_rejects)


def test_two_workers_write_the_same_rows_as_one(tmp_path: Path, stage_fns: Path, data: Path) -> None:
    clean, clean_rejects = _clean_run(tmp_path, stage_fns, data)
    out = tmp_path / "par"
    r = run_cli("run", str(_pipeline(tmp_path, stage_fns, data, 0.0, 2)), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    _assert_same_as_clean(out / "shout", clean, clean_rejects)


def test_finished_stage_with_a_damaged_shard_redoes_only_that_shard(
    tmp_path: Path, stage_fns: Path, data: Path
) -> None:
    clean, clean_rejects = _clean_run(tmp_path, stage_fns, data)
    out = tmp_path / "clean" / "shout"
    before = json.loads((out / "_manifest.json").read_text())
    r = run_cli("run", str(_pipeline(tmp_path, stage_fns, data, 0.0, 1)), "--out", str(out.parent), "--no-progress")
    assert "already done, skipped" in r.stderr
    assert json.loads((out / "_manifest.json").read_text()) == before  # a skip writes nothing
    expected = _truncate_shard(out)
    r = run_cli("run", str(_pipeline(tmp_path, stage_fns, data, 0.0, 1)), "--out", str(out.parent), "--no-progress")
    assert r.returncode == 0 and expected in r.stderr
    assert "15 rows in" not in r.stderr  # the summary covers the whole stage, not just the redone shard
    _assert_same_as_clean(out, clean, clean_rejects)
    after = json.loads((out / "_manifest.json").read_text())
    assert [s["sha256"] for s in after["shards"]] == [s["sha256"] for s in before["shards"]]
