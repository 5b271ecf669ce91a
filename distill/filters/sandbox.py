"""Running untrusted code from a teacher's answer against its tests, isolated without needing root.

Model-written code (from a teacher, or from a prompt set pulled off the Hub) is untrusted input, and teams
run `distill filter` on shared clusters as ordinary users. Each run of an answer gets (`sandbox: bwrap`,
the default), from the outside in:
- bubblewrap (`bwrap`), which needs no root wherever the kernel allows unprivileged user namespaces (or
  bwrap is installed setuid): new user, PID, network, mount, IPC and UTS namespaces: no network at all (a
  private loopback: 127.0.0.1 reaches nothing of the host's), and every process of the run dies with it,
  including children that detach with setsid or a double fork;
- a filesystem view built from nothing: the system's /usr (and /bin, /lib links) and the interpreter's own
  prefix read-only, a fresh /proc and /dev, a small private writable /tmp, /dev/shm and working directory;
  no home directory, no checkout, no /etc beyond the loader cache;
- an empty environment (no HF_TOKEN, OPENAI_API_KEY, ...);
- limits set inside the new user namespace (so they count the run's own processes, not the user's other
  ones): CPU time, address space, file size, open files, processes;
- when distill runs as root, the sandbox runs as nobody all the same;
- its own session, killed as a whole at the wall-clock limit (bwrap takes the namespace down with it).

Where that cannot be set up, code checks stop with one line that says why and what to do, before any
verdict is written: there is no silent fall back. `sandbox: unsafe-rlimits-only` in a preset is the
explicit opt-out (rlimits, an empty environment, the process group; no namespaces): a user who accepts
the risk says so, and every verdict records which isolation judged it (the `sandbox` column).
`distill doctor` says what this machine gives, and why.
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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from distill.errors import UserError

NOBODY = 65534
SANDBOXES = ("bwrap", "unsafe-rlimits-only")
_FENCE = "```"
_WORKDIR = "/work"  # the run's working directory inside the bwrap sandbox
_BWRAP_HELP = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; RHEL/Fedora: dnf install bubblewrap), "
    "ask the cluster's admin to allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
    "kernel.unprivileged_userns_clone = 1) or to install bwrap setuid, or run inside a container that allows "
    "them; to run model-written code without isolation, accept the risk with `sandbox: unsafe-rlimits-only` "
    "under correctness.code in the filter preset"
)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock for the whole test suite of one answer
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 32
    open_files: int = 64
    sandbox: str = "bwrap"  # one of SANDBOXES


@dataclass
class Outcome:
    passed: bool
    reason: str | None  # None, "code_failed" or "code_timeout"
    detail: str = ""


class SandboxUnavailable(UserError):
    """The isolation a preset asks for cannot be set up here: code checks stop, nothing is judged."""


class _BwrapFailed(Exception):
    """bwrap itself failed (it prefixes its own messages with "bwrap: "): not the answer's doing."""


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


