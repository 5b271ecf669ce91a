"""Per-chunk journals: every finished sample is on disk the moment it arrives, long before its shard.

A chunk of prompts becomes one shard only when all its samples are in, which at R1 lengths can take
hours. Meanwhile each result is appended to `DIR/.work/journal/chunk-NNNNN.jsonl` with one `write(2)`, so a
killed client (SIGKILL included: the kernel keeps what was written) loses only the requests in
flight; `fsync` runs every few seconds against power loss. On resume the journal is read back, a line
torn by the kill is dropped, and only the missing (id, sample) pairs are requested again. Once the
shard is committed the journal is deleted. A journal is data in flight, not output: dataset readers
never look in `.work/`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import orjson

from distill.store import WORK

JOURNALS = Path(WORK) / "journal"
SYNC_EVERY_S = 5.0


def journal_path(root: Path, index: int) -> Path:
    return root / JOURNALS / f"chunk-{index:05d}.jsonl"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._synced = time.monotonic()

    def load(self) -> dict[tuple[str, int], dict[str, Any]]:
        """The results written so far, by (id, sample); the first of duplicates wins.

        A torn last line (the process died mid-write) is cut off the file, so appends continue on a
        clean line boundary.
        """
        out: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return out
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = orjson.loads(line)
                key = (row["id"], int(row["sample"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            out.setdefault(key, row)
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return out

    def append(self, row: dict[str, Any]) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, orjson.dumps(row) + b"\n")  # one write: a kill leaves whole lines or a torn last one
        if time.monotonic() - self._synced > SYNC_EVERY_S:
            os.fsync(self._fd)
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
