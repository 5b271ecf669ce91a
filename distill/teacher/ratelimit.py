"""Requests and tokens per minute for hosted APIs with quotas (`requests_per_minute`, `tokens_per_minute`).

A sliding window of the last minute, one per run, shared by every endpoint: a request is sent only
when the requests sent in the window and their tokens leave room for it. Before it is sent a request is
counted as its body's UTF-8 bytes / 3 (more than a BPE tokenizer makes of the prompt and its JSON; providers
count the prompt) plus its expected completion (`max_tokens`, which is what providers hold against the quota
at send time, unless `expected_completion_tokens` says less); once it is back, as its `usage`.

Every send and every correction is appended to `DIR/.work/ratelimit.log` before the request leaves, so a run
killed and started again at once does not spend a second quota inside the same minute.

Hand-written: the rate-limit libraries on PyPI (aiolimiter, limits) count requests, or take a cost fixed at
acquisition; none corrects a cost afterwards or resumes a window from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from distill.store import atomic_write_bytes

# A minute, plus a second: the provider counts requests when they arrive, and a request sent in a burst can
# take longer to arrive than one sent alone a minute later (measured: 3 over a quota of 50 without it).
WINDOW_S = 61.0
LOG = "ratelimit.log"


@dataclass
class _Sent:
    at: float  # time.monotonic() when it was let through
    tokens: int
    ticket: int


class RateLimiter:
    """`ticket = await acquire(tokens)` before sending; `settle(ticket, tokens)` once the usage is known."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None, log: Path | None = None):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.window: deque[_Sent] = deque()
        self.by_ticket: dict[int, _Sent] = {}
        self.tokens = 0  # in the window
        self.waited_s = 0.0  # time sending was held back by a limit (wall time: one waiter at a time)
        self._next = 0
        self._turn = asyncio.Lock()  # requests wait their turn in order (asyncio.Lock wakes waiters FIFO)
        self._settled = asyncio.Event()
        self._log = None
        if log is not None:
            self._resume(log)
            self._log = open(log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed by close())

    def _resume(self, log: Path) -> None:
        """Load the sends of the last minute from an earlier run's log and rewrite it with only those."""
        now_wall, now = time.time(), time.monotonic()
        sent: dict[int, list[float]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in log.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                with contextlib.suppress(ValueError, IndexError):
                    if parts[0] == "=":  # a correction: = ticket tokens
                        if int(parts[1]) in sent:
                            sent[int(parts[1])][1] = float(parts[2])
                    else:  # a send: wall_time ticket tokens
                        sent[int(parts[1])] = [float(parts[0]), float(parts[2])]
        kept = sorted((at, ticket, tokens) for ticket, (at, tokens) in sent.items() if now_wall - at < WINDOW_S)
        for at, ticket, tokens in kept:
            self._add(now - (now_wall - at), int(tokens), ticket)
        self._next = max(sent, default=-1) + 1
        log.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(log, "".join(f"{at:.3f} {ticket} {int(tokens)}\n" for at, ticket, tokens in kept).encode())

    def _add(self, at: float, tokens: int, ticket: int) -> None:
        entry = _Sent(at, tokens, ticket)
        self.window.append(entry)
        self.by_ticket[ticket] = entry
        self.tokens += tokens

    def _expire(self, now: float) -> None:
        while self.window and now - self.window[0].at >= WINDOW_S:
            old = self.window.popleft()
            self.tokens -= old.tokens
            del self.by_ticket[old.ticket]

    def _wait(self, now: float, tokens: int) -> float:
        """Seconds until the window has room for one more request of `tokens`, 0 when it has room now."""
        wait = 0.0
        if self.rpm is not None and len(self.window) >= self.rpm:
            wait = self.window[len(self.window) - self.rpm].at + WINDOW_S - now
        if self.tpm is not None and self.tokens + tokens > self.tpm:
            need, freed = self.tokens + tokens - self.tpm, 0
            for entry in self.window:  # oldest first: the time at which enough of them have left
                freed += entry.tokens
                if freed >= need:
                    wait = max(wait, entry.at + WINDOW_S - now)
                    break
        return max(0.0, wait)

    async def acquire(self, tokens: int) -> int:
        # A request larger than the whole quota could never fit: it waits for an empty window and goes alone.
        tokens = min(tokens, self.tpm) if self.tpm is not None else tokens
        async with self._turn:
            while True:
                now = time.monotonic()
                self._expire(now)
                wait = self._wait(now, tokens)
                if wait <= 0:
                    break
                # a request in flight coming back for less than it was counted makes room sooner: wake for it
                self._settled.clear()
                began = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), wait)
                self.waited_s += time.monotonic() - began
            ticket, self._next = self._next, self._next + 1
            if self._log is not None:  # on disk before the request leaves (a kill -9 loses no send)
                self._log.write(f"{time.time():.3f} {ticket} {tokens}\n")
            self._add(time.monotonic(), tokens, ticket)
            return ticket

    def settle(self, ticket: int, tokens: int) -> None:
        """The request's real cost (its usage; its prompt alone when it failed)."""
        entry = self.by_ticket.get(ticket)
        if entry is None:  # already out of the window
            return
        tokens = min(tokens, self.tpm) if self.tpm is not None else tokens
        self.tokens += tokens - entry.tokens
        entry.tokens = tokens
        self._settled.set()
        if self._log is not None:
            self._log.write(f"= {ticket} {tokens}\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
