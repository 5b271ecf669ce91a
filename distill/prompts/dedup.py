"""Pass 2 of `distill prompts`: which rows go, and why, decided over the whole input at once.

In this order, and the first occurrence (in input order) always stays:
1. contaminated: the row contains a benchmark problem (found in pass 1);
2. exact_duplicate: its `id` (the hash of its matching form) was seen on an earlier row;
3. near_duplicate: MinHash LSH finds earlier rows that probably share many token shingles; a pair
   counts only when its estimated Jaccard similarity reaches the threshold and, with `same_numbers`,
   both problems have the same numbers (a template with other numbers is another problem).

Everything is NumPy over arrays of the whole input (1M prompts with 128 permutations: ~0.5 GB of
signatures), so the global pass takes seconds; datasketch's own LSH index keeps a Python dict entry
per row and band, about ten times the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.prompts.config import DedupConfig

KEPT, CONTAMINATED, EXACT, NEAR = 0, 1, 2, 3
REASONS = {CONTAMINATED: "contaminated", EXACT: "exact_duplicate", NEAR: "near_duplicate"}
_MIX = np.uint64(0x9E3779B97F4A7C15)
_VERIFY_CHUNK = 1 << 18


@dataclass
class Decisions:
    reason: np.ndarray  # int8, one of KEPT / CONTAMINATED / EXACT / NEAR per row
    matched: np.ndarray  # int64: the earlier row it duplicates, or the benchmark item; -1 when kept
    similarity: np.ndarray  # float32: estimated Jaccard, or share of the benchmark item's n-grams
    bands: int
    rows_per_band: int

    def counts(self) -> dict[str, int]:
        return {name: int((self.reason == code).sum()) for code, name in REASONS.items()}


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band that balance false positives and negatives at `threshold` (datasketch)."""
    from datasketch.lsh import _optimal_param  # imports SciPy (a quarter second): only when deduplicating

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def _band_hash(cols: np.ndarray) -> np.ndarray:
    h = np.zeros(len(cols), np.uint64)
    for c in range(cols.shape[1]):
        h = h * _MIX + cols[:, c].astype(np.uint64)  # wraps modulo 2**64, as a hash should
    return h


def _group_first(keys: np.ndarray) -> np.ndarray:
    """For each row, the first row (in input order) with the same key."""
    order = np.argsort(keys, kind="stable")  # stable: equal keys stay in input order
    sorted_keys = keys[order]
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    first = np.empty(len(keys), np.int64)
    first[order] = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
    return first


def decide(
    codes: np.ndarray,
    sig: np.ndarray,
    numbers: np.ndarray,
    bench: np.ndarray,
    bench_sim: np.ndarray,
    cfg: DedupConfig,
) -> Decisions:
    """`codes`: one integer per distinct id; `sig`: (rows, num_perm) uint32; `bench`: item or -1."""
    n = len(codes)
    reason = np.zeros(n, np.int8)
    matched = np.full(n, -1, np.int64)
    similarity = np.full(n, np.nan, np.float32)

    contaminated = bench >= 0
    reason[contaminated] = CONTAMINATED
    matched[contaminated] = bench[contaminated]
    similarity[contaminated] = bench_sim[contaminated]
    alive = ~contaminated

    if cfg.exact and alive.any():
        rows = np.flatnonzero(alive)
        first = rows[_group_first(codes[rows])]
        dup = first != rows
        reason[rows[dup]] = EXACT
        matched[rows[dup]] = first[dup]
        similarity[rows[dup]] = 1.0
        alive[rows[dup]] = False

    bands, r = lsh_params(cfg.threshold, sig.shape[1])
    if cfg.near and alive.sum() > 1:
        rows = np.flatnonzero(alive)
        s = sig if len(rows) == n else sig[rows]
        # With the numbers rule, the numbers are part of every bucket key: rows with other numbers never
        # share a bucket, so a templated problem's buckets are not crowded by its siblings (whose pairs the
        # rule would reject anyway) and a duplicate meets its own original.
        salt = numbers[rows] if cfg.same_numbers else None
        i, j = _candidate_pairs(s, bands, r, salt)
        i, j, sim = _verify(s, numbers[rows], i, j, cfg)
        if len(i):
            # For each row keep its most similar earlier row.
            order = np.lexsort((-sim, i))
            first = np.r_[True, i[order][1:] != i[order][:-1]]
            best = order[first]
            reason[rows[i[best]]] = NEAR
            matched[rows[i[best]]] = rows[j[best]]
            similarity[rows[i[best]]] = sim[best]
    return Decisions(reason, matched, similarity, bands, r)


def _candidate_pairs(
    s: np.ndarray, bands: int, r: int, salt: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(later row, earliest row) for rows that share a band (and salt) with an earlier row."""
    later, earlier = [], []
    rows = np.arange(len(s))
    for band in range(bands):
        key = _band_hash(s[:, band * r : (band + 1) * r])
        if salt is not None:
            key = key * _MIX + salt
        first = _group_first(key)
        keep = first != rows
        later.append(rows[keep])
        earlier.append(first[keep])
    i = np.concatenate(later)
    j = np.concatenate(earlier)
    key = np.unique(i.astype(np.int64) * len(s) + j)
    return key // len(s), key % len(s)


def _verify(
    s: np.ndarray, numbers: np.ndarray, i: np.ndarray, j: np.ndarray, cfg: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs whose estimated Jaccard reaches the threshold (and numbers agree)."""
    sims = np.empty(len(i), np.float32)
    for k in range(0, len(i), _VERIFY_CHUNK):
        a, b = i[k : k + _VERIFY_CHUNK], j[k : k + _VERIFY_CHUNK]
        sims[k : k + _VERIFY_CHUNK] = (s[a] == s[b]).mean(axis=1)
    ok = sims >= cfg.threshold
    if cfg.same_numbers:
        ok &= numbers[i] == numbers[j]
    return i[ok], j[ok], sims[ok]


def cluster_roots(d: Decisions) -> np.ndarray:
    """For each duplicate, the kept row at the end of its chain of matches (itself when kept)."""
    root = np.arange(len(d.reason), dtype=np.int64)
    dup = (d.reason == EXACT) | (d.reason == NEAR)
    root[dup] = d.matched[dup]
    while True:  # pointer jumping: each round halves the longest chain
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt
