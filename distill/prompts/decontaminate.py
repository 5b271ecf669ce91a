"""Decontamination: which benchmark problem, if any, a prompt is a copy of, and the evidence for it.

The rule (`rule: coverage`, the default) asks how much of a benchmark item the prompt contains, with
each of the item's n-grams (5 normalized words by default) weighted by how rare it is:

    score(prompt, item) = sum of w(g) over the item's n-grams g found in the prompt / sum of w(g) over all of them
    w(g) = 1 / (number of benchmark items and input prompts that contain g)

and calls the prompt `contaminated` when the score reaches `threshold` (0.5) *and* every number of the
item occurs in the prompt (as often). Why each part, measured on real public data (MATH train, the AIME
history and GSM8K against MATH-500 and AIME 2024/2025; benchmarks/RESULTS.md, tests/test_decontaminate_real.py):

- Any single shared n-gram is not evidence: AIME problems share stock phrases ("... where m and n are
  relatively prime positive integers. Find m+n."), MATH geometry problems share Asymptote drawing code,
  MATH exercises share templates ("Convert the point ... to polar coordinates. Enter your answer in the
  form ..."). open-r1's rule (any shared 8-gram) removed 930 clearly different training problems of
  11,424 there; a plain 13-gram rule 118.
- Coverage of the *item* (not of the prompt) still catches a benchmark problem pasted inside a longer
  prompt, and short n-grams survive light rewording (one changed word spoils n of them, not the rest).
- Weights by commonness make stock phrases, answer-format instructions and exercise templates count for
  almost nothing, whatever their wording: an n-gram that hundreds of prompts share is not what makes an
  item that item. (Weights from the benchmark items alone left template siblings such as "arrange the
  letters of the word RADII" vs "... ELLIPSE" above the threshold.) A score is a ratio within one item, so
  a benchmark problem copied many times into the input is still caught: all its n-grams are then common
  alike.
- Same numbers: a template with other numbers is another problem (the same rule as near-duplicates).
- Figure code (`[asy]...[/asy]`, TikZ) is removed before matching: drawing boilerplate is shared across
  unrelated problems, and a re-drawn figure of the same problem shares none of it.

Text is compared in its matching form (`distill.normalize`): case, Unicode form, white space and LaTeX
look-alikes (`\\dfrac`/`\\frac`, `\\[...\\]`/`$...$`) do not matter, so re-typeset copies match.

`rule: open-r1` reproduces open-r1's `scripts/decontaminate.py` exactly (lower-cased, white-space words,
any shared n-gram, 8 by default), for teams that must report that rule.

How the work is split (`distill.prompts.stage`): the index is built once from the benchmark files; pass 1
looks up each prompt's n-grams (parallel, per chunk): which index n-grams it contains and which items it
may be a copy of; pass 2 counts how many prompts contain each n-gram (the weights), scores the candidate
pairs and decides; pass 3 writes the evidence of each removal (the item, its score and plain coverage,
the longest shared span).
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import xxhash

from distill.errors import UserError
from distill.normalize import word_tokens, words

if TYPE_CHECKING:
    from distill.prompts.config import DecontaminateConfig
    from distill.sources.inputs import InputFile
    from distill.sources.mapping import SourceMapping

ID_COLUMNS = ("id", "ID", "unique_id", "problem_id", "question_id", "task_id", "Record ID")
# Candidates come from n-grams shared by at most this many benchmark items (and each item's rarest
# n-grams): a stock phrase found in hundreds of items would propose hundreds of candidates per prompt,
# and a copy contains its item's rare n-grams anyway.
ANCHOR_ITEMS = 3
_FIGURES = re.compile(
    r"\[asy\].*?\[/asy\]|\\begin\{(tikzpicture|asy)\}.*?\\end\{\1\}|\\includegraphics(\[[^\]]*\])?\{[^}]*\}",
    re.S | re.I,
)
_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_PAIRS_PER_BLOCK = 1 << 22  # (pair, n-gram) entries scored at once in pass 2: bounds its memory


def strip_figures(text: str) -> str:
    """The text without figure code; figure code is drawing boilerplate, not the problem's wording."""
    return _FIGURES.sub(" ", text)


