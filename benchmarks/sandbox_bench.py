"""The code sandbox's cost per answer: one correct answer against one stdin/stdout case, run N times.

Modes: `bwrap` (the sandbox: user/PID/net/mount namespaces, no root needed), `unsafe-rlimits-only` (the
explicit opt-out: rlimits and a process group only), the namespaces this project set up itself before
bubblewrap (`unshare` as root, then `setpriv` to nobody: root only, the filesystem left visible; re-stated
here as the baseline), and a bare `python -I -S` subprocess (the floor: starting an interpreter).

    python -m benchmarks.sandbox_bench [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from distill.filters import sandbox
from distill.filters.sandbox import Limits, run_tests

ANSWER = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})


def _time(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()  # warm: the probe, the interpreter's pages
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.fmean(times),
            "per_s": runs / sum(times)}  # fmt: skip


def _old_unshare(program: Path, limits: Limits, python: str, _prefix: str, _info_fd: int = -1) -> list[str]:
    """The isolation before this change: root-only namespaces made with unshare, tmpfs over the writable
    places, then nobody; the rest of the filesystem visible (read-only to nobody)."""
    setup = (
        'exec 3< "$1"; for d in /tmp /var/tmp /dev/shm; do [ -d "$d" ] && mount -t tmpfs -o size=64m,mode=1777 '
        'tmpfs "$d"; done; cat <&3 > /tmp/main.py; exec 3<&-; chmod 444 /tmp/main.py; cd /tmp; shift; exec "$@"'
    )
    drop = ["setpriv", f"--reuid={sandbox.NOBODY}", f"--regid={sandbox.NOBODY}", "--clear-groups", "--no-new-privs"]
    return [*sandbox._prlimit(limits), "unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
            "--mount-proc", "sh", "-c", setup, "sandbox", str(program), *drop, python, "-I", "-S",
            "/tmp/main.py"]  # fmt: skip


def run(runs: int) -> list[dict]:
    results = []
    for mode in ("bwrap", "unsafe-rlimits-only"):
        if not sandbox.probe(mode).ok:
            continue
        limits = Limits(sandbox=mode)
        assert run_tests(ANSWER, TESTS, limits).passed
        results.append({"mode": mode, **_time(lambda limits=limits: run_tests(ANSWER, TESTS, limits), runs)})
    if os.geteuid() == 0 and shutil.which("unshare"):

        def old() -> None:
            status, out, _ = sandbox._run(_old_unshare, ANSWER, "1 2\n", Limits(), 10)
            assert status == 0 and out.split() == ["3"], (status, out, _)

        results.append({"mode": "unshare as root (before)", **_time(old, runs)})
    python = sandbox._interpreter()[0]
    with tempfile.TemporaryDirectory() as tmp:
        prog = Path(tmp) / "main.py"
        prog.write_text(ANSWER)

        def bare() -> None:
            subprocess.run([python, "-I", "-S", str(prog)], input=b"1 2\n", capture_output=True, check=True)

        results.append({"mode": "bare python -I -S (floor)", **_time(bare, runs)})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=100)
    print(json.dumps(run(ap.parse_args().runs), indent=1))


if __name__ == "__main__":
    main()
