"""Decontamination: which benchmark problem, if any, a prompt contains.

A prompt is contaminated when it shares an n-gram of normalized words (13 by default; open-r1 uses
8) with a benchmark problem: that catches a benchmark problem pasted inside a longer prompt, re-spaced
or re-cased. A benchmark problem shorter than n words is matched whole. Answers are never compared.

The index is two sorted NumPy arrays (n-gram hash -> benchmark item) saved beside the stage's work,
so each worker process maps it once, and a lookup is one vectorized `searchsorted` per prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from distill.errors import UserError

if TYPE_CHECKING:
    from distill.inputs import InputFile
from distill.normalize import words

PROBLEM_COLUMNS = ("problem", "Problem", "question", "Question", "prompt", "input")
ID_COLUMNS = ("id", "ID", "unique_id", "problem_id", "question_id", "task_id", "Record ID")
_SEP = "\x1f"


def gram_hashes(ws: list[str], n: int) -> np.ndarray:
    """xxh64 of every run of n consecutive words (stable across processes, unlike `hash()`)."""
    if len(ws) < n:
        return np.empty(0, np.uint64)
    return np.fromiter(
        (xxhash.xxh64_intdigest(_SEP.join(ws[i : i + n]).encode()) for i in range(len(ws) - n + 1)),
        np.uint64,
        count=len(ws) - n + 1,
    )


@dataclass
class BenchmarkIndex:
    n: int
    hashes: np.ndarray  # uint64, sorted
    items: np.ndarray  # int32: the benchmark item of each hash
    grams: np.ndarray  # int32: how many distinct n-grams each item has
    short_lengths: list[int]  # word counts of items shorter than n (indexed whole)
    ids: list[str]
    sources: list[str]

    def match(self, ws: list[str]) -> tuple[int, float] | None:
        """(item, share of the item's n-grams found in the prompt) of the best match, or None."""
        if not len(self.hashes):
            return None
        found = [gram_hashes(ws, self.n)] + [gram_hashes(ws, k) for k in self.short_lengths]
        h = np.unique(np.concatenate(found))
        if not len(h):
            return None
        pos = np.searchsorted(self.hashes, h)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == h
        if not hit.any():
            return None
        items = self.items[pos[hit]]
        counts = np.bincount(items)
        best = int(np.argmax(counts / np.maximum(self.grams[: len(counts)], 1)))
        return best, float(counts[best] / max(self.grams[best], 1))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, hashes=self.hashes, items=self.items, grams=self.grams)
        tmp.replace(path.with_suffix(".npz"))
        meta = {"n": self.n, "short_lengths": self.short_lengths, "ids": self.ids, "sources": self.sources}
        path.with_suffix(".json").write_text(json.dumps(meta))


@cache
def load_index(path: str) -> BenchmarkIndex:
    """Once per worker process."""
    arrays = np.load(Path(path).with_suffix(".npz"))
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    return BenchmarkIndex(
        meta["n"],
        arrays["hashes"],
        arrays["items"],
        arrays["grams"],
        meta["short_lengths"],
        meta["ids"],
        meta["sources"],
    )


def _column(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def build_index(files: list[InputFile], n: int) -> BenchmarkIndex:
    """Read the benchmark files (already resolved, any input format) and index the n-grams of their problems."""
    from distill import inputs

    hashes: list[np.ndarray] = []
    items: list[np.ndarray] = []
    grams: list[int] = []
    short: set[int] = set()
    ids: list[str] = []
    sources: list[str] = []
    for f in files:
        for chunk in inputs.plan([f], rows_per_shard=1 << 30):
            for batch in inputs.read_chunk(chunk, None, 4096):
                for row_no, row in zip(batch.rows, batch.table.to_pylist(), strict=True):
                    problem = _column(row, PROBLEM_COLUMNS)
                    if not isinstance(problem, str):
                        raise UserError(
                            f"--decontaminate {f.path}: row {row_no} has no problem text in any of the columns "
                            f"{', '.join(PROBLEM_COLUMNS)}; rename the problem column"
                        )
                    ws = words(problem)
                    k = n if len(ws) >= n else len(ws)
                    if k == 0:
                        continue
                    if k < n:
                        short.add(k)
                    h = np.unique(gram_hashes(ws, k))
                    item = len(ids)
                    hashes.append(h)
                    items.append(np.full(len(h), item, np.int32))
                    grams.append(len(h))
                    ident = _column(row, ID_COLUMNS)
                    ids.append(str(ident) if ident is not None else f"{f.source}:{row_no}")
                    sources.append(f.source)
    if not ids:
        return BenchmarkIndex(n, np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int32), [], [], [])
    all_hashes = np.concatenate(hashes)
    all_items = np.concatenate(items)
    order = np.argsort(all_hashes, kind="stable")
    return BenchmarkIndex(
        n, all_hashes[order], all_items[order], np.array(grams, np.int32), sorted(short), ids, sources
    )
