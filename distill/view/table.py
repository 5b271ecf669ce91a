"""One dataset directory as a table the viewer can page, filter, sort and search without loading it.

The table's rows are the directory's rows, then the rows its stage set aside (`_removed/`: duplicates and
contaminated prompts), then the input rows it could not read (`_rejects/`): one numbering (`i`) over the
three parts, so "every row removed as a near duplicate" is a filter like "every trace rejected for
repetition".

Memory stays small whatever the size of the directory: only an index of the small columns (id, sample,
domain, source, keep, reason, length: ~40 bytes a row) is held; text is read row group by row group when a
page or a row asks for it, and the last few row groups read are kept (`RowGroupCache`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.store import MANIFEST, read_manifest
from distill.view.catalog import KEPT, Dataset

PARTS = ("data", "removed", "rejects")
SIDE_OF_PART = {"removed": "removed", "rejects": "rejects"}
SNIPPET = 240  # characters of a text shown in the table
PAGE_MAX = 200
SEARCH_BUDGET_S = 1.0  # a search answers with what it found so far after this long; the page asks again
CACHE_BYTES = 512 << 20  # decoded row groups kept for the next page / the next row
INDEX_THREADS = 8


@dataclass
class Segment:
    """One row group of one file: the unit read."""

    part: str
    path: Path
    row_group: int
    start: int  # its first row's number in the table
    rows: int


class RowGroupCache:
    """The last row groups read, by (file, row group, columns), up to CACHE_BYTES."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit, self.used = limit, 0
        self._items: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, seg: Segment, columns: list[str] | None, keep: bool = True) -> pa.Table:
        """`keep=False`: a read that will not be asked for again (a search's pass) leaves the cache alone."""
        key = (seg.path, seg.row_group, tuple(columns) if columns is not None else None)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with pq.ParquetFile(seg.path, memory_map=False) as pf:
            table = pf.read_row_group(seg.row_group, columns=columns)
        if not keep:
            return table
        with self._lock:
            self._items[key] = table
            self.used += table.nbytes
            while self.used > self.limit and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.used -= old.nbytes
        return table


@dataclass
class Query:
    reason: str | None = None
    domain: str | None = None
    source: str | None = None
    part: str | None = None
    keep: bool | None = None
    disagree: bool = False  # only traces where our `correct` and the publisher's label differ
    q: str | None = None  # text, case-insensitive, in the problem, reasoning, answer, messages or raw row
    sort: str | None = None  # "length" or None (the directory's order)
    desc: bool = False

    def key(self) -> tuple:
        return (self.reason, self.domain, self.source, self.part, self.keep, self.disagree, self.q, self.sort,
                self.desc)  # fmt: skip


@dataclass
class Found:
    """A query's rows: all of them, or for a text search, those found so far (`done` False)."""

    candidates: np.ndarray  # rows the column filters allow, in table order
    matches: list[np.ndarray] = field(default_factory=list)
    scanned: int = 0  # segments searched so far
    done: bool = False
    order: np.ndarray | None = None  # the sorted rows, once all are known

    def count(self) -> int:
        return sum(len(m) for m in self.matches)


