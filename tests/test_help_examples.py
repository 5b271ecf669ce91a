"""Every example in every command's `--help` runs as written, in a copy of the checkout's recipes, after the
first one (`distill run pipelines/demo.yaml --out runs/demo`) has made the demo's outputs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from distill.cli import app
from tests.conftest import DISTILL, run_cli, serve_once

FIRST = "distill run pipelines/demo.yaml --out runs/demo"


def examples() -> list[str]:
    docs = [app.info.help or ""] + [c.callback.__doc__ or "" for c in app.registered_commands]
    found = []
    for doc in docs:
        _, _, section = doc.partition("Example:")
        found += [line.strip() for line in section.splitlines() if line.strip().startswith("distill ")]
    return found


def test_the_examples_are_found_and_the_demo_comes_first() -> None:
    found = examples()
    assert FIRST in found and len(found) >= 15
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    shown = {shlex.split(e)[1] for e in found}
    assert names - shown == set(), "a command without an example"


@pytest.fixture(scope="module")
def workspace(demo_workspace: Path) -> Path:
    """The checkout after `make demo` (which runs FIRST); the examples write beside its runs/demo."""
    # The demo's student learns: above zero on its held-out problems, and above itself untrained.
    learned = json.loads((demo_workspace / "runs" / "demo" / "learned" / "comparison.json").read_text())["table"]
    trained, untrained = learned["trained"]["pass@1"]["mean"], learned["untrained"]["pass@1"]["mean"]
    assert trained >= 10 and trained > untrained, learned
    return demo_workspace


@pytest.mark.parametrize("example", [e for e in examples() if e != FIRST])
def test_every_help_example_runs(workspace: Path, example: str) -> None:
    from distill.filters.sandbox import probe

    args = shlex.split(example)[1:]
    if args[0] == "view":  # a server: it runs until Ctrl-C; the example must serve its directory
        return _serves(args, workspace)
    r = run_cli(*args, cwd=workspace, timeout=900)
    expected = 1 if args[0] == "doctor" and not probe("bwrap").ok else 0  # doctor's verdict on this machine
    assert r.returncode == expected, f"{example}\n{r.stderr[-3000:]}"


def _serves(args: list[str], workspace: Path) -> None:
    code, said, body = serve_once([*DISTILL, *args, "--port", "0"], workspace)
    assert body is not None, said
    assert json.loads(body)["datasets"]
    assert code == 0
