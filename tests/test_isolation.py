"""`distill filter` and the code sandbox's isolation: judged in bwrap as an ordinary user, no silent downgrade
(no isolation -> exit 2 with one line, nothing written), the explicit unsafe opt-out recorded in every
verdict and the manifest, `distill doctor`."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, read_rows, run_cli, write_jsonl
from tests.test_sandbox import ANSWER, TOKEN, _stray_processes, as_unprivileged, needs_bwrap

SUM_TESTS = json.dumps({"inputs": ["1 2\n", "10 20\n"], "outputs": ["3\n", "30\n"]})
STEPS = "First, read the two numbers.\n\nThen print their sum, and we are done."


def _trace(i: int, code: str, domain: str = "code") -> dict:
    content = f"Here it is.\n```python\n{code}```" if domain == "code" else "So the answer is \\boxed{3}."
    return {"id": f"p{i}", "source": "t", "domain": domain, "problem": "Read two integers; print their sum.",
            "answer": "3" if domain == "math" else None, "tests": SUM_TESTS if domain == "code" else None,
            "language": "en", "sample": 0, "reasoning": STEPS, "content": content, "finish_reason": "stop",
            "completion_tokens": 50}  # fmt: skip


def _traces(home: Path) -> list[dict]:
    return [
        _trace(0, ANSWER),  # correct: kept
        _trace(1, f"open({str(home / '.cache/huggingface/token')!r}).read()\n" + ANSWER),  # the caller's token
        _trace(2, "import os\nassert os.environ.get('HF_TOKEN')\n" + ANSWER),  # secrets in the environment
        _trace(3, "import os\nif os.fork() == 0:\n    os.setsid(); import time; time.sleep(600)\n" + ANSWER),
    ]


@needs_bwrap
def test_filter_as_an_unprivileged_user_judges_code_in_bwrap(scratch: Path) -> None:
    home = scratch / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(TOKEN)
    work = scratch / "work"
    inp = write_jsonl(work / "traces.jsonl", _traces(home))
    preset = work / "r1.yaml"  # a copy: the checkout may sit where uid 65534 cannot enter (CI's is under mktemp)
    shutil.copy(REPO / "filters" / "r1.yaml", preset)
    if os.geteuid() == 0:
        for p in [home, *home.rglob("*"), work, *work.rglob("*")]:
            os.chown(p, 65534, 65534)
    out = work / "verdicts"
    argv = [sys.executable, "-m", "distill.cli", "filter", "--input", str(inp), "--preset", str(preset),
            "--out", str(out), "--no-progress", "--workers", "1"]  # fmt: skip
    r = as_unprivileged(argv, scratch, home=home)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {v["id"]: v for v in read_rows(out)}
    assert rows["p0"]["keep"] and rows["p0"]["correct"] and rows["p0"]["sandbox"] == "bwrap"
    assert rows["p1"]["reject_reason"] == "code_failed" and "No such file" in rows["p1"]["reject_detail"]
    assert rows["p2"]["reject_reason"] == "code_failed"
    assert rows["p3"]["keep"]  # right answer; its detached child died with the run
    assert {v["sandbox"] for v in rows.values()} == {"bwrap"}
    stats = json.loads((out / "_manifest.json").read_text())["stats"]
    assert stats["sandbox"]["sandbox"] == "bwrap" and "namespaces" in stats["sandbox"]["isolation"]
    assert _stray_processes() == []


def _no_bwrap_env(bin_dir: Path, fake: str | None = None) -> dict[str, str]:
    """A PATH where bwrap is missing, or where a `bwrap` fails as it does where user namespaces are denied."""
    for tool in ("setpriv", "unshare", "prlimit"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if fake is not None:
        (bin_dir / "bwrap").write_text(f"#!/bin/sh\necho '{fake}' >&2\nexit 1\n")
        (bin_dir / "bwrap").chmod(0o755)
    return {"PATH": str(bin_dir)}


@pytest.mark.parametrize(
    ("fake", "said"),
    [
        (None, "bubblewrap (bwrap) is not installed"),
        ("bwrap: No permissions to creating new namespace, likely because the kernel does not allow "
         "non-privileged user namespaces.", "bubblewrap cannot set up its namespaces here (bwrap: No permissions"),
    ],
    ids=["bwrap-absent", "user-namespaces-denied"],
)  # fmt: skip
def test_without_isolation_code_checks_stop_with_one_line_and_no_verdicts(
    tmp_path: Path, scratch: Path, fake: str | None, said: str
) -> None:
    inp = write_jsonl(tmp_path / "traces.jsonl", [_trace(0, ANSWER), _trace(1, "", domain="math")])
    out = tmp_path / "verdicts"
    env = _no_bwrap_env(scratch, fake)
    r = run_cli("filter", "--input", str(inp), "--preset", str(REPO / "filters/r1.yaml"), "--out", str(out),
                "--no-progress", env=env)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: sandbox: " + said) or said in line
    assert "apt-get install bubblewrap" in line and "sandbox: unsafe-rlimits-only" in line
    assert not out.exists()  # no verdict written
    # Nothing to run, nothing to isolate: math traces are judged on a machine without bwrap.
    math_only = write_jsonl(tmp_path / "math.jsonl", [_trace(1, "", domain="math")])
    r = run_cli("filter", "--input", str(math_only), "--preset", str(REPO / "filters/r1.yaml"), "--out",
                str(tmp_path / "math"), "--no-progress", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_rows(tmp_path / "math")[0]["keep"] and read_rows(tmp_path / "math")[0]["sandbox"] is None


def test_the_unsafe_opt_out_runs_and_every_verdict_says_so(tmp_path: Path, scratch: Path) -> None:
    preset = tmp_path / "unsafe.yaml"
    r1 = (REPO / "filters/r1.yaml").read_text()
    assert "sandbox: bwrap " in r1
    preset.write_text(r1.replace("sandbox: bwrap ", "sandbox: unsafe-rlimits-only "))
    inp = write_jsonl(tmp_path / "traces.jsonl", [_trace(0, ANSWER), _trace(1, "print(4)")])
    out = tmp_path / "verdicts"
    r = run_cli("filter", "--input", str(inp), "--preset", str(preset), "--out", str(out), "--no-progress",
                env=_no_bwrap_env(scratch))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert [v["keep"] for v in rows] == [True, False]
    assert {v["sandbox"] for v in rows} == {"unsafe-rlimits-only"}
    stats = json.loads((out / "_manifest.json").read_text())["stats"]
    assert stats["sandbox"]["sandbox"] == "unsafe-rlimits-only" and "no namespaces" in stats["sandbox"]["isolation"]


def test_doctor_says_which_isolation_this_machine_gives(scratch: Path) -> None:
    r = run_cli("doctor")
    from distill.filters.sandbox import probe

    if probe("bwrap").ok:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "sandbox  bwrap: yes" in r.stdout and "namespaces" in r.stdout
    else:
        assert r.returncode == 1 and "sandbox  bwrap: NO" in r.stdout
    r = run_cli("doctor", env=_no_bwrap_env(scratch))
    assert r.returncode == 1
    assert "sandbox  bwrap: NO" in r.stdout and "bubblewrap (bwrap) is not installed" in r.stdout
