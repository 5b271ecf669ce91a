"""Every command in the README runs as printed (issue 29): its shell blocks, in order, in a fresh copy of the
checkout after `make demo`, offline, with `distill` reached the way the README says (no venv on the PATH
until its `source .venv/bin/activate`). Each must exit 0, and where the README shows what a command prints,
every shown line that carries a number must be a line the command prints now (times and rates aside).

A command the README shows but this test cannot run offline says why beside it, as a comment the test reads:
`$ make efficacy   # not run by the README test: ...`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DEMO_LOG, REAL, REPO, serve_once

README = REPO / "README.md"
NOT_RUN = re.compile(r"#\s*not run by the README test:\s*(?P<why>\S.*)$")
STATE = ("source ", "export ")  # lines that change the shell the later commands run in
SERVERS = ("distill view ",)  # run until Ctrl-C: started, asked for a page, stopped


@dataclass
class Command:
    line: int  # in README.md
    text: str  # as a shell reads it (continuation lines joined)
    shown: list[str] = field(default_factory=list)  # the output printed under it in the README
    not_run: str | None = None


def commands(text: str) -> list[Command]:
    """The `$ ` lines of the README's fenced blocks, with the lines shown under each."""
    found: list[Command] = []
    block: list[tuple[int, str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if block is not None:
                found += _block(block)
            block = None if block is not None else []
            continue
        if block is not None:
            block.append((number, line))
    return found


def _block(lines: list[tuple[int, str]]) -> list[Command]:
    out: list[Command] = []
    i = 0
    while i < len(lines):
        number, line = lines[i]
        if line.startswith("$ "):
            parts = [line[2:]]
            while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i][1])
            text = "\n".join(parts)
            why = NOT_RUN.search(parts[-1])
            out.append(Command(number, text, not_run=why.group("why") if why else None))
        elif out:
            out[-1].shown.append(line)
        i += 1
    return out


# Figures that differ run to run by nature: durations, rates, clock times, ETAs.
VARIES = [
    (re.compile(r"\b\d[\d,]*(\.\d+)?\s?(s|ms|min|h)\b"), "<time>"),
    (re.compile(r"\b\d[\d,]*(\.\d+)?\s?(req|tok|rows|traces|steps|it|examples)/s\b"), "<rate>"),
    (re.compile(r"\b\d+:\d\d(:\d\d)?\b"), "<clock>"),
]


def normal(line: str) -> str:
    for pattern, name in VARIES:
        line = pattern.sub(name, line)
    return " ".join(line.split())


def numbers_that_differ(shown: list[str], printed: str) -> list[str]:
    """The shown lines with a number (other than a time or rate) that the command did not print. A `...` inside
    a shown line stands for what differs from machine to machine (a path, a count of this kernel)."""
    now = [normal(line) for line in printed.splitlines()]
    out = []
    for line in shown:
        n = normal(line)
        if n in ("...", "") or not re.search(r"\d", n.replace("<time>", "").replace("<rate>", "")):
            continue
        pattern = re.compile(".*".join(map(re.escape, n.split("..."))))
        if not any(pattern.fullmatch(p) for p in now):
            out.append(line.strip())
    return out


def test_the_readme_commands_are_found_with_their_reasons() -> None:
    found = commands(README.read_text())
    texts = [c.text for c in found]
    assert texts[0] == "make demo" and "source .venv/bin/activate" in texts[1]  # the PATH before any distill
    assert len(found) >= 20
    assert all(c.not_run.strip() for c in found if c.not_run is not None)
    assert sum(c.not_run is None for c in found) >= 15  # most run
    block = commands("```\n$ distill a --x \\\n    --y 1\nout 1\n...\n$ b  # not run by the README test: why\n```\n")
    assert [(c.text, c.shown, c.not_run) for c in block] == [
        ("distill a --x \\\n    --y 1", ["out 1", "..."], None), ("b  # not run by the README test: why", [], "why")
    ]  # fmt: skip


