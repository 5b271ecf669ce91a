"""Running untrusted code from a teacher's answer against its tests.

These machines and CI run as root, where RLIMIT_NPROC does not bind, so rlimits alone cannot stop a
fork bomb. Each run therefore gets, from the outside in:
- new network, PID and mount namespaces (`unshare`): no network at all, and every process of the run
  dies with the namespace's first process, including children that detach and outlive their parent;
- an unprivileged user (`setpriv` to nobody), so RLIMIT_NPROC binds and nothing of root's is writable;
- rlimits on CPU time, address space, file size, open files and processes;
- an empty environment (no HF_TOKEN, OPENAI_API_KEY, ...) and a fresh temporary directory as cwd;
- its own process group, killed as a whole at the wall-clock limit.
When the namespaces cannot be made (not root, no unshare), the run falls back to the user/rlimit/
process-group layers and says so once in the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

NOBODY = 65534
_FENCE = "```"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock for the whole test suite of one answer
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 32
    open_files: int = 64


@dataclass
class Outcome:
    passed: bool
    reason: str | None  # None, "code_failed" or "code_timeout"
    detail: str = ""


def last_code_block(content: str) -> str | None:
    """The last fenced code block of a response (its language tag dropped)."""
    end = content.rfind(_FENCE)
    if end < 0:
        return None
    start = content.rfind(_FENCE, 0, end)
    if start < 0:
        return None
    block = content[start + 3 : end]
    first_newline = block.find("\n")
    if first_newline >= 0 and block[:first_newline].strip().isidentifier():
        block = block[first_newline + 1 :]  # ```python
    return block.strip("\n") or None


def parse_tests(tests: str | None) -> tuple[list[tuple[str, str]], str]:
    """(stdin, expected stdout) cases and assert-style test code, from the prompt's `tests` JSON.

    Accepted: {"inputs": [...], "outputs": [...]}, [{"input": ..., "output": ...}, ...],
    {"asserts": [...] or "..."} and {"test": "..."} (code run after the answer's code).
    """
    if not tests:
        return [], ""
    data: Any = json.loads(tests)
    io: list[tuple[str, str]] = []
    code = ""
    if isinstance(data, list):
        io = [(str(c.get("input", "")), str(c.get("output", ""))) for c in data]
    elif isinstance(data, dict):
        if "inputs" in data:
            io = [(str(i), str(o)) for i, o in zip(data["inputs"], data.get("outputs", []), strict=False)]
        asserts = data.get("asserts", data.get("test", ""))
        code = "\n".join(asserts) if isinstance(asserts, list) else str(asserts)
    return io, code


_MASKED = ("/tmp/", "/var/tmp/", "/dev/shm/")  # each run gets a private tmpfs over these


@cache
def _interpreter() -> str:
    """A Python the sandbox can run: the base interpreter (answers may use the standard library only),
    at a real path outside the directories the sandbox masks (a checkout under /tmp would vanish), that
    the unprivileged user may execute."""
    base = getattr(sys, "_base_executable", sys.executable)
    for candidate in (base, sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if not candidate:
            continue
        real = os.path.realpath(candidate)
        if not real.startswith(_MASKED) and _runs_as_nobody(real):
            return real
    raise RuntimeError("sandbox: no Python interpreter outside /tmp that an unprivileged user can run")


def _runs_as_nobody(python: str) -> bool:
    if os.geteuid() != 0:
        return True
    try:
        r = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c", "pass"],
            capture_output=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


# Inside the new mount namespace, before dropping to nobody: the world-writable places get private,
# size-capped tmpfs mounts (RLIMIT_FSIZE caps one file, not how many), the program is copied into the
# new /tmp through a file descriptor opened before the mounts hid it, and it runs from there.
_SETUP = (
    'exec 3< "$1"; for d in /tmp /var/tmp /dev/shm; do [ -d "$d" ] && mount -t tmpfs -o size={mb}m,mode=1777 '
    'tmpfs "$d"; done; cat <&3 > /tmp/main.py; exec 3<&-; chmod 444 /tmp/main.py; cd /tmp; shift; exec "$@"'
)


@cache
def _namespaces() -> bool:
    """Whether this machine lets us make network, PID and mount namespaces (root with unshare)."""
    if not shutil.which("unshare"):
        return False
    probe = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
             "sh", "-c", "mount -t tmpfs tmpfs /tmp"]  # fmt: skip
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        print("warning: sandbox: cannot create namespaces here (not root?); running with rlimits only", file=sys.stderr)
    return ok


def _command(program: Path, limits: Limits) -> list[str]:
    """The command that runs `program`, isolated as strongly as this machine allows."""
    drop = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs"]
    if not _namespaces():
        return [*drop, _interpreter(), "-I", "-S", str(program)]
    setup = _SETUP.replace("{mb}", str(limits.file_mb * 4))
    return [
        "unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
        "sh", "-c", setup, "sandbox", str(program), *drop, _interpreter(), "-I", "-S", "/tmp/main.py",
    ]  # fmt: skip


def _prlimit(limits: Limits) -> list[str]:
    """The same limits as `_limit`, set by util-linux `prlimit` before it execs the command: no Python runs
    between fork and exec, which a threaded caller (a Ray worker) needs; empty where prlimit is missing."""
    if not shutil.which("prlimit"):
        return []
    mb = 1 << 20
    return [
        "prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb * mb}", f"--fsize={limits.file_mb * mb}",
        f"--nofile={limits.open_files}", f"--nproc={limits.processes}", "--core=0", "--",
    ]  # fmt: skip


def _limit(limits: Limits):
    def apply() -> None:  # runs in the child before exec; the limits pass on to everything it starts
        mb = 1 << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(program: str, stdin: str, limits: Limits, timeout_s: float) -> tuple[int | None, str, str]:
    """(exit status or None on time-out, stdout, stderr) of one sandboxed run."""
    with tempfile.TemporaryDirectory(prefix="distill-sbx-") as tmp:
        path = Path(tmp) / "main.py"
        path.write_text(program)
        if os.geteuid() == 0:
            os.chown(tmp, NOBODY, NOBODY)
            os.chown(path, NOBODY, NOBODY)
        cmd = _command(path, limits)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "PYTHONHASHSEED": "0"}
        wrapper = _prlimit(limits)
        proc = subprocess.Popen(
            [*wrapper, *cmd],
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the time-out kills the whole group
            preexec_fn=None if wrapper else _limit(limits),
        )
        try:
            out, err = proc.communicate(stdin.encode(), timeout=timeout_s)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            status = None
            out, err = b"", b""
        finally:
            _kill_group(proc)
        return status, out.decode(errors="replace")[:65536], err.decode(errors="replace")[-4096:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)  # the run's whole process group; the namespace takes the rest
    proc.wait()


def _same_output(got: str, want: str) -> bool:
    return got.split() == want.split()  # judges compare tokens: trailing spaces and newlines do not count


def run_tests(code: str, tests: str | None, limits: Limits) -> Outcome:
    io, test_code = parse_tests(tests)
    if not io and not test_code:
        return Outcome(False, "code_failed", "no tests to run")
    budget = limits.timeout_s
    if test_code:
        status, _, err = run_python(f"{code}\n\n{test_code}\n", "", limits, budget)
        if status is None:
            return Outcome(False, "code_timeout", f"assert tests ran past {limits.timeout_s:g}s")
        if status != 0:
            return Outcome(False, "code_failed", (err.strip().splitlines() or ["exit status " + str(status)])[-1][:300])
    for k, (stdin, want) in enumerate(io):
        status, out, err = run_python(code, stdin, limits, budget)
        if status is None:
            return Outcome(False, "code_timeout", f"case {k} ran past {limits.timeout_s:g}s")
        if status != 0:
            return Outcome(False, "code_failed", f"case {k}: " + (err.strip().splitlines() or [str(status)])[-1][:300])
        if not _same_output(out, want):
            return Outcome(False, "code_failed", f"case {k}: wrong output")
    return Outcome(True, None)