def tokens_for(text: str, rule: str, figures: bool, toks: list[str] | None = None) -> list[str]:
    """The words a rule compares (`toks`: the text's `normalize.tokens`, when the caller has them)."""
    if rule == "open-r1":
        return text.lower().split()  # open-r1: lower(), then white-space words, punctuation kept
    if toks is not None and not (figures and _FIGURES.search(text)):
        ws = word_tokens(toks)  # the same words, without normalizing the text a second time
    else:
        ws = words(strip_figures(text)) if figures else []
        ws = ws or words(text)  # a problem that is all figure is matched with its figure
    # `\frac{47}{288}` and `47/288` are the same number typeset twice (a copy in the AIME history vs MATH-500)
    return [w for w in ws if w != "\\frac"]


def gram_hashes(ws: list[str], n: int) -> np.ndarray:
    """A 64-bit hash of every run of n consecutive words: each word hashed once (xxh64), the runs combined
    in NumPy (Horner's rule modulo 2**64, then a bit mixer). Stable across processes and runs."""
    if len(ws) < n or n <= 0:
        return np.empty(0, np.uint64)
    h = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in ws), np.uint64, count=len(ws))
    m = len(ws) - n + 1
    g = h[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            g = g * _MUL + h[k : k + m]
        g ^= g >> np.uint64(31)
        g *= _MIX
        g ^= g >> np.uint64(29)
    return g


def numbers_of(ws: list[str]) -> list[str]:
    return [w for w in ws if w.isdigit()]


@dataclass
class BenchmarkIndex:
    rule: str  # "coverage" | "open-r1"
    n: int
    figures: bool  # strip figure code before matching
    hashes: np.ndarray  # uint64, sorted: every distinct n-gram of every item
    items_per_gram: np.ndarray  # int32: how many items contain each n-gram
    item_ptr: np.ndarray  # int64 CSR: item j's distinct n-grams are item_grams[item_ptr[j]:item_ptr[j+1]]
    item_grams: np.ndarray  # int32, sorted within each item
    gram_ptr: np.ndarray  # int64 CSR: the items of anchor n-gram g are gram_items[gram_ptr[g]:gram_ptr[g+1]]
    gram_items: np.ndarray  # int32
    short_lengths: list[int]  # word counts of items shorter than n (each such item is one n-gram: itself)
    ids: list[str]
    sources: list[str]
    texts: list[str]
    numbers: list[list[str]]

    @property
    def num_items(self) -> int:
        return len(self.ids)

    def lookup(self, text: str, toks: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """Pass 1 for one prompt: the index n-grams it contains (sorted ids), the items it may be a copy of,
        and (when there are such items) its numbers. `toks`: the text's `normalize.tokens`, if at hand."""
        if not len(self.hashes):
            return np.empty(0, np.int32), np.empty(0, np.int32), None
        ws = tokens_for(text, self.rule, self.figures, toks)
        h = np.unique(np.concatenate([gram_hashes(ws, self.n), *(gram_hashes(ws, k) for k in self.short_lengths)]))
        pos = np.searchsorted(self.hashes, h)
        pos[pos == len(self.hashes)] = 0
        hits = pos[self.hashes[pos] == h].astype(np.int32)
        if not len(hits):
            return hits, np.empty(0, np.int32), None
        starts, stops = self.gram_ptr[hits], self.gram_ptr[hits + 1]
        if not (stops > starts).any():
            return hits, np.empty(0, np.int32), None
        cands = np.unique(np.concatenate([self.gram_items[a:b] for a, b in zip(starts, stops, strict=True) if b > a]))
        return hits, cands.astype(np.int32), numbers_of(ws)

    # --- on disk: arrays in .npz, the rest in .json; each worker process loads it once -------------------

    def save(self, path: Path) -> None:
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path.with_suffix(".npz"))
        meta = {k: getattr(self, k) for k in _META}
        path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False))


_ARRAYS = ("hashes", "items_per_gram", "item_ptr", "item_grams", "gram_ptr", "gram_items")
_META = ("rule", "n", "figures", "short_lengths", "ids", "sources", "texts", "numbers")


@cache
def load_index(path: str) -> BenchmarkIndex:
    arrays = np.load(Path(path).with_suffix(".npz"))
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    return BenchmarkIndex(**{k: arrays[k] for k in _ARRAYS}, **meta)


# --- building the index -----------------------------------------------------------------------------


