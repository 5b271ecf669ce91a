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
