"""Pass 1 of `distill prompts`, a pure batch function run in parallel over the input chunks.

For each prompt row: its `id` (the hash of its matching form), its language when it has none, and
what the global pass needs, in columns that start with `_`: a MinHash signature of its token
shingles (near duplicates), a hash of its numbers (a template with other numbers is another
problem), and what decontamination's global pass needs (`distill.prompts.decontaminate`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import xxhash
from datasketch import MinHash

from distill import language
from distill.normalize import numbers, tokens
from distill.prompts.decontaminate import load_index
from distill.records import RECORDS

PROMPT = RECORDS["prompt"]


def shingles(toks: list[str], size: int) -> list[bytes]:
    if len(toks) <= size:
        return [" ".join(toks).encode()]
    return [" ".join(toks[i : i + size]).encode() for i in range(len(toks) - size + 1)]


def signatures(
    batch: pa.RecordBatch,
    *,
    num_perm: int,
    shingle_size: int,
    seed: int,
    benchmark_index: str | None = None,
    detect_language: bool = True,
) -> pa.Table:
    table = pa.Table.from_batches([batch])
    problems = table.column("problem").to_pylist()
    toks = [tokens(p) for p in problems]

    ids = [hashlib.sha256(" ".join(t).encode()).hexdigest()[:16] for t in toks]  # == records.stable_id
    old_ids = table.column("id").to_pylist()
    metas = table.column("meta").to_pylist()
    # Columns the prompt record does not know (from Parquet; JSON keys were folded already) go into meta,
    # as does an id the source gave, since ids here are the hash of the problem.
    extras = [name for name in table.column_names if name not in PROMPT.names]
    extra_values = {name: table.column(name).to_pylist() for name in extras}
    for i, (old, new) in enumerate(zip(old_ids, ids, strict=True)):
        if old != new or extras:
            meta = json.loads(metas[i]) if metas[i] else {}
            if old != new:
                meta["source_id"] = old
            for name in extras:
                meta[name] = extra_values[name][i]
            metas[i] = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)
    table = table.drop_columns(extras)
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    table = table.set_column(table.schema.get_field_index("meta"), "meta", pa.array(metas, pa.large_string()))

    if detect_language:
        langs = table.column("language").to_pylist()
        langs = [lang if lang is not None else language.detect(p) for lang, p in zip(langs, problems, strict=True)]
        table = table.set_column(table.schema.get_field_index("language"), "language", pa.array(langs, pa.string()))

    hashes = MinHash.bulk([shingles(t, shingle_size) for t in toks], num_perm=num_perm, seed=seed)
    # datasketch keeps hash values below 2**32: uint32 halves the memory of the global pass.
    sig = np.stack([m.hashvalues for m in hashes]).astype(np.uint32)
    nums = [xxhash.xxh64_intdigest(" ".join(numbers(t)).encode()) for t in toks]

    # Decontamination, pass 1: the index n-grams each prompt contains, the items it may copy, its numbers.
    bench_grams: list[np.ndarray | None] = [None] * len(toks)
    bench_cands: list[np.ndarray | None] = [None] * len(toks)
    bench_nums: list[list[str] | None] = [None] * len(toks)
    if benchmark_index:
        index = load_index(benchmark_index)
        for i, (p, t) in enumerate(zip(problems, toks, strict=True)):
            bench_grams[i], bench_cands[i], bench_nums[i] = index.lookup(p, t)

    sig_type = pa.list_(pa.uint32(), num_perm)
    return (
        table.append_column("_sig", pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), num_perm).cast(sig_type))
        .append_column("_numbers", pa.array(nums, pa.uint64()))
        .append_column("_bench_grams", pa.array(bench_grams, pa.list_(pa.int32())))
        .append_column("_bench_cands", pa.array(bench_cands, pa.list_(pa.int32())))
        .append_column("_bench_nums", pa.array(bench_nums, pa.list_(pa.string())))
    )