def build_index(
    files: list[InputFile], cfg: DecontaminateConfig, mappings: list[SourceMapping] | None = None
) -> tuple[BenchmarkIndex, list[dict[str, str]]]:
    """The index of the benchmark files (any input format, any known layout) and, per file, its layout."""
    from distill.sources import inputs

    n = cfg.n
    per_item: list[np.ndarray] = []
    short: set[int] = set()
    ids: list[str] = []
    sources: list[str] = []
    texts: list[str] = []
    nums: list[list[str]] = []
    found = inputs.layouts_of(files, mappings or [], what="--decontaminate")
    described = []
    for f, (layout, mapping) in zip(files, found, strict=True):
        described.append({"path": f.path, "layout": layout})
        if mapping is not None:  # the problem as written: lettered options are not part of what is matched
            mapping = mapping.model_copy(update={"choices": None, "correct_choice": None, "shuffle_choices": False})
        for chunk in inputs.plan([f], rows_per_shard=1 << 30):
            for batch in inputs.read_chunk(chunk, None, 4096, [mapping] if mapping else None):
                if batch.rejects:
                    bad = batch.rejects[0]
                    raise UserError(f"--decontaminate {f.path}: row {bad.row}: {bad.error}; fix or remove the row")
                for row_no, row in zip(batch.rows, batch.table.to_pylist(), strict=True):
                    problem = row.get("problem")
                    if not isinstance(problem, str) or not problem.strip():
                        raise UserError(
                            f"--decontaminate {f.path}: row {row_no} has no problem text; "
                            "map its problem column with a `sources:` mapping in --config"
                        )
                    ws = tokens_for(problem, cfg.rule, cfg.strip_figures)
                    k = n if len(ws) >= n else len(ws)
                    if k == 0:
                        continue
                    if k < n:
                        if cfg.rule == "open-r1":
                            continue  # open-r1 skips items shorter than n: so does its reproduction
                        short.add(k)
                    per_item.append(np.unique(gram_hashes(ws, k)))
                    ident = next((row[c] for c in ID_COLUMNS if row.get(c) is not None), None)
                    ids.append(str(ident) if ident is not None else f"{f.source}:{row_no}")
                    sources.append(f.source)
                    texts.append(problem)
                    nums.append(numbers_of(ws) if cfg.rule == "coverage" else [])
    return _assemble(cfg, per_item, sorted(short), ids, sources, texts, nums), described


def _assemble(
    cfg: DecontaminateConfig,
    per_item: list[np.ndarray],
    short: list[int],
    ids: list[str],
    sources: list[str],
    texts: list[str],
    nums: list[list[str]],
) -> BenchmarkIndex:
    empty64, empty32 = np.empty(0, np.uint64), np.empty(0, np.int32)
    if not per_item:
        ptr = np.zeros(1, np.int64)
        return BenchmarkIndex(cfg.rule, cfg.n, cfg.strip_figures, empty64, empty32, ptr, empty32, ptr, empty32,
                              [], [], [], [], [])  # fmt: skip
    all_h = np.concatenate(per_item)
    item_of = np.repeat(np.arange(len(per_item), dtype=np.int32), [len(h) for h in per_item])
    hashes, gram_of = np.unique(all_h, return_inverse=True)
    gram_of = gram_of.astype(np.int32)
    items_per_gram = np.bincount(gram_of, minlength=len(hashes)).astype(np.int32)
    # item -> its grams (sorted)
    order = np.lexsort((gram_of, item_of))
    item_ptr = np.zeros(len(per_item) + 1, np.int64)
    np.cumsum(np.bincount(item_of, minlength=len(per_item)), out=item_ptr[1:])
    item_grams = gram_of[order]
    # anchors: n-grams few items share, and each item's rarest ones (so no item is without candidates)
    anchor = items_per_gram <= ANCHOR_ITEMS
    if cfg.rule == "open-r1":
        anchor[:] = True  # any shared n-gram decides: every n-gram proposes its items
    else:
        rarity = items_per_gram[item_grams]
        rarest = np.minimum.reduceat(rarity, item_ptr[:-1].clip(max=len(rarity) - 1))
        anchor[item_grams[rarity == np.repeat(rarest, np.diff(item_ptr))]] = True
    keep = anchor[gram_of]
    g_order = np.lexsort((item_of[keep], gram_of[keep]))
    gram_ptr = np.zeros(len(hashes) + 1, np.int64)
    np.cumsum(np.bincount(gram_of[keep], minlength=len(hashes)), out=gram_ptr[1:])
    gram_items = item_of[keep][g_order]
    return BenchmarkIndex(cfg.rule, cfg.n, cfg.strip_figures, hashes, items_per_gram, item_ptr, item_grams,
                          gram_ptr, gram_items, short, ids, sources, texts, nums)  # fmt: skip