class DatasetTable:
    def __init__(self, dataset: Dataset, cache: RowGroupCache) -> None:
        self.ds = dataset
        self.cache = cache
        self._lock = threading.Lock()
        self._segments: list[Segment] | None = None
        self._starts: np.ndarray | None = None  # each segment's first row, for finding a row's segment
        self._index: pa.Table | None = None
        self._found: OrderedDict[tuple, Found] = OrderedDict()
        self._names: dict[Path, list[str]] = {}
        self.index_seconds: float | None = None
        self._seen = self._manifest_time()

    def _manifest_time(self) -> int | None:
        try:
            return (self.ds.path / MANIFEST).stat().st_mtime_ns
        except OSError:
            return None

    def refresh(self) -> None:
        """A stage still writing the directory (or rerun into it): its manifest changed, so the next answer
        shows the shards it lists now. One stat per request."""
        seen = self._manifest_time()
        if seen == self._seen:
            return
        manifest = read_manifest(self.ds.path)
        if manifest is None:  # being replaced this instant: the next request will see it
            return
        with self._lock:
            self._seen, self.ds.manifest = seen, manifest
            self._segments = self._starts = self._index = None
            self._found.clear()
            self._names.clear()

    # --- layout -------------------------------------------------------------------------------------

    @property
    def segments(self) -> list[Segment]:
        with self._lock:
            if self._segments is None:
                self._segments = self._layout()
                self._starts = np.array([seg.start for seg in self._segments], dtype=np.int64)
            return self._segments

    def files(self, part: str) -> list[Path]:
        shards = self.ds.manifest.shards
        if part == "data":
            names = [shards[i]["file"] for i in sorted(shards) if shards[i]["rows"]]
        else:
            side = SIDE_OF_PART[part]
            names = [shards[i][side]["file"] for i in sorted(shards) if shards[i].get(side, {}).get("rows")]
        return [self.ds.file(n) for n in names]

    def _layout(self) -> list[Segment]:
        segments, start = [], 0
        for part in PARTS:
            for path in self.files(part):
                meta = pq.read_metadata(path)
                for g in range(meta.num_row_groups):
                    rows = meta.row_group(g).num_rows
                    segments.append(Segment(part, path, g, start, rows))
                    start += rows
        return segments

    @property
    def num_rows(self) -> int:
        segs = self.segments
        return segs[-1].start + segs[-1].rows if segs else 0

    def names(self, path: Path) -> list[str]:
        if path not in self._names:
            self._names[path] = pq.read_schema(path).names
        return self._names[path]

    def length_unit(self) -> str:
        files = self.files("data")
        names = set(self.names(files[0])) if files else set()
        if "completion_tokens" in names:
            return "completion tokens"
        if "num_tokens" in names:
            return "tokens"
        return "characters"

    # --- the index of small columns -------------------------------------------------------------------

    @property
    def index(self) -> pa.Table:
        with self._lock:
            if self._index is None:
                started = time.perf_counter()
                self._index = self._build_index()
                self.index_seconds = time.perf_counter() - started
            return self._index

    def _build_index(self) -> pa.Table:
        parts = []
        for part in PARTS:
            files = self.files(part)
            if not files:
                continue
            names = set(self.names(files[0]))
            wanted = [c for c in ("id", "sample", "domain", "source", "keep", "reject_reason", "reason", "error",
                                  "completion_tokens", "num_tokens", "raw_bytes", "correct", "publisher_correct")
                      if c in names]  # fmt: skip
            if not {"completion_tokens", "num_tokens", "raw_bytes"} & names and "problem" in names:
                wanted.append("problem")  # prompts: their length is the problem's

            # shard by shard, a few at once: a cold disk (or a network file system) answers reads in parallel
            def read(path: Path, part: str = part, wanted: list[str] = wanted) -> pa.Table:
                mine = [c for c in wanted if c in self.names(path)]  # a later shard may lack a column
                return _index_columns(part, pq.read_table(path, columns=mine))

            with ThreadPoolExecutor(INDEX_THREADS) as pool:
                parts += pool.map(read, files)
        if not parts:
            return pa.table({n: pa.array([], t) for n, t in _INDEX_SCHEMA.items()})
        return pa.concat_tables(parts).combine_chunks()

    # --- queries --------------------------------------------------------------------------------------

    def candidates(self, query: Query) -> np.ndarray:
        ix = self.index
        mask = pa.array(np.ones(ix.num_rows, dtype=bool))
        for column, value in (("reason", query.reason), ("domain", query.domain), ("source", query.source),
                              ("part", query.part)):  # fmt: skip
            if value is not None:
                mask = pc.and_(mask, pc.fill_null(pc.equal(ix[column], value), False))
        if query.keep is not None:
            mask = pc.and_(mask, pc.fill_null(pc.equal(ix["keep"], query.keep), False))
        if query.disagree:
            mask = pc.and_(mask, ix["disagree"])
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))

    def find(self, query: Query, want: int) -> Found:
        """The query's rows, searched far enough for `want` of them (or for all, when sorted)."""
        with self._lock:
            found = self._found.get(query.key())
            if found is not None:
                self._found.move_to_end(query.key())
        if found is None:
            cand = self.candidates(query)
            found = Found(cand)
            if not query.q:
                found.matches, found.done = [cand], True
            with self._lock:
                self._found[query.key()] = found
                while len(self._found) > 32:
                    self._found.popitem(last=False)
        if not found.done:
            self._search(found, query.q or "", None if query.sort else want)
        if found.done and query.sort == "length" and found.order is None:
            rows = _joined(found.matches)
            lengths = self.index["length"].to_numpy(zero_copy_only=False)[rows].astype(float)
            lengths = np.where(np.isnan(lengths), -1, lengths)
            order = np.argsort(-lengths if query.desc else lengths, kind="stable")
            found.order = rows[order]
        return found

    def _search(self, found: Found, text: str, want: int | None) -> None:
        """Scan the row groups that hold candidates, in order, until `want` matches or the time budget."""
        deadline = time.perf_counter() + SEARCH_BUDGET_S
        segments, first = self.segments, found.scanned
        while found.scanned < len(segments):
            if want is not None and found.count() >= want:
                return
            if found.scanned > first and time.perf_counter() > deadline:  # each answer moves at least one row group on
                return
            seg = segments[found.scanned]
            found.scanned += 1
            lo, hi = np.searchsorted(found.candidates, [seg.start, seg.start + seg.rows])
            if lo == hi:
                continue
            local = found.candidates[lo:hi] - seg.start
            hit = self._matches(seg, text, local)
            if len(hit):
                found.matches.append(hit + seg.start)
        found.done = True

    def _matches(self, seg: Segment, text: str, local: np.ndarray) -> np.ndarray:
        columns = [c for c in TEXT_COLUMNS if c in self.names(seg.path)]
        table = self.cache.read(seg, columns, keep=False)
        # every row of the row group is matched (fast, in C), then the candidates picked: cheaper than a `take`
        # that copies the candidates' text first
        hit = np.zeros(table.num_rows, dtype=bool)
        for name in columns:
            col = table[name]
            if pa.types.is_list(col.type):  # sft messages: any message's content
                flat = pc.list_flatten(col)
                found = pc.match_substring(pc.struct_field(flat, "content"), text, ignore_case=True)
                rows = pc.list_parent_indices(col).to_numpy()
                hit[np.unique(rows[pc.fill_null(found, False).to_numpy(zero_copy_only=False)])] = True
            else:
                hit |= pc.fill_null(pc.match_substring(col, text, ignore_case=True), False).to_numpy(
                    zero_copy_only=False
                )
        return local[hit[local]]

    def page(self, query: Query, offset: int, limit: int) -> dict[str, Any]:
        limit = max(1, min(limit, PAGE_MAX))
        found = self.find(query, offset + limit)
        if found.order is not None:
            rows, total = found.order[offset : offset + limit], len(found.order)
        else:
            every = _joined(found.matches)
            rows, total = every[offset : offset + limit], len(every)
        return {
            "rows": self.previews(rows),
            "offset": offset,
            "total": total,
            "done": found.done,  # False: a text search still going (total so far)
            "searched": round(found.scanned / max(len(self.segments), 1), 3) if query.q else 1.0,
        }

    def neighbours(self, query: Query, i: int) -> dict[str, Any] | None:
        """Row i's place among the query's rows and the rows before and after it (a reader going through
        every `repetition` one by one); None when i is not one of them."""
        found = self.find(query, 0)
        for _ in range(2):
            rows = found.order if found.order is not None else _joined(found.matches)
            where = np.flatnonzero(rows == i)
            if where.size and (where[0] + 1 < len(rows) or found.done):
                break
            found = self.find(query, len(rows) + 1)  # a search still going: far enough for the next one
        if not where.size:
            return None
        k = int(where[0])
        return {"position": k, "total": len(rows), "done": found.done,
                "prev": int(rows[k - 1]) if k > 0 else None,
                "next": int(rows[k + 1]) if k + 1 < len(rows) else None}  # fmt: skip

    # --- rows -----------------------------------------------------------------------------------------

    def segment_of(self, i: int) -> Segment:
        segments = self.segments
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} is not in this directory (it has {self.num_rows})")
        return segments[int(np.searchsorted(self._starts, i, side="right")) - 1]

    def previews(self, rows: np.ndarray) -> list[dict[str, Any]]:
        ix = self.index
        out: list[dict[str, Any]] = []
        for i in rows.tolist():
            seg = self.segment_of(i)
            columns = [c for c in PREVIEW_COLUMNS[seg.part] if c in self.names(seg.path)]
            row = self.cache.read(seg, columns).slice(i - seg.start, 1).to_pylist()[0]
            item = {k: ix[k][i].as_py() for k in ("part", "id", "sample", "domain", "source", "keep", "reason",
                                                   "length")}  # fmt: skip
            item["i"] = i
            item.update(_preview_text(seg.part, row))
            out.append(item)
        return out

    def row(self, i: int) -> tuple[str, dict[str, Any]]:
        """(part, every column of row i)."""
        seg = self.segment_of(i)
        return seg.part, self.cache.read(seg, None).slice(i - seg.start, 1).to_pylist()[0]

    def locate(self, row_id: str, sample: int | None = None) -> list[int]:
        """Rows of the prompt `row_id` (the SFT set names a prompt's k-th sample `row_id:k`); with `sample`,
        only that sample's rows and the prompt's own (rows without a sample)."""
        ids, samples = self.index["id"], self.index["sample"]
        if sample is None:
            mask = pc.or_(pc.equal(ids, row_id), pc.starts_with(ids, row_id + ":"))
        else:
            same = pc.and_(pc.equal(ids, row_id), pc.or_kleene(pc.equal(samples, sample), pc.is_null(samples)))
            mask = pc.or_(same, pc.equal(ids, f"{row_id}:{sample}"))
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)).tolist()

    # --- the overview -----------------------------------------------------------------------------------

    def facets(self) -> dict[str, dict[str, int]]:
        """Each filter's values with their row counts, most common first."""
        out = {}
        for column in ("reason", "domain", "source", "part"):
            counts = pc.value_counts(self.index[column]).to_pylist()
            out[column] = {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: -c["counts"])
                           if c["values"] is not None}  # fmt: skip
        return out

    def stats(self) -> dict[str, Any]:
        """The overview's figures, and each filter's values (`facets`)."""
        ix = self.index
        facets = self.facets()
        by = {}
        for column in ("domain", "source"):
            grouped = ix.group_by([column, "reason"]).aggregate([([], "count_all")]).to_pylist()
            table: dict[str, dict[str, int]] = {}
            for g in grouped:
                table.setdefault(g[column] or "(none)", {})[g["reason"] or "(none)"] = g["count_all"]
            by[column] = dict(sorted(table.items(), key=lambda kv: -sum(kv[1].values())))
        return {
            "rows": ix.num_rows,
            "funnel": facets["reason"],
            "by_part": facets["part"],
            "by_domain": by["domain"],
            "by_source": by["source"],
            "lengths": self.histogram(),
            "index_seconds": round(self.index_seconds or 0.0, 3),
            "facets": facets,
        }

    def histogram(self, bins: int = 30) -> dict[str, Any]:
        """Lengths of the kept rows and of the others, on shared bins."""
        ix = self.index
        length = ix["length"].to_numpy(zero_copy_only=False).astype(float)
        keep = pc.fill_null(ix["keep"], False).to_numpy(zero_copy_only=False)
        known = ~np.isnan(length)
        if not known.any():
            return {"unit": self.length_unit(), "edges": [], "kept": [], "other": []}
        top = float(np.percentile(length[known], 99.5))  # a few runaway traces must not flatten the rest
        low = float(length[known].min())
        edges = np.linspace(low, max(top, low + 1), bins + 1)
        clipped = np.minimum(length, edges[-1])
        kept, _ = np.histogram(clipped[known & keep], edges)
        other, _ = np.histogram(clipped[known & ~keep], edges)
        return {
            "unit": self.length_unit(),
            "edges": [round(e, 1) for e in edges.tolist()],
            "kept": kept.tolist(),
            "other": other.tolist(),
            "median": float(np.median(length[known])),
            "max": float(length[known].max()),
        }