@cache
def _interpreter() -> tuple[str, str]:
    """(path, installation prefix) of a Python the sandbox can run: the base interpreter (answers may use the
    standard library only), as the sandbox's user sees it (as root the sandbox runs as nobody, who cannot
    enter /root), and only if it finds its own installation there (a binary that runs but falls back to
    another standard library would be a different Python inside the sandbox)."""
    base = getattr(sys, "_base_executable", sys.executable)
    for candidate in (base, sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if not candidate:
            continue
        real = os.path.realpath(candidate)
        prefix = _own_prefix(real)
        if prefix:
            return real, prefix
    raise SandboxUnavailable("sandbox: no Python interpreter that the unprivileged sandbox user can run")


def _own_prefix(python: str) -> str | None:
    probe = "import os, sys; print(sys.base_prefix); print(os.path.realpath(sys.executable))"
    try:
        r = subprocess.run([*_drop(), python, "-I", "-S", "-c", probe], capture_output=True, text=True,
                           timeout=20, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = r.stdout.split("\n")
    if r.returncode != 0 or len(lines) < 2 or not lines[1].startswith(lines[0].rstrip("/") + "/"):
        return None
    return lines[0]


def _drop() -> list[str]:
    """As root, the sandbox runs as nobody: nothing of root's is readable, and a user namespace of its own."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        raise SandboxUnavailable("sandbox: running as root needs util-linux `setpriv` to drop to nobody; install it")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _limits_argv(limits: Limits) -> list[str]:
    """util-linux `prlimit` runs inside the sandbox, after bwrap made the user namespace: RLIMIT_NPROC then
    counts the run's own processes (per user namespace), not every process of the user running distill."""
    mb = 1 << 20
    return [
        "/usr/bin/prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb * mb}",
        f"--fsize={limits.file_mb * mb}", f"--nofile={limits.open_files}", f"--nproc={limits.processes}",
        "--core=0", "--",
    ]  # fmt: skip


def _bwrap(program: Path, limits: Limits, python: str, prefix: str, info_fd: int = -1) -> list[str]:
    scratch = str(limits.file_mb * 4 << 20)  # each writable tmpfs: RLIMIT_FSIZE caps one file, not how many
    bwrap = shutil.which("bwrap") or "bwrap"
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--ro-bind", "/usr", "/usr"]
    if info_fd >= 0:  # bwrap writes the PID of the namespace's first process there: the time-out kills it
        cmd += ["--info-fd", str(info_fd)]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{top}"
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev"]
    for place in ("/tmp", "/dev/shm", _WORKDIR):
        cmd += ["--size", scratch, "--tmpfs", place]
    if prefix != "/usr" and not prefix.startswith("/usr/"):  # pyenv / conda / uv: its installation, read-only
        cmd += ["--ro-bind", prefix, prefix]
    cmd += ["--ro-bind", str(program), f"{_WORKDIR}/main.py", "--chdir", _WORKDIR]
    for k, v in (("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8"), ("HOME", _WORKDIR), ("PYTHONHASHSEED", "0")):
        cmd += ["--setenv", k, v]
    limit = _limits_argv(limits) if os.path.exists("/usr/bin/prlimit") else []
    return [*_drop(), *cmd, "--", *limit, python, "-I", "-S", f"{_WORKDIR}/main.py"]


@dataclass(frozen=True)
class Isolation:
    sandbox: str  # what the preset asked for
    ok: bool
    why: str  # one line: what the runs get, or why they cannot get it and what to do


_UNSAFE = (
    "rlimits, an empty environment and a process group only, no namespaces: the code can read what this "
    "user reads and reach the network (accepted in the preset)"
)


@cache
def probe(sandbox: str = "bwrap") -> Isolation:
    """Whether `sandbox` works on this machine: a real sandboxed run of a one-line program."""
    if sandbox == "unsafe-rlimits-only":
        return Isolation(sandbox, True, _UNSAFE)
    if sandbox != "bwrap":
        return Isolation(sandbox, False, f"unknown sandbox {sandbox!r}; use one of {', '.join(SANDBOXES)}")
    if not shutil.which("bwrap"):
        return Isolation(sandbox, False, f"bubblewrap (bwrap) is not installed; {_BWRAP_HELP}")
    try:
        status, out, err = _run(_bwrap, "print(6 * 7)", "", Limits(), 30)
    except SandboxUnavailable as e:
        return Isolation(sandbox, False, str(e).removeprefix("sandbox: "))
    except _BwrapFailed as e:
        return Isolation(sandbox, False, f"bubblewrap cannot set up its namespaces here ({e}); {_BWRAP_HELP}")
    if status == 0 and out.strip() == "42":
        said = subprocess.run([shutil.which("bwrap") or "bwrap", "--version"], capture_output=True, text=True)
        version = said.stdout.strip() or "bubblewrap"
        who = "nobody (distill runs as root)" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        return Isolation(sandbox, True, f"{version}: user, PID, network and mount namespaces, no home or checkout, "
                         f"runs as {who}, interpreter {_interpreter()[0]}")  # fmt: skip
    said = " ".join(err.strip().splitlines()[-2:])[:300] or f"exit status {status}"
    return Isolation(sandbox, False, f"bubblewrap cannot set up its namespaces here ({said}); {_BWRAP_HELP}")


def require(sandbox: str) -> Isolation:
    """The isolation, or `SandboxUnavailable` with the one line that says why and what to do."""
    iso = probe(sandbox)
    if not iso.ok:
        raise SandboxUnavailable(f"sandbox: {iso.why}")
    return iso


def _unsafe(program: Path, limits: Limits, python: str, _prefix: str, _info_fd: int = -1) -> list[str]:
    return [*_drop(), *(_prlimit(limits)), python, "-I", "-S", str(program)]


def _prlimit(limits: Limits) -> list[str]:
    """The limits, set by util-linux `prlimit` before it execs the command (no Python runs between fork and
    exec, which a threaded caller such as a Ray worker needs); empty where prlimit is missing."""
    return _limits_argv(limits) if os.path.exists("/usr/bin/prlimit") else []


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
    """(exit status or None on time-out, stdout, stderr) of one sandboxed run, in the preset's isolation."""
    if limits.sandbox == "bwrap":
        require("bwrap")
        try:
            return _run(_bwrap, program, stdin, limits, timeout_s)
        except _BwrapFailed as e:  # it worked when probed: something changed under this run
            raise SandboxUnavailable(f"sandbox: bubblewrap failed on a run ({e}); {_BWRAP_HELP}") from None
    if limits.sandbox == "unsafe-rlimits-only":
        return _run(_unsafe, program, stdin, limits, timeout_s)
    raise SandboxUnavailable(f"sandbox: unknown sandbox {limits.sandbox!r}; use one of {', '.join(SANDBOXES)}")


Command = Callable[[Path, Limits, str, str, int], list[str]]  # (program, limits, interpreter, prefix, info fd)


def _run(build: Command, program: str, stdin: str, limits: Limits, timeout_s: float) -> tuple[int | None, str, str]:
    with tempfile.TemporaryDirectory(prefix="distill-sbx-") as tmp:
        path = Path(tmp) / "main.py"
        path.write_text(program)
        if os.geteuid() == 0:  # the sandbox runs as nobody: the program must be readable by it
            os.chown(tmp, NOBODY, NOBODY)
            os.chown(path, NOBODY, NOBODY)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "PYTHONHASHSEED": "0"}
        unsafe = build is _unsafe
        info_r, info_w = os.pipe() if not unsafe else (-1, -1)
        if not unsafe:
            _adopt_orphans()
        try:
            proc = subprocess.Popen(
                build(path, limits, *_interpreter(), info_w),
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group
                preexec_fn=_limit(limits) if unsafe and not _prlimit(limits) else None,
                pass_fds=() if unsafe else (info_w,),
            )
        finally:
            if info_w >= 0:
                os.close(info_w)
        try:
            out, err = proc.communicate(stdin.encode(), timeout=timeout_s)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            status = None
            out, err = b"", b""
        finally:
            _stop(proc, info_r)
        stderr = err.decode(errors="replace")
        if build is _bwrap and status == 1 and stderr.startswith("bwrap: "):
            # bwrap's own failure, not the answer's: judging on would be a lie.
            raise _BwrapFailed(stderr.strip().splitlines()[0][:300])
        return status, out.decode(errors="replace")[:65536], stderr[-4096:]


@cache
def _adopt_orphans() -> bool:
    """Become the child subreaper of this process's runs: bwrap leaves the namespace's first process to be
    reaped by whoever adopts it, and an init that reaps slowly (or distill as PID 1 of a container, which
    reaps nothing) would let such zombies pile up against the user's process limit."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_orphans() -> None:
    """Reap adopted sandbox inits (comm `bwrap`, in a PID namespace of their own): never a child this
    process started itself, whose status its `Popen` still has to collect."""
    me = os.getpid()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{task}/children") as f:
                kids = f.read().split()
            for pid in kids:
                with contextlib.suppress(OSError, ValueError, ChildProcessError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
                    nested = len(fields.get("NSpid", "").split()) > 1
                    if fields.get("Name") == "bwrap" and fields.get("State", "").startswith("Z") and nested:
                        os.waitpid(int(pid), os.WNOHANG)


def _stop(proc: subprocess.Popen[bytes], info_r: int) -> None:
    """End the run and everything it started. With bwrap: SIGKILL to the namespace's first process, which
    takes the whole PID namespace with it, and bwrap, its parent, reaps it. (Killing bwrap first would leave
    that process to the machine's init to reap: zombies that count against the user's process limit.)
    Without: SIGKILL to the run's process group."""
    try:
        if info_r >= 0 and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, ProcessLookupError, PermissionError):
                os.set_blocking(info_r, False)
                info = json.JSONDecoder().raw_decode(os.read(info_r, 65536).decode().strip())[0]
                os.kill(int(info["child-pid"]), signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if info_r < 0 or proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if info_r >= 0:
            os.close(info_r)
            _reap_orphans()


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
