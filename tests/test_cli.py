"""The command line: help with examples, one-line errors with exit 2, run + inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import app
from tests.conftest import prompts, run_cli, write_jsonl

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_top_level_help_lists_commands_with_an_example() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "Example" in r.stdout
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_an_example(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout and f"distill {command}" in r.stdout


@pytest.mark.parametrize(
    ("yaml", "needles"),
    [
        (
            "name: x\nsteps:\n  - name: a\n    functon: f.py:g\n    input: x\n",
            ["steps[0].functon", "did you mean 'function'"],
        ),
        (
            "name: x\nsteps:\n  - name: a\n    function: f.py:g\n    input: x\n    rows_per_shard: two\n",
            ["steps[0].rows_per_shard", "'two'"],
        ),
        ("name: x\nsteps: [\n", ["YAML syntax error", ":3:1"]),
        ("", ["the file is empty"]),
        (
            "name: x\nsteps:\n  - name: a\n    function: f.py:g\n    input: b\n"
            "  - name: b\n    function: f.py:g\n    input: x\n",
            ["reads step 'b', which does not come before it"],
        ),
        (
            "name: x\nsteps:\n  - name: a\n    function: nosuchmodule:g\n    input: in.jsonl\n",
            ["cannot import 'nosuchmodule'"],
        ),
        (
            "name: x\nsteps:\n  - name: a\n    function: distill.steps:nothere\n    input: in.jsonl\n",
            ["no callable named 'nothere'"],
        ),
    ],
)
def test_bad_pipeline_yaml_is_one_line_exit_2(tmp_path: Path, yaml: str, needles: list[str]) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(2))
    p = tmp_path / "p.yaml"
    p.write_text(yaml)
    r = run_cli("run", str(p), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert str(p) in r.stderr or "nosuchmodule" in r.stderr or "nothere" in r.stderr


def test_missing_pipeline_file(tmp_path: Path) -> None:
    r = run_cli("run", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "none.yaml: no such file" in r.stderr


def _pipeline(tmp_path: Path, fns: Path, **step: object) -> Path:
    write_jsonl(tmp_path / "in.jsonl", [*prompts(30), "{oops"])
    extra = "".join(f"    {k}: {v}\n" for k, v in step.items())
    p = tmp_path / "p.yaml"
    p.write_text(
        "name: t\nsteps:\n  - name: shout\n    function: fns.py:shout\n    input: in.jsonl\n"
        "    input_record: prompt\n    output_record: prompt\n    rows_per_shard: 8\n    workers: 1\n" + extra
    )
    return p


def test_run_then_rerun_skips_then_changed_config_is_refused(tmp_path: Path, stage_fns: Path) -> None:
    p = _pipeline(tmp_path, stage_fns)
    out = tmp_path / "out"
    r = run_cli("run", str(p), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "shout: 31 rows in -> 30 out, 1 rejected (malformed_json 1)" in r.stderr
    r = run_cli("run", str(p), "--out", str(out), "--no-progress")
    assert "already done, skipped" in r.stderr
    p2 = _pipeline(tmp_path, stage_fns, options="{fail_on: 'Compute 3 '}")
    r = run_cli("run", str(p2), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "config differs in options" in r.stderr and "--overwrite" in r.stderr
    r = run_cli("run", str(p2), "--out", str(out), "--no-progress", "--overwrite")
    assert r.returncode == 0, r.stderr
    # The batch with the failing row is retried row by row: only that row is rejected.
    assert "31 rows in -> 29 out, 2 rejected" in r.stderr and "stage_error 1" in r.stderr


def test_function_returning_the_wrong_type_is_a_clear_error(tmp_path: Path, stage_fns: Path) -> None:
    p = _pipeline(tmp_path, stage_fns)
    p.write_text(p.read_text().replace("fns.py:shout", "fns.py:wrong_return"))
    r = run_cli("run", str(p), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 2 and "returned int" in r.stderr and "RecordBatch" in r.stderr


def test_inspect_shows_schema_rejects_and_rows(tmp_path: Path, stage_fns: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("run", str(_pipeline(tmp_path, stage_fns)), "--out", str(out), "--no-progress").returncode == 0
    r = run_cli("inspect", str(out / "shout"), "--rows", "2", "--verify")
    assert r.returncode == 0, r.stderr
    for needle in [
        "stage shout",
        "record prompt v1",
        "complete",
        "rows 30",
        "malformed_json",
        "problem: large_string",
        "COMPUTE 0 + 1.",
        "0 problems",
    ]:
        assert needle in r.stdout, (needle, r.stdout)
    (out / "shout" / "train-00001.parquet").write_bytes(b"garbage")
    r = run_cli("inspect", str(out / "shout"), "--verify")
    assert r.returncode == 1 and "train-00001.parquet has 7 bytes" in r.stdout
    r = run_cli("inspect", str(tmp_path))
    assert r.returncode == 2 and "_manifest.json is missing" in r.stderr