TEXT_COLUMNS = ("problem", "reasoning", "content", "answer", "messages", "raw", "error", "matched_text")
PREVIEW_COLUMNS = {
    "data": ["domain", "problem", "content", "answer", "reject_detail", "messages"],
    "removed": ["problem", "matched_id", "matched_source", "similarity"],
    "rejects": ["input", "row", "error", "raw"],
}
_INDEX_SCHEMA = {
    "part": pa.string(), "id": pa.string(), "sample": pa.int32(), "domain": pa.string(), "source": pa.string(),
    "keep": pa.bool_(), "reason": pa.string(), "length": pa.float64(), "disagree": pa.bool_(),
}  # fmt: skip


def _joined(matches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(matches) if matches else np.array([], dtype=np.int64)


def _index_columns(part: str, t: pa.Table) -> pa.Table:
    n = t.num_rows

    def col(name: str, type_: pa.DataType) -> pa.Array:
        return t[name].cast(type_) if name in t.column_names else pa.nulls(n, type_)

    if part == "data":
        if "reject_reason" in t.column_names:
            reason = pc.fill_null(t["reject_reason"], KEPT)
        else:
            reason = pa.array([KEPT] * n, pa.string())
        keep = pc.fill_null(t["keep"], False) if "keep" in t.column_names else pa.array([True] * n)
    elif part == "removed":
        reason, keep = col("reason", pa.string()), pa.array([False] * n)
    else:  # rejects: "<code>: <detail>"
        reason = pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(t["error"], ":", max_splits=1), 0))
        keep = pa.array([False] * n)
    for name in ("completion_tokens", "num_tokens", "raw_bytes"):
        if name in t.column_names:
            length = t[name].cast(pa.float64())
            break
    else:
        length = pc.utf8_length(t["problem"]).cast(pa.float64()) if "problem" in t.column_names else pa.nulls(n)
    differ = pc.not_equal(col("correct", pa.bool_()), col("publisher_correct", pa.bool_()))
    return pa.table(
        {
            "part": pa.array([part] * n, pa.string()),
            "id": col("id", pa.string()),
            "sample": col("sample", pa.int32()),
            "domain": col("domain", pa.string()),
            "source": col("source", pa.string()),
            "keep": keep,
            "reason": reason.cast(pa.string()),
            "length": length.cast(pa.float64()),
            # a public set's own label differs from our verdict (both known)
            "disagree": pc.fill_null(differ, False),
        }
    )


