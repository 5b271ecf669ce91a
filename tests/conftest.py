from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# No model or dataset hub here, nor in CI: the real loading code runs against local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
DISTILL = [sys.executable, "-m", "distill.cli"]


def _real_data() -> Path | None:
    """../shared/real (public data sets nobody on the project wrote; never copied into the repository)."""
    for candidate in (os.environ.get("DISTILL_REAL_DATA"), REPO.parent / "shared" / "real", "/work/shared/real"):
        if candidate and (Path(candidate) / "README.md").exists():
            return Path(candidate)
    return None


REAL = _real_data()


@pytest.fixture
def real() -> Path:
    if REAL is None:
        pytest.skip("../shared/real not found next to the checkout (set DISTILL_REAL_DATA to its path)")
    return REAL


@pytest.fixture
def scratch():
    """A folder an ordinary user (nobody, when the tests run as root) can enter: pytest's are private."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="distill-test-"))
    tmp.chmod(0o755)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
    """The real `distill` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*DISTILL, *args], capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout
    )


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def read_rows(root: Path) -> list[dict]:
    """Every row of a dataset directory, in shard order (the manifest's order)."""
    manifest = json.loads((root / "_manifest.json").read_text())
    rows: list[dict] = []
    for shard in manifest["shards"]:
        rows.extend(pq.read_table(root / shard["file"]).to_pylist())
    return rows


def read_side(root: Path, side: str) -> list[dict]:
    """The rows a dataset directory set aside (`rejects`, `removed`), in shard order."""
    manifest = json.loads((root / "_manifest.json").read_text())
    rows: list[dict] = []
    for shard in manifest["shards"]:
        if side in shard:
            rows.extend(pq.read_table(root / shard[side]["file"]).to_pylist())
    return rows


def read_rejects(root: Path) -> list[dict]:
    return read_side(root, "rejects")


def prompts(n: int, start: int = 0) -> list[dict]:
    return [
        {"problem": f"Compute {i} + {i + 1}.", "answer": str(2 * i + 1), "domain": "math", "source": "t"}
        for i in range(start, start + n)
    ]


@pytest.fixture
def stage_fns(tmp_path: Path) -> Path:
    """A user's batch-function file, as a pipeline step would name it."""
    path = tmp_path / "fns.py"
    path.write_text(
        '''
import os, time
import pyarrow as pa
import pyarrow.compute as pc

def shout(batch, delay=0.0, fail_on=None):
    """Upper-cases `problem`; sleeps `delay` per batch so a kill can land mid-stage."""
    if delay:
        time.sleep(delay)
    problems = batch.column("problem").to_pylist()
    if fail_on is not None and any(fail_on in p for p in problems):
        raise ValueError(f"cannot handle {fail_on!r}")
    t = pa.Table.from_batches([batch])
    i = t.schema.get_field_index("problem")
    return t.set_column(i, "problem", pc.utf8_upper(t.column("problem")))

def wrong_return(batch):
    return 42
'''
    )
    return path


# --- `distill view`: the demo's datasets, and a running viewer over them ------------------------------


