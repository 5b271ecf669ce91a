"""Hostile programs in the code verifier's sandbox: each is contained, reported, and the machine unharmed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from distill.filters.sandbox import Limits, last_code_block, parse_tests, run_python, run_tests

LIMITS = Limits(timeout_s=4, cpu_s=4, memory_mb=512, file_mb=8, processes=16)
SUM = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})


def _nobody_processes() -> list[str]:
    out = subprocess.run(["ps", "-u", "nobody", "-o", "pid=,cmd="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def machine_unharmed():
    """After every hostile run: no process of the sandbox user left, no stray files, free disk kept."""
    before = shutil.disk_usage("/tmp").free
    leftovers_before = set(os.listdir("/tmp"))
    yield
    deadline = time.time() + 5
    while _nobody_processes() and time.time() < deadline:
        time.sleep(0.1)
    assert _nobody_processes() == []
    assert not {p for p in set(os.listdir("/tmp")) - leftovers_before if p.startswith("distill-sbx-")}
    assert shutil.disk_usage("/tmp").free > before - (256 << 20)


def test_reading_secrets_finds_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    code = "import os, sys\nprint(sorted(os.environ.items()))\nprint(open('/proc/1/environ','rb').read())"
    _, out, _ = run_python(code, "", LIMITS, 10)
    assert "secret" not in out and "HF_TOKEN" not in out and "OPENAI" not in out


def test_reading_root_files_is_denied() -> None:
    status, _, err = run_python("print(open('/root/.bashrc').read()[:10])", "", LIMITS, 10)
    assert status != 0 and "Permission denied" in err


def test_a_socket_reaches_nothing() -> None:
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=3)\nprint('connected')"
    outcome = run_tests(code, SUM, LIMITS)
    assert outcome.reason == "code_failed" and "unreachable" in outcome.detail.lower()


def test_fork_bomb_is_contained() -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    started = time.perf_counter()
    outcome = run_tests(code, SUM, LIMITS)
    assert outcome.reason in ("code_timeout", "code_failed")
    assert time.perf_counter() - started < LIMITS.timeout_s + 5


def test_allocating_20_gb_fails_fast() -> None:
    outcome = run_tests("x = bytearray(20 * 1024**3)", SUM, LIMITS)
    assert outcome.reason == "code_failed" and "MemoryError" in outcome.detail


def test_writing_a_10_gb_file_stops_at_the_limit() -> None:
    code = "f = open('big', 'wb')\nfor _ in range(10 * 1024):\n    f.write(b'x' * (1 << 20))"
    outcome = run_tests(code, SUM, LIMITS)
    assert outcome.reason == "code_failed" and "too large" in outcome.detail.lower()


def test_many_small_files_fill_only_a_private_tmpfs() -> None:
    code = "import os\nfor i in range(100000):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))"
    outcome = run_tests(code, SUM, LIMITS)
    assert outcome.reason == "code_failed" and "No space left" in outcome.detail


def test_sleeping_forever_is_cut_at_the_wall_clock_limit() -> None:
    started = time.perf_counter()
    outcome = run_tests("import time\ntime.sleep(10**6)", SUM, LIMITS)
    assert outcome.reason == "code_timeout"
    assert time.perf_counter() - started < LIMITS.timeout_s + 3


def test_a_child_that_outlives_its_parent_dies_with_the_run() -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(10**6)\n"
        "a, b = map(int, input().split())\nprint(a + b)\n"
    )
    outcome = run_tests(code, SUM, LIMITS)
    assert outcome.passed  # the answer is right; the detached child is killed with the namespace


def test_correct_code_passes_both_kinds_of_tests() -> None:
    assert run_tests("a, b = map(int, input().split())\nprint(a + b)", SUM, LIMITS).passed
    asserts = json.dumps({"asserts": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]})
    assert run_tests("def add(a, b):\n    return a + b", asserts, LIMITS).passed
    assert run_tests("def add(a, b):\n    return a - b", asserts, LIMITS).reason == "code_failed"


def test_code_block_and_test_formats() -> None:
    assert last_code_block("text\n```python\nprint(1)\n```\nmore\n```py\nprint(2)\n```") == "print(2)"
    assert last_code_block("no code") is None
    assert parse_tests(json.dumps([{"input": "1", "output": "2"}])) == ([("1", "2")], "")
    assert parse_tests(json.dumps({"test": "assert f()"})) == ([], "assert f()")