def _clip(text: Any, n: int = SNIPPET) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _preview_text(part: str, row: dict[str, Any]) -> dict[str, Any]:
    """The table's two text cells: what was asked, and what came back (or why the row was set aside)."""
    from distill.view.annotate import final_answer

    if part == "rejects":
        return {"problem": _clip(row.get("raw")), "answer": None, "detail": _clip(row.get("error"), 160),
                "where": f"{row.get('input')} row {row.get('row')}"}  # fmt: skip
    if part == "removed":
        detail = f"matches {row.get('matched_source')} {row.get('matched_id')}" if row.get("matched_id") else None
        if row.get("similarity") is not None:
            detail = f"{detail} (similarity {row['similarity']:.2f})"
        return {"problem": _clip(row.get("problem")), "answer": None, "detail": detail}
    if row.get("messages") is not None:
        msgs = row["messages"]
        user = next((m["content"] for m in msgs if m["role"] == "user"), None)
        last = msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" else None
        answer = last.rpartition("</think>")[2] if last else None
        return {"problem": _clip(user), "answer": _clip(answer, 120), "detail": None}
    content = row.get("content")
    return {
        "problem": _clip(row.get("problem")),
        "answer": final_answer(content, row.get("domain")) if content else None,
        "gold": _clip(row.get("answer"), 60),
        "detail": _clip(row.get("reject_detail"), 160),
    }