# --- pass 2: weights, scores, decisions ------------------------------------------------------------


@dataclass
class Matches:
    item: np.ndarray  # int64 per prompt: the benchmark item it is a copy of, or -1
    score: np.ndarray  # float32: the rule's score of that item (weighted coverage; open-r1: plain coverage)
    coverage: np.ndarray  # float32: plain share of the item's n-grams found in the prompt


def _offsets(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list column as NumPy arrays."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def decide(
    index: BenchmarkIndex | None,
    grams: pa.ChunkedArray,
    cands: pa.ChunkedArray,
    nums: pa.ChunkedArray,
    threshold: float,
) -> Matches:
    """Every prompt's best benchmark match (or none), from pass 1's columns over the whole input."""
    rows = len(grams)
    item = np.full(rows, -1, np.int64)
    score = np.zeros(rows, np.float32)
    coverage = np.zeros(rows, np.float32)
    if index is None or not index.num_items or not rows:
        return Matches(item, score, coverage)
    g_off, g_val = _offsets(grams)
    c_off, c_val = _offsets(cands)
    num_grams = len(index.hashes)
    # w(g): 1 / (items with g + prompts with g). open-r1 counts every n-gram alike.
    df = index.items_per_gram.astype(np.float64) + np.bincount(g_val, minlength=num_grams)
    w = 1.0 / df if index.rule == "coverage" else np.ones(num_grams)
    item_len = np.diff(index.item_ptr)
    item_w = np.add.reduceat(w[index.item_grams], index.item_ptr[:-1].clip(max=max(len(index.item_grams) - 1, 0)))
    item_w[item_len == 0] = np.inf
    keys = (
        index.item_grams.astype(np.int64) + np.repeat(np.arange(index.num_items, dtype=np.int64), item_len) * num_grams
    )

    pair_row = np.repeat(np.arange(rows, dtype=np.int64), np.diff(c_off))
    pair_item = c_val.astype(np.int64)
    weighted = np.zeros(len(pair_row))
    plain = np.zeros(len(pair_row))
    lengths = np.diff(g_off)[pair_row]
    # Blocks of pairs whose (pair, prompt n-gram) entries fit _PAIRS_PER_BLOCK, scored with NumPy.
    ends = np.cumsum(lengths)
    start = 0
    while start < len(pair_row):
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _PAIRS_PER_BLOCK, "right")), start + 1)
        lens = lengths[start:stop]
        pair = np.repeat(np.arange(start, stop), lens)
        first = np.repeat(g_off[pair_row[start:stop]] - (np.cumsum(lens) - lens), lens)
        gram = g_val[first + np.arange(len(pair))].astype(np.int64)
        key = gram + pair_item[pair] * num_grams
        at = np.searchsorted(keys, key).clip(max=len(keys) - 1)
        member = keys[at] == key
        weighted[start:stop] = np.bincount(pair - start, weights=w[gram] * member, minlength=stop - start)
        plain[start:stop] = np.bincount(pair - start, weights=member, minlength=stop - start)
        start = stop
    s = weighted / item_w[pair_item]
    cov = plain / np.maximum(item_len[pair_item], 1)
    ok = s >= threshold if index.rule == "coverage" else plain > 0
    n_off, n_val = _offsets(nums)
    for p in np.flatnonzero(ok):
        r, j = int(pair_row[p]), int(pair_item[p])
        if index.numbers[j] and Counter(index.numbers[j]) - Counter(n_val[n_off[r] : n_off[r + 1]].tolist()):
            continue  # an item's number is missing: a template with other numbers is another problem
        if item[r] < 0 or s[p] > score[r]:
            item[r], score[r], coverage[r] = j, s[p], cov[p]
    return Matches(item, score, coverage)


# --- pass 3: evidence -------------------------------------------------------------------------------


def longest_shared_span(index: BenchmarkIndex, problem: str, item: int) -> str:
    """The longest run of words the prompt and the benchmark item share, in matching form."""
    a = tokens_for(problem, index.rule, index.figures)
    b = tokens_for(index.texts[item], index.rule, index.figures)
    m = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return " ".join(b[m.b : m.b + m.size])


def evidence(index: BenchmarkIndex, problem: str, item: int) -> dict[str, Any]:
    return {"span": longest_shared_span(index, problem, item), "text": index.texts[item]}