@pytest.fixture(scope="session")
def view_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline through prompts, traces, verdicts, kept, the SFT mix and its card (no training), plus a
    verdicts directory of real R1-distill traces (MATH problems, LaTeX throughout) when ../shared/real is here."""
    import yaml

    ws = tmp_path_factory.mktemp("view")
    for folder in ("data", "pipelines", "configs", "filters"):
        subprocess.run(["cp", "-r", str(REPO / folder), str(ws / folder)], check=True)
    recipe = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    steps = ("prompts", "traces", "verdicts", "kept", "sft", "card")
    recipe["steps"] = [s for s in recipe["steps"] if s["name"] in steps]
    (ws / "pipelines" / "view-demo.yaml").write_text(yaml.safe_dump(recipe))
    r = run_cli("run", "pipelines/view-demo.yaml", "--out", "runs/demo", "--no-progress", cwd=ws, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    if REAL is not None:
        rows, seen = [], {}
        for line in (REAL / "traces_r1distill_math_thought_anchors.jsonl").read_text().splitlines():
            t = json.loads(line)
            k = seen[t["problem"]] = seen.get(t["problem"], -1) + 1
            rows.append({"problem": t["problem"], "answer": t["gold_answer"], "domain": "math", "language": "en",
                         "sample": k, "content": t["response"], "source": "thought-anchors"})  # fmt: skip
        write_jsonl(ws / "real.jsonl", rows)
        # and R1-distill answering MMLU questions by letter ("Therefore, the best answer is: (X).")
        lines = (REAL / "traces_r1distill_qwen14b_mmlu_cued.jsonl").read_text().splitlines()[:20]
        write_jsonl(ws / "real-mcq.jsonl", [{"problem": t["problem"], "answer": t["gold_answer"], "domain": "science",
                                             "language": "en", "sample": k, "content": t["response"],
                                             "source": "thought-branches"}
                                            for k, t in enumerate(map(json.loads, lines))])  # fmt: skip
        for name in ("real", "real-mcq"):
            r = run_cli("filter", "--input", str(ws / f"{name}.jsonl"), "--out", f"runs/demo/{name}-verdicts",
                        "--preset", str(REPO / "filters" / "r1.yaml"), "--no-progress", cwd=ws)  # fmt: skip
            assert r.returncode == 0, r.stderr[-3000:]
    return ws / "runs" / "demo"


@pytest.fixture(scope="session")
def viewer(view_runs: Path):
    """`distill view` over the demo's run folder, in this process (a thread), on a free port."""
    import threading

    from distill.view.server import make_server

    server = make_server([view_runs], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def curate(specs: list, out: Path, cfg: object = None, benchmarks: list | None = None, **knobs: object) -> object:
    """`distill prompts` from Python (as the command runs it), with extra benchmark files beside the config's."""
    from distill.prompts.config import PromptsConfig
    from distill.stages import invoke

    cfg = cfg or PromptsConfig()
    if benchmarks:
        deco = cfg.decontaminate  # type: ignore[attr-defined]
        deco = deco.model_copy(update={"benchmarks": [*deco.benchmarks, *map(str, benchmarks)]})
        cfg = cfg.model_copy(update={"decontaminate": deco})  # type: ignore[attr-defined]
    return invoke("prompts", specs, out, cfg, **knobs)  # type: ignore[arg-type]


# `make test-fast` runs what is not marked slow (`-m "not slow"`): whole files that start real servers, a Ray
# cluster, a browser, the hostile sandbox suite or whole chains, and the tests measured at 3 s or more on 2 cores
# (pytest --durations, 2026-12-07). `make test` (CI) runs everything. A new slow test goes in a list below.
SLOW_FILES = {
    "test_vllm_server.py",
    "test_cluster.py",
    "test_view_browser.py",
    "test_demo.py",
    "test_efficacy.py",
    "test_help_examples.py",
    "test_isolation.py",
    "test_sandbox.py",
    "test_crash_resume.py",
    "test_ratelimit.py",
}
SLOW_TESTS = {
    "test_adaptive.py::test_adaptive_run_is_the_same_on_a_rerun_and_its_verdicts_are_filters",
    "test_adaptive.py::test_kill_at_commit_steps_then_rerun_gives_the_clean_rows",
    "test_adaptive.py::test_failed_requests_are_retried_by_the_next_run_and_the_rows_are_the_clean_ones",
    "test_adaptive.py::test_a_decided_prompts_requests_in_flight_are_aborted_at_the_server",
    "test_adaptive.py::test_sigkill_mid_run_with_speculation_then_rerun_gives_the_clean_rows",
    "test_adaptive.py::test_synthetic_pass_rates_make_easy_and_hard_prompts_with_longer_wrong_traces",
    "test_adaptive.py::test_a_streamed_trace_that_loops_or_drifts_is_stopped_and_a_clean_one_never_is",
    "test_adaptive.py::test_a_pipeline_step_takes_the_options_and_its_plan_and_run_agree",
    "test_readme.py::test_every_readme_command_runs_as_printed",
    "test_memory.py::test_a_dry_run_with_no_network_says_so_in_one_line_without_retrying",
    "test_declarations.py::test_a_command_rerun_on_a_pipeline_steps_output_finds_it_done",
    "test_bad_inputs.py::test_csv_whose_types_change_after_the_first_block_and_a_broken_csv",
    "test_card_publish.py::test_a_wheel_carries_the_card_template_and_a_plain_install_writes_cards",
    "test_card_publish.py::test_card_numbers_equal_the_data",
    "test_card_publish.py::test_dry_run_folder_loads_with_datasets_and_excludes_side_files",
    "test_card_publish.py::test_publish_finds_the_token_as_the_hub_client_does_and_says_what_failed",
    "test_card_publish.py::test_the_card_is_the_same_from_any_working_directory",
    "test_cli.py::test_bad_pipeline_yaml_is_one_line_exit_2",
    "test_cli.py::test_each_command_help_has_an_example",
    "test_cli.py::test_run_then_rerun_skips_then_changed_config_is_refused",
    "test_declarations.py::test_compare_from_the_command_line",
    "test_declarations.py::test_every_step_is_a_command_from_its_declaration",
    "test_difficulty.py::test_pass_rates_by_hand_then_select_what_the_student_does_not_solve",
    "test_difficulty.py::test_real_math500_rows_need_the_prompts_stage_first_and_the_command_says_so",
    "test_difficulty.py::test_the_tiny_student_is_reproducible_with_a_seed_in_a_pipeline",
    "test_eval.py::test_a_killed_evaluation_continues_where_it_stopped",
    "test_eval.py::test_tiny_checkpoint_same_seed_same_numbers_and_resume",
    "test_filters.py::test_every_reject_code",
    "test_filters.py::test_filter_then_select_commands",
    "test_generate.py::test_sigkill_mid_run_then_rerun_requests_only_what_is_missing",
    "test_generate.py::test_synthetic_kill_at_commit_steps_then_rerun_gives_the_clean_rows",
    "test_generate.py::test_synthetic_teacher_faults_reach_every_filter",
    "test_generate.py::test_wrong_api_key_stops_the_run_with_one_line",
    "test_gpu_check.py::test_its_cpu_self_test_runs_every_step",
    "test_judge.py::test_an_unreachable_judge_stops_the_run_without_marking_rows",
    "test_judge.py::test_judge_decides_rescues_caches_and_reports_its_cost",
    "test_memory.py::test_a_kernel_the_recipe_requires_and_the_machine_lacks_is_one_line",
    "test_memory.py::test_a_recipe_that_does_not_fit_names_the_change",
    "test_memory.py::test_every_recipe_dry_run_prints_its_memory_and_fits",
    "test_mix.py::test_a_kill_while_rendering_resumes_from_the_chunks_already_rendered",
    "test_mix.py::test_a_named_tokenizer_folder_and_bad_configs",
    "test_mix.py::test_cli_mix_resumes_after_a_kill",
    "test_mix.py::test_same_seed_gives_byte_identical_shards_and_another_seed_does_not",
    "test_nonreasoning.py::test_offline_run_through_to_the_mix",
    "test_prompts.py::test_cli_prompts_killed_midway_resumes_to_the_same_output",
    "test_readers.py::test_filter_reads_every_format_to_the_same_verdicts",
    "test_readers.py::test_train_reads_a_plain_folder_of_parquet_files",
    "test_real_data.py::test_every_gsm8k_row_is_read_with_the_number_after_the_marker_as_its_answer",
    "test_stages.py::test_a_stage_in_one_file_gets_its_command",
    "test_stages.py::test_a_stage_in_one_file_is_a_pipeline_step_planned_and_reported",
    "test_trace_layouts.py::test_a_cut_shard_is_one_line_for_every_command_that_reads_one",
    "test_trace_layouts.py::test_a_public_trace_set_is_a_mix_source",
    "test_trace_layouts.py::test_demo_verdicts_as_jsonl_are_read_back_by_select",
    "test_trace_layouts.py::test_each_public_layout_gives_the_plain_files_verdicts",
    "test_trace_layouts.py::test_math_dense_english_does_not_read_as_another_language",
    "test_trace_layouts.py::test_plain_files_as_published_no_config",
    "test_train.py::test_a_killed_run_resumes_from_its_last_checkpoint",
    "test_train.py::test_a_pipeline_train_step_launches_with_the_recipes_processes",
    "test_train.py::test_a_recipe_passes_any_sftconfig_field_and_a_typo_is_one_line",
    "test_train.py::test_long_rows_are_dropped_and_counted_in_the_plan",
    "test_train.py::test_lora_student_and_a_template_whose_markers_the_tokenizer_lacks",
    "test_train.py::test_preflight_fails_loudly_before_training",
    "test_train.py::test_training_lowers_the_loss_and_saves_a_servable_checkpoint",
    "test_train.py::test_two_process_fsdp_run_through_accelerate_really_shards",
    "test_view.py::test_the_datasets_are_found_in_pipeline_order_and_linked",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path, _, name = item.nodeid.partition("::")
        if Path(path).name in SLOW_FILES or f"{Path(path).name}::{name.split('[')[0]}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# --- the demo as a newcomer runs it: `make demo` in a copy of the checkout -----------------------------

DEMO_LOG = "make-demo.log"


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's recipes, data, Makefile and README where `make demo` has run (the venv is the
    checkout's, linked); its output, as printed, is in make-demo.log. The help examples and the README test
    run in it (or in a copy of it)."""
    import shutil

    ws = tmp_path_factory.mktemp("checkout")
    for folder in ("data", "pipelines", "configs", "filters", "students"):
        shutil.copytree(REPO / folder, ws / folder)
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, ws / name)  # the times kept: make finds the venv's setup stamp up to date
    (ws / ".venv").symlink_to(REPO / ".venv")
    r = subprocess.run(["make", "demo"], cwd=ws, capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    (ws / DEMO_LOG).write_text(r.stderr + r.stdout)  # the report (stderr), then make's closing lines
    assert r.returncode == 0, (r.stderr + r.stdout)[-3000:]
    # as `make demo` left it, for a test that must start from there whatever the others wrote in ws since
    shutil.copytree(ws / "runs" / "demo", ws / ".demo-output", symlinks=True)
    return ws


def serve_once(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str | None]:
    """Start a server command (`distill view`), read the URL on its first line and its /api/datasets, stop it
    with Ctrl-C: (exit status, its first line and, when it printed no URL, the rest of its stderr; the data,
    or None without a URL)."""
    import re
    import signal
    import urllib.request

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    body = None
    try:
        said = proc.stderr.readline()
        url = re.search(r"http://\S+/", said)
        if url:
            with urllib.request.urlopen(url.group() + "api/datasets", timeout=60) as r:
                body = r.read().decode()
        elif proc.poll() is not None:
            said += proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=30), said, body
