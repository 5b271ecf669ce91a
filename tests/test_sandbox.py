"""Hostile programs in the code verifier's sandbox, run twice: as root (as CI runs) and as an ordinary
unprivileged user (uid 65534, as a Slurm job runs). Each is contained, a correct solution still passes,
nothing is left running, no file is left behind and nothing is read from the caller's home."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.filters.sandbox import Limits, last_code_block, parse_tests, probe, run_python, run_tests
from tests.conftest import REPO

LIMITS = Limits(timeout_s=4, cpu_s=4, memory_mb=512, file_mb=8, processes=16)
SUM = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})
ANSWER = "a, b = map(int, input().split())\nprint(a + b)\n"
TOKEN = "hf_distill_test_secret_token"

needs_bwrap = pytest.mark.skipif(not probe("bwrap").ok, reason=f"no isolation here: {probe('bwrap').why}")


def hostile_suite(home: str, port: int, marker: str) -> list[dict]:
    """Each attack is written to pass its test only if it succeeds: contained means not passed (or, for
    the attacks that only leave something behind, passed with nothing left behind)."""
    escape = f"/tmp/{marker}"
    return [
        {"name": "secrets in the environment", "expect": "code_failed",
         "code": "import os\nsecret = os.environ.get('HF_TOKEN', '') + open('/proc/1/environ').read()\n"
                 "assert 'hf_' in secret\n" + ANSWER},
        {"name": "a token file in the caller's home", "expect": "code_failed",
         "code": f"open({home + '/.cache/huggingface/token'!r}).read()\n" + ANSWER},
        {"name": "a socket to 127.0.0.1", "expect": "code_failed",
         "code": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                 "s.sendall(b'leak')\n" + ANSWER},
        {"name": "a fork tree", "expect": "passed",
         "code": "import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        os.fork()\n"
                 "        time.sleep(600)\n" + ANSWER},
        {"name": "a fork bomb", "expect": "failed",
         "code": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"},
        {"name": "20 GB allocation", "expect": "code_failed", "detail": "MemoryError",
         "code": "x = bytearray(20 * 1024**3)\n" + ANSWER},
        {"name": "a 10 GB file", "expect": "code_failed", "detail": "too large",
         "code": "f = open('big', 'wb')\nfor _ in range(10 * 1024):\n    f.write(b'x' * (1 << 20))\n" + ANSWER},
        {"name": "many small files", "expect": "code_failed", "detail": "No space left",
         "code": "for i in range(100000):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))\n" + ANSWER},
        {"name": "sleep forever", "expect": "code_timeout", "code": "import time\ntime.sleep(10**6)\n" + ANSWER},
        {"name": "detached children (setsid, double fork)", "expect": "passed",
         "code": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                 f"        time.sleep(1.5)\n        open({escape!r}, 'w').write('escaped')\n"
                 f"        open({home + '/escaped'!r}, 'w').write('escaped')\n        time.sleep(600)\n"
                 "    os._exit(0)\nos.wait()\n" + ANSWER},
        {"name": "a correct solution", "expect": "passed", "code": ANSWER},
    ]  # fmt: skip


class Listener:
    """A TCP server on the host's 127.0.0.1: did anything reach it?"""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def _stray_processes() -> list[str]:
    """Programs of a sandboxed run still alive anywhere on the machine."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "-I -S " in cmd and "main.py" in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _run_suite(runner, tmp: Path, sandbox: str = "bwrap") -> None:
    """The whole suite through `runner(cases, home)` -> outcomes; then the machine is checked."""
    home = tmp / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(TOKEN)
    marker = f"distill-escape-{uuid.uuid4().hex[:8]}"
    listener = Listener()
    tmp_before = set(os.listdir("/tmp"))
    cases = hostile_suite(str(home), listener.port, marker)
    started = time.perf_counter()
    outcomes = runner(cases, home, sandbox)
    assert time.perf_counter() - started < 120
    for case, got in zip(cases, outcomes, strict=True):
        what = f"{case['name']}: {got}"
        if case["expect"] == "passed":
            assert got["passed"], what
        elif case["expect"] == "failed":
            assert not got["passed"], what
        else:
            assert not got["passed"] and got["reason"] == case["expect"], what
            assert case.get("detail", "").lower() in got["detail"].lower(), what
    time.sleep(2.5)  # the detached grandchild would write its file after 1.5 s
    deadline = time.time() + 5
    while _stray_processes() and time.time() < deadline:
        time.sleep(0.2)
    assert _stray_processes() == []  # nothing left running
    assert listener.accepted == 0  # nothing reached the host's loopback
    assert not Path(f"/tmp/{marker}").exists() and not (home / "escaped").exists()  # nothing written outside
    assert not {p for p in set(os.listdir("/tmp")) - tmp_before if p.startswith(("distill-sbx-", "distill-escape"))}
    assert sorted(p.name for p in home.rglob("*")) == [".cache", "huggingface", "token"]


def _in_process(cases: list[dict], home: Path, sandbox: str) -> list[dict]:
    limits = Limits(**{**LIMITS.__dict__, "sandbox": sandbox})
    os.environ["HF_TOKEN"] = TOKEN
    try:
        return [run_tests(c["code"], SUM, limits).__dict__ for c in cases]
    finally:
        del os.environ["HF_TOKEN"]


_CHILD = """
import json, sys
from distill.filters.sandbox import Limits, run_tests
cases, limits = json.load(sys.stdin)
print(json.dumps([run_tests(c["code"], %r, Limits(**limits)).__dict__ for c in cases]))
"""


def as_unprivileged(argv: list[str], tmp: Path, *, home: Path, stdin: str = "", extra_env: dict | None = None):
    """`argv` (a Python command line, `python` first) as uid 65534 with the caller's secrets in its
    environment, the way a cluster job runs. These machines keep the interpreter under /root (mode 0700):
    as root, a private mount namespace shows uid 65534 that one installation, and this checkout, at
    their own paths; /root itself stays closed outside it and empty inside it."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "HF_TOKEN": TOKEN, "LANG": "C.UTF-8", **(extra_env or {})}
    site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    if os.geteuid() != 0:  # already an ordinary user: run as we are
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *site])
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=300)
    stage = tmp / "stage"
    for d in ("repo", "py"):
        (stage / d).mkdir(parents=True)
    os.chmod(tmp, 0o755)
    os.chmod(stage, 0o755)
    prefix = sys.base_prefix
    repo_site = [str(stage / "repo" / Path(p).relative_to(REPO)) for p in site if p.startswith(str(REPO))]
    env["PYTHONPATH"] = os.pathsep.join([str(stage / "repo"), *repo_site])
    script = (
        f'set -e; mount --bind "{REPO}" "{stage}/repo"; mount --bind "{prefix}" "{stage}/py"; '
        "mount -t tmpfs -o mode=0755,size=1m tmpfs /root; "
        f'mkdir -p "{prefix}"; mount --bind "{stage}/py" "{prefix}"; '
        'exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i "$@"'
    )
    env_args = [f"{k}={v}" for k, v in env.items()]
    python = os.path.join(prefix, "bin", os.path.basename(os.path.realpath(sys.executable)))
    argv = [python, *argv[1:]]
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *env_args, *argv]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)