def test_a_changed_number_is_caught_and_a_changed_time_is_not() -> None:
    printed = "pipeline demo: 11 done in 97.6s -> runs/demo\n  eval  pass@1 22.5 ± 6.2, 694 req/s, 0:12 left\n"
    assert numbers_that_differ(["pipeline demo: 11 done in 104.4s -> runs/demo"], printed) == []
    assert numbers_that_differ(["  eval  pass@1 22.5 ± 6.2, 9 req/s, 1:40 left", "...", "no digits"], printed) == []
    assert numbers_that_differ(["  eval  pass@1 20.0 ± 6.2, 694 req/s, 0:12 left"], printed) == [
        "eval  pass@1 20.0 ± 6.2, 694 req/s, 0:12 left"
    ]
    assert numbers_that_differ(["  eval  pass@1 22.5 ± ... left"], printed) == []  # `...`: what varies by machine
    assert numbers_that_differ(["  eval  pass@1 25.5 ± ... left"], printed) == ["eval  pass@1 25.5 ± ... left"]


@pytest.fixture
def newcomer(demo_workspace: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the checkout as `make demo` left it, ../shared beside it as beside ours, and the shell
    of someone who has not activated the venv, with no model hub to reach."""
    ws = tmp_path / "c"
    shutil.copytree(demo_workspace, ws, symlinks=True, ignore=shutil.ignore_patterns("runs", ".demo-output"))
    shutil.copytree(demo_workspace / ".demo-output", ws / "runs" / "demo", symlinks=True)
    if REAL is not None:  # the README's ../shared/real, wherever this machine keeps it (tests/conftest.py)
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "real").symlink_to(REAL)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not p.rstrip("/").endswith(".venv/bin")]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PATH=os.pathsep.join(path), HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    return ws, env


@pytest.mark.timeout(2400)  # `make demo` (the fixture, when this test is the first to ask) and ~20 commands
def test_every_readme_command_runs_as_printed(newcomer: tuple[Path, dict[str, str]]) -> None:
    ws, env = newcomer
    state: list[str] = []  # `source ...` lines: the shell every later command runs in
    failures: list[str] = []
    ran = 0
    for c in commands(README.read_text()):
        if c.not_run is not None:
            continue
        where = f"README.md:{c.line}: $ {c.text.splitlines()[0]}"
        if c.text.startswith(STATE):
            state.append(c.text)
            continue
        if REAL is None and re.search(r"\.\./shared/real|runs/real\b(?!-)", c.text):  # the public data is not here
            continue
        if c.text == "make demo":  # the fixture ran it, in this checkout: its output as it printed it
            code, printed = 0, (ws / DEMO_LOG).read_text()
        elif c.text.startswith(SERVERS):
            code, printed = _serve(c.text, state, ws, env)
        else:
            r = subprocess.run(["bash", "-c", "\n".join([*state, c.text])], cwd=ws, env=env, capture_output=True,
                               text=True, timeout=900)  # fmt: skip
            code, printed = r.returncode, r.stdout + r.stderr
        ran += 1
        if code != 0:
            failures.append(f"{where}\n  exit {code}: {printed.strip()[-1500:]}")
            continue
        differ = numbers_that_differ(c.shown, printed)
        if differ:
            failures.append(f"{where}\n  the README shows lines it no longer prints:\n    " + "\n    ".join(differ)
                            + "\n  it printed:\n    " + "\n    ".join(printed.strip().splitlines()[-40:]))  # fmt: skip
    assert ran >= 15
    assert not failures, "\n\n".join(failures)


def _serve(command: str, state: list[str], ws: Path, env: dict[str, str]) -> tuple[int, str]:
    """A server command as printed (its default port): its first page's data, then stopped with Ctrl-C."""
    code, said, body = serve_once(["bash", "-c", "\n".join([*state, f"exec {command}"])], ws, env)
    return (code if body is not None else code or 1), said + (body or "")
