"""Past one machine: the Ray executor writes the local executor's rows (and resumes its shards), n
generation clients on n endpoints split the prompts and merge into one directory, and the Slurm scripts
render the commands they should with a test's values."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import yaml

from distill.teacher.fault_server import ServerConfig, ThreadedServer
from tests.conftest import DISTILL, REPO, prompts, read_rows, run_cli, write_jsonl


def table(path: Path, drop: tuple[str, ...] = ()):
    t = pads.dataset(str(path), format="parquet").to_table()
    return t.drop([c for c in drop if c in t.column_names])


def small_chain(tmp_path: Path) -> Path:
    """The demo's batch stages (prompts with dedup and decontamination, generate, filter, select, mix)."""
    doc = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    doc["steps"] = [s for s in doc["steps"] if s["stage"] in ("prompts", "generate", "filter", "select", "mix")]
    for step in doc["steps"]:
        if step["name"] == "prompts":
            step["input"] = str(REPO / "data" / "demo" / "prompts.jsonl")
            step["options"]["decontaminate"]["benchmarks"] = [str(REPO / "data" / "demo" / "benchmark.jsonl")]
        if step["name"] == "traces":
            step["options"]["teacher"] = str(REPO / "configs" / "teacher" / "synthetic.yaml")
        if step["name"] == "verdicts":
            step["options"]["preset"] = str(REPO / "filters" / "r1.yaml")
            step["rows_per_shard"] = 300  # several shards for the workers
        if step["name"] == "sft":
            step["options"]["sources"][1]["path"] = str(REPO / "data" / "demo" / "chat.jsonl")
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_ray_executor_writes_the_local_executors_rows_and_resumes_its_shards(tmp_path: Path) -> None:
    chain = small_chain(tmp_path)
    local, ray = tmp_path / "local", tmp_path / "ray"
    r = run_cli("run", str(chain), "--out", str(local), "--workers", "2", "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("run", str(chain), "--out", str(ray), "--workers", "2", "--executor", "ray", "--no-progress",
                timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("prompts", "traces", "verdicts", "kept", "sft"):
        assert table(local / step, ("latency_s",)).equals(table(ray / step, ("latency_s",))), step
        for side in ("_rejects", "_removed"):
            if (local / step / side).is_dir():
                assert table(local / step / side).equals(table(ray / step / side)), (step, side)
    manifest = json.loads((ray / "verdicts" / "_manifest.json").read_text())
    traces = json.loads((ray / "traces" / "_manifest.json").read_text())["shards"]
    assert (
        len(manifest["shards"]) == sum(-(-t["rows"] // 300) for t in traces) > 4  # the step's rows_per_shard: 300
        and manifest["stats"]["funnel"]
        == json.loads((local / "verdicts" / "_manifest.json").read_text())["stats"]["funnel"]
    )

    # Resume across executors: the one shard lost from a local run is the only one Ray redoes.
    args = ["filter", "--input", str(local / "traces"), "--preset", str(REPO / "filters" / "r1.yaml"),
            "--out", str(tmp_path / "v"), "--rows-per-shard", "300", "--workers", "2", "--no-progress"]  # fmt: skip
    assert run_cli(*args).returncode == 0
    before = table(tmp_path / "v")
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "v").glob("train-*.parquet")}
    (tmp_path / "v" / "train-00002.parquet").unlink()
    r = run_cli(*args, "--executor", "ray")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "redo  train-00002.parquet" in r.stderr
    assert table(tmp_path / "v").equals(before)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "v").glob("train-*.parquet")}
    assert {k for k in kept if after[k] != kept[k]} == {"train-00002.parquet"}


def test_code_answers_keep_their_sandbox_on_ray_workers(tmp_path: Path) -> None:
    from tests.test_filters import CODE_PROBLEM, SUM_TESTS, trace

    programs = {
        "right": "a, b = map(int, input().split())\nprint(a + b)",
        "wrong": "print(0)",
        "endless": "while True: pass",
        "escape": "import socket\nsocket.create_connection(('1.1.1.1', 80))",
    }
    rows = [trace(**CODE_PROBLEM, id=name, tests=SUM_TESTS, content=f"```python\n{code}\n```")
            for name, code in programs.items()]  # fmt: skip
    src = write_jsonl(tmp_path / "code.jsonl", rows)
    preset = yaml.safe_load((REPO / "filters" / "r1.yaml").read_text())
    preset["correctness"]["code"]["timeout_s"] = 3
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    found = {}
    for executor in ("local", "ray"):
        r = run_cli("filter", "--input", str(src), "--preset", str(tmp_path / "preset.yaml"), "--out",
                    str(tmp_path / executor), "--executor", executor, "--workers", "2", "--no-progress")  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        found[executor] = {v["id"]: v["reject_reason"] for v in read_rows(tmp_path / executor)}
    assert found["ray"] == found["local"]
    assert found["ray"]["right"] is None and found["ray"]["wrong"] == "code_failed"
    assert found["ray"]["endless"] == "code_timeout" and found["ray"]["escape"] == "code_failed"


