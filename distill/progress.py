"""Progress bars (rows/s, ETA) on stderr, and the one-line summary every stage ends with."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from distill.store import Manifest, StageResult, totals

_console = Console(stderr=True)


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "– rows/s", style="progress.data.speed")


class StageProgress:
    """A bar of input rows done; rejected rows are counted beside it."""

    def __init__(self, name: str, total: int, done: int = 0, enabled: bool = True) -> None:
        self.name = name
        self.rejected: Counter[str] = Counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TextColumn("{task.fields[rejected]}"),
            TimeRemainingColumn(),
            console=_console,
            disable=not (enabled and _console.is_terminal),  # no bar (nor its blank line) in logs
            transient=True,
        )
        self._task = self._progress.add_task(name, total=total, completed=done, rejected="")

    def __enter__(self) -> StageProgress:
        self._progress.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def advance(self, rows: int, rejected: Counter[str] | None = None) -> None:
        if rejected:
            self.rejected.update(rejected)
        n = sum(self.rejected.values())
        self._progress.update(self._task, advance=rows, rejected=f"{n:,} rejected" if n else "")


def summary_line(name: str, manifest: Manifest, seconds: float, out: Path, *, skipped: bool = False) -> str:
    """`filter: 10,000 rows in -> 9,800 out, 200 rejected (malformed_json 150, ...) in 3.2s -> DIR`"""
    t = totals(manifest)
    rejected = ""
    removed = manifest.stats.get("report", {}).get("removed", {})
    if sum(removed.values()):
        rejected += f", {sum(removed.values()):,} removed (" + ", ".join(f"{k} {v:,}" for k, v in removed.items()) + ")"
    if t["rejected"]:
        by_code = ", ".join(f"{code} {n:,}" for code, n in t["rejects_by_code"].items())
        rejected += f", {t['rejected']:,} rejected ({by_code})"
    state = "already done, skipped" if skipped else f"in {seconds:.1f}s"
    return f"{name}: {t['rows_in']:,} rows in -> {t['rows_out']:,} out{rejected} {state} -> {out}"


class GenerateProgress:
    """Teacher requests: a bar of samples done, with requests/s, tokens/s, errors by kind and the ETA."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TextColumn("{task.fields[errors]}", style="yellow"),
            TimeRemainingColumn(),
            console=_console,
            disable=not (enabled and _console.is_terminal),
            transient=True,
        )
        self._task = self._progress.add_task("generate", total=total, completed=done, rates="", errors="")
        self._window: list[tuple[float, int, int]] = []  # (time, requests, completion tokens) marks
        self.requests = 0
        self.tokens = 0

    def __enter__(self) -> GenerateProgress:
        self._progress.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def advance(
        self, requests: int, completion_tokens: int, errors: Counter[str] | None = None, rate_wait_s: float = 0.0,
        finished: int | None = None,
    ) -> None:  # fmt: skip
        """`rate_wait_s`: time so far that sending waited for the teacher's requests/tokens per minute; `finished`:
        what the bar counts when it is not requests (prompts decided, under `generate --preset`)."""
        import time

        self.requests += requests
        self.tokens += completion_tokens
        now = time.monotonic()
        if self._window and now - self._window[-1][0] < 0.5:  # redraw the rates twice a second at most
            self._progress.update(self._task, advance=requests if finished is None else finished)
            return
        self._window = [m for m in self._window if now - m[0] < 10.0] + [(now, self.requests, self.tokens)]
        t0, r0, k0 = self._window[0]
        span = max(now - t0, 1e-9)
        rates = f"{(self.requests - r0) / span:,.0f} req/s {(self.tokens - k0) / span:,.0f} tok/s" if span > 0.4 else ""
        shown = ", ".join(f"{k} {v:,}" for k, v in (errors or Counter()).most_common(3))
        if rate_wait_s >= 1:
            shown = ", ".join(x for x in (f"waited {rate_wait_s:,.0f}s for the rate limit", shown) if x)
        step = requests if finished is None else finished
        self._progress.update(self._task, advance=step, rates=rates, errors=shown)


def print_result(stage_name: str, result: StageResult, out: Path) -> None:
    for line in result.redone:
        print(f"  redo  {line}", file=sys.stderr)
    print(
        summary_line(stage_name, result.manifest, result.seconds, out, skipped=result.skipped),
        file=sys.stderr,
    )
