"""benchmarks/gpu_check.sh: ready for the few minutes a GPU is lent, and checked here on CPU first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it where a GPU is, or --self-test on CPU"
    ]
    assert not list(tmp_path.iterdir())  # nothing made


def test_its_cpu_self_test_runs_every_step(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--self-test", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    sft = results["sft"]
    assert sft["tokens"] > 5_000 and sft["tokens_per_s"] > 0 and sft["final_loss"] is not None
    assert sft["params"] == 393_920 and sft["attention"] == "sdpa (segment_sdpa)"  # the tiny stand-in, packed
    assert results["fsdp2-tied"]["skipped"].startswith("needs a GPU") and results["vllm"] == {"skipped": "needs a GPU"}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| SFT tokens/s (0.4M params" in table and table.count("\n| ") == 4  # header + 3 checks