def test_bad_executor_is_one_line(tmp_path: Path) -> None:
    r = run_cli("filter", "--input", str(tmp_path / "x"), "--preset", str(REPO / "filters" / "r1.yaml"),
                "--out", str(tmp_path / "o"), "--executor", "spark")  # fmt: skip
    assert r.returncode == 2 and "--executor" in r.stderr and "Traceback" not in r.stderr


# --- generation by n clients ----------------------------------------------------------------------------


def test_two_clients_on_two_endpoints_split_the_prompts_and_merge(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(90))
    servers = [ThreadedServer(ServerConfig(fault_rate=0.2, seed=s, hang_s=2.0)) for s in (1, 2)]
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": ["http://unused:1/v1"],
                                   "samples": 2, "concurrency": 8, "request_timeout_s": 1.0, "backoff_s": 0.02,
                                   "max_backoff_s": 0.2, "max_retries": 30}))  # fmt: skip
    out = tmp_path / "traces"
    base = ["generate", "--input", str(src), "--teacher", str(cfg), "--out", str(out), "--rows-per-shard", "10"]
    try:
        procs = [
            subprocess.Popen(
                [*DISTILL, *base, "--shard", f"{i}/2", "--base-url", s.url, "--no-progress"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, s in enumerate(servers)
        ]
        logs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), logs
        served = [set(s.stats.answered_keys) for s in servers]
    finally:
        for s in servers:
            s.stop()
    rows = read_rows(out)
    counts = Counter((r["id"], r["sample"]) for r in rows)
    assert len(counts) == 180 and max(counts.values()) == 1  # every pair, once, in one directory
    assert not (out / ".work").exists() and not (out / "_parts").exists()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 9 and manifest["stats"]["generate"]["parts"] == 2
    # chunk k belongs to part k % 2: each endpoint answered exactly its part's pairs (no overlap)
    assert [len(keys) for keys in served] == [100, 80] and not served[0] & served[1]
    assert sum("merged from 2 parts" in err for _, err in logs) == 1
    # the same command again finds the merged directory and does nothing; so does a single-process run
    again = run_cli(*base, "--shard", "0/2", "--no-progress")
    assert again.returncode == 0 and "already done" in again.stderr
    order = [(r["id"], r["sample"]) for r in rows]
    assert order == sorted(order, key=lambda k: (ids_in_order(src).index(k[0]), k[1]))  # input order, as one process


def test_failed_samples_of_a_part_are_merged_as_rejects_then_retried_without_shard(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(40))
    failing = ThreadedServer(ServerConfig(fail_matching="Compute 7 + 8"))  # one prompt always fails here
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(yaml.safe_dump({"backend": "openai", "model": "m", "base_urls": [failing.url], "samples": 2,
                                   "backoff_s": 0.01, "max_backoff_s": 0.02, "max_retries": 2}))  # fmt: skip
    out = tmp_path / "traces"
    base = ["generate", "--input", str(src), "--teacher", str(cfg), "--out", str(out), "--rows-per-shard", "10"]
    try:
        for i in range(2):
            r = run_cli(*base, "--shard", f"{i}/2", "--no-progress")
            assert r.returncode == 0, r.stderr[-2000:]
        again = run_cli(*base, "--shard", "0/2", "--no-progress")
    finally:
        failing.stop()
    assert "run the command without --shard to retry them" in again.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["stats"]["generate"]["failed_requests"] == 2 and len(read_rows(out)) == 78
    healthy = ThreadedServer(ServerConfig())
    try:
        r = run_cli(*base, "--base-url", healthy.url, "--no-progress")
        asked = healthy.stats.requests
    finally:
        healthy.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    assert asked == 2 and len(read_rows(out)) == 80  # exactly the two failed samples, into the merged set


def ids_in_order(src: Path) -> list[str]:
    from distill.records import stable_id

    return [stable_id(json.loads(line)["problem"]) for line in src.read_text().splitlines()]


def test_bad_shard_spec_is_one_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", prompts(3))
    for spec, message in (("2/2", "0..n-1"), ("a/b", "i/n"), ("slurm", "SLURM_PROCID")):
        r = run_cli("generate", "--input", str(src), "--teacher", str(REPO / "configs" / "teacher" / "synthetic.yaml"),
                    "--out", str(tmp_path / "o"), "--shard", spec)  # fmt: skip
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (spec, r.stderr)


# --- Slurm scripts ----------------------------------------------------------------------------------------

STUB_SRUN = """#!/usr/bin/env bash
# srun --nodes=N --ntasks=N CMD...: run CMD once per task, as Slurm would on N nodes, one after another
if [[ -n ${SRUN_LOG_ONLY:-} ]]; then echo "srun $*" >> "$STUB_LOG"; exit 0; fi
n=1
while [[ $1 == --* ]]; do case $1 in --ntasks=*) n=${1#--ntasks=};; esac; shift; done
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i SLURM_NODEID=$i "$@" || exit $?; done
"""
STUB_LOG = """#!/usr/bin/env bash
echo "$(basename "$0") $* | rank=${MACHINE_RANK:-} procid=${SLURM_PROCID:-} main=${MAIN_PROCESS_IP:-}" >> "$STUB_LOG"
"""


def render(tmp_path: Path, script: str, args: list[str], nodes: int, env: dict[str, str] | None = None) -> list[str]:
    """Run a Slurm script with srun/scontrol/distill/curl stubs; the commands it ran, one line each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stubs = {"srun": STUB_SRUN, "distill": STUB_LOG, "curl": "#!/usr/bin/env bash\nexit 0\n",
             "scontrol": "#!/usr/bin/env bash\nprintf 'node-a\\nnode-b\\n'\n"}  # fmt: skip
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "commands.log"
    log.unlink(missing_ok=True)
    run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log),
               "SLURM_NNODES": str(nodes), "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_ID": "42",
               "SLURM_SUBMIT_DIR": str(REPO), **(env or {})}  # fmt: skip
    r = subprocess.run(["bash", str(REPO / "configs" / "slurm" / script), *args], cwd=tmp_path, env=run_env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def test_slurm_scripts_render_the_commands_they_should(tmp_path: Path) -> None:
    for script in sorted((REPO / "configs" / "slurm").glob("*.sbatch")):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    lines = render(tmp_path, "train.sbatch", ["students/llama-70b.yaml", "runs/r1/sft", "runs/students/l70"], 4)
    assert lines == [
        f"distill train students/llama-70b.yaml --launch --nodes 4 --data runs/r1/sft --out runs/students/l70 | "
        f"rank={i} procid={i} main=node-a"
        for i in range(4)
    ]
    serve = tmp_path / "serve.sh"
    serve.write_text("#!/usr/bin/env bash\nexec sleep 30\n")  # the server stub: up until the client is done
    args = ["runs/r1/prompts", "configs/teacher/r1-vllm.yaml", "runs/r1/traces"]
    lines = render(tmp_path, "generate-dp.sbatch", args, 3, {"SERVE": str(serve)})
    assert lines == [
        "distill generate --input runs/r1/prompts --teacher configs/teacher/r1-vllm.yaml --out runs/r1/traces "
        f"--no-progress --shard slurm --base-url http://127.0.0.1:8000/v1 | rank= procid={i} main="
        for i in range(3)
    ]
    for script, server, port in (("serve-r1-vllm.sbatch", "vllm-r1-2x8xh100.sh", 8000),
                                 ("serve-r1-sglang.sbatch", "sglang-r1-2x8xh100.sh", 30000)):  # fmt: skip
        env = {"SRUN_LOG_ONLY": "1", "SLURM_SUBMIT_DIR": str(tmp_path)}
        lines = render(tmp_path, script, [], 2, env)
        assert len(lines) == 1 and lines[0].startswith("srun --nodes=2 --ntasks=2 bash -c") and server in lines[0]
        assert (tmp_path / "r1-endpoints" / "42.url").read_text() == f"http://node-a:{port}/v1\n"
    lines = render(tmp_path, "generate.sbatch", ["p", "t.yaml", "o"], 1)
    assert lines == ["distill generate --input p --teacher t.yaml --out o --no-progress | rank= procid= main="]
