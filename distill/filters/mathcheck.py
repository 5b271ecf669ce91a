"""Math answers compared with math-verify, with a hard wall-clock limit the caller enforces.

math-verify's own timeouts use SIGALRM, which silently does nothing off the main thread, and sympy can
run for minutes on a pathological expression. So verification runs in a child process that the
caller owns: each (gold, answer) pair gets `timeout_s` of wall clock, after which the child is killed
and a fresh one started; the pair is reported as a time-out, never a hang.

Samples of one prompt mostly agree, so verdicts are cached by (gold, answer), and each gold is parsed
once in the child.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CORRECT, WRONG, TIMEOUT, BAD_GOLD = "correct", "wrong", "timeout", "bad_gold"
_AMBIGUOUS = re.compile(r"[,\s]")  # a decimal comma, a thousands separator, a list: its forms read differently
STARTUP_S = 300


EXTRACTION = ("latex", "expr")  # what the filter reads answers as: LaTeX, then plain expressions


def _configs(kinds: tuple[str, ...] = EXTRACTION) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    made = {"latex": LatexExtractionConfig, "expr": ExprExtractionConfig}
    return [made[k]() for k in kinds]


def _forms(text: str) -> tuple[str, ...]:
    """The ways to hand `text` to math-verify, most likely first. Text that already marks its math ($...$,
    \\(...\\), \\boxed{}) is read only as written: wrapped once more, a sentence around a formula would read as
    one formula (and `$ 9 $` split over lines, which math-verify refuses, would pass). A bare answer (a box's
    content: `1/2`, `\\frac12`, `1,22`) is tried in `$...$`, as plain text, then as a box."""
    if any(mark in text for mark in ("$", "\\(", "\\[", "\\boxed")):
        return (text,)
    return (f"${text}$", text, f"\\boxed{{{text}}}")


def _parse_any(text: str, configs: list[Any], fallback: bool = True) -> list[Any]:
    """A gold or an answer in any usual form: its first form that parses.

    Without `fallback`, text that parses as nothing gives [] instead of itself as a string: a gold
    answer must mean something, or no answer can be checked against it.
    """
    return next(_readings(text, configs, fallback), [])


def _readings(text: str, configs: list[Any], fallback: bool = True) -> Iterator[list[Any]]:
    """Every form of `text` that parses, in `_forms` order."""
    from math_verify import parse

    mode = "first_match" if fallback else "no_fallback"
    for form in _forms(text):
        parsed = parse(form, extraction_config=configs, fallback_mode=mode, parsing_timeout=None)
        if parsed:
            yield parsed


def _verify(gold: str, candidates: list[str], golds: dict[str, list[Any]], configs: list[Any]) -> str:
    from math_verify import verify

    if gold not in golds:
        golds[gold] = _parse_any(gold, configs, fallback=False)
    parsed_gold = golds[gold]
    if not parsed_gold:
        return BAD_GOLD
    for cand in candidates:
        # A reading of the answer that equals the gold counts (`1,22` is 1.22 read as plain text, as math-verify
        # means it, and {1, 22} in `$...$`). Only a comma or a space can make the readings differ: any other
        # answer is read once, so a wrong `537` costs one parse, not three.
        readings = _readings(cand, configs)
        for answer in readings if _AMBIGUOUS.search(cand) else [next(readings, [])]:
            if answer and verify(parsed_gold, answer, timeout_seconds=None):
                return CORRECT
    return WRONG


def _serve(conn: Any, kinds: tuple[str, ...] = EXTRACTION) -> None:  # the child's loop
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": we enforce it ourselves
    configs = _configs(kinds)
    golds: dict[str, list[Any]] = {}
    _verify("1", ["1"], {}, configs)  # imports and the parsers' first use, before any pair's clock starts
    conn.send("ready")
    while True:
        batch = conn.recv()
        if batch is None:
            return
        for key, gold, candidates in batch:
            try:
                result = _verify(gold, candidates, golds, configs)
            except Exception:  # sympy and the LaTeX parser raise many kinds on odd input
                result = WRONG
            conn.send((key, result))


@dataclass
class MathChecker:
    timeout_s: float = 5.0
    extraction: tuple[str, ...] = EXTRACTION  # the benchmark of math-verify's own cases reads some as LaTeX only
    cache: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    timeouts: int = 0
    _proc: Any = None
    _conn: Any = None

    def _start(self) -> None:
        # fork: the child inherits the imported modules, cheap when the caller is single-threaded (a pool
        # worker). A threaded caller (a Ray worker runs gRPC and event-loop threads) must not fork: the child
        # can inherit a lock some other thread held and hang, which would read as verify timeouts.
        ctx = mp.get_context("fork" if threading.active_count() == 1 else "forkserver")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.extraction), daemon=True)
        self._proc.start()
        child.close()
        # A fresh (forkserver) child imports sympy and math-verify first: seconds, and not any pair's time.
        if not self._conn.poll(STARTUP_S) or self._conn.recv() != "ready":
            self._kill()
            raise RuntimeError(f"the math-verify process did not start within {STARTUP_S} s")

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
            self._proc.join(timeout=1)
            self._kill()

    def check(self, items: list[tuple[str, list[str]]]) -> list[str]:
        """The verdict of each (gold, candidate answers): correct, wrong, timeout or bad_gold."""
        keys = [(gold, tuple(cands)) for gold, cands in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        while todo:
            if self._proc is None:
                self._start()
            self._conn.send([(i, gold, list(cands)) for i, (gold, cands) in enumerate(todo)])
            done = 0
            for _ in range(len(todo)):
                if not self._conn.poll(self.timeout_s):
                    break
                i, result = self._conn.recv()
                self.cache[todo[i]] = result
                done += 1
            if done == len(todo):
                break
            # The pair in progress ran out of time: kill the child, record it, go on with the rest.
            self._kill()
            self.cache[todo[done]] = TIMEOUT
            self.timeouts += 1
            todo = todo[done + 1 :]
        return [self.cache[k] for k in keys]