def _unprivileged(tmp: Path):
    def run(cases: list[dict], home: Path, sandbox: str) -> list[dict]:
        os.chown(home, 65534, 65534)
        for p in home.rglob("*"):
            os.chown(p, 65534, 65534)
        limits = {**LIMITS.__dict__, "sandbox": sandbox}
        r = as_unprivileged([sys.executable, "-c", _CHILD % SUM], tmp, home=home, stdin=json.dumps([cases, limits]))
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def scratch() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="distill-test-"))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the root half of the suite needs root (CI runs as root)")
def test_hostile_suite_is_contained_when_distill_runs_as_root(scratch: Path) -> None:
    _run_suite(_in_process, scratch)


@needs_bwrap
def test_hostile_suite_is_contained_when_distill_runs_as_an_unprivileged_user(scratch: Path) -> None:
    _run_suite(_unprivileged(scratch), scratch)


def test_unsafe_rlimits_only_still_kills_the_run_and_empties_the_environment(scratch: Path) -> None:
    """The explicit opt-out: no namespaces, but limits, an empty environment and the process group hold."""
    limits = Limits(**{**LIMITS.__dict__, "sandbox": "unsafe-rlimits-only"})
    os.environ["HF_TOKEN"] = TOKEN
    try:
        _, out, _ = run_python("import os\nprint(sorted(os.environ))", "", limits, 10)
    finally:
        del os.environ["HF_TOKEN"]
    assert "HF_TOKEN" not in out and "PATH" in out
    assert run_tests("import time\ntime.sleep(10**6)", SUM, limits).reason == "code_timeout"
    assert run_tests("x = bytearray(20 * 1024**3)", SUM, limits).reason == "code_failed"
    assert run_tests(ANSWER, SUM, limits).passed
    assert _stray_processes() == []


def test_code_block_and_test_formats() -> None:
    assert last_code_block("text\n```python\nprint(1)\n```\nmore\n```py\nprint(2)\n```") == "print(2)"
    assert last_code_block("no code") is None
    assert parse_tests(json.dumps([{"input": "1", "output": "2"}])) == ([("1", "2")], "")
    assert parse_tests(json.dumps({"test": "assert f()"})) == ([], "assert f()")


@needs_bwrap
def test_correct_code_passes_both_kinds_of_tests() -> None:
    assert run_tests(ANSWER, SUM, LIMITS).passed
    asserts = json.dumps({"asserts": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]})
    assert run_tests("def add(a, b):\n    return a + b", asserts, LIMITS).passed
    assert run_tests("def add(a, b):\n    return a - b", asserts, LIMITS).reason == "code_failed"
    status, _, err = run_python("print(open('/root/.bashrc').read())", "", LIMITS, 10)
    assert status != 0 and "No such file" in err  # there is no /root in the sandbox at all
