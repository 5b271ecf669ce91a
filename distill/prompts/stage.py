"""`distill prompts`: ingest, normalize, dedup and decontaminate prompts, with provenance for every removal.

Three passes, each resumable:
1. in parallel over input chunks (the local executor): map and validate rows, compute ids, language,
   signatures and benchmark matches -> `DIR/.work/signatures/` (a dataset directory of its own);
2. over the whole input at once (`dedup.decide`): which rows go and why;
3. shard by shard: kept rows -> `DIR/train-*.parquet`, removed rows -> `DIR/_removed/` with `reason`,
   `matched_id`, `matched_source` and `similarity`, bad input rows -> `DIR/_rejects/`.

Kept + removed + rejected = the input rows, always. The work folder is deleted once DIR is complete.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill import inputs
from distill.config import PromptsConfig
from distill.executor import MapStage, StageResult, already_done, check_executor, run_map_stage
from distill.progress import StageProgress
from distill.prompts.benchmarks import BenchmarkIndex, build_index
from distill.prompts.dedup import KEPT, REASONS, Decisions, cluster_roots, decide
from distill.records import RECORDS
from distill.store import DatasetReader, DatasetWriter

WORK = ".work"  # hidden: `datasets.load_dataset(data_dir=DIR)` and uploads skip it
PROMPT = RECORDS["prompt"]
REMOVED_COLUMNS = [
    pa.field("reason", pa.string()),
    pa.field("matched_id", pa.string()),
    pa.field("matched_source", pa.string()),
    pa.field("similarity", pa.float32()),
]


def run_prompts(
    input_specs: list[str],
    out: Path,
    cfg: PromptsConfig,
    *,
    benchmarks: list[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    executor: str = "local",
) -> StageResult:
    started = time.perf_counter()
    check_executor(executor)
    out = Path(out)
    bench_specs = [*cfg.decontaminate.benchmarks, *(benchmarks or [])]
    files = inputs.resolve(input_specs, cfg.rows_per_shard)
    bench_files = inputs.resolve(bench_specs, 1 << 30, what="--decontaminate") if bench_specs else []
    config = {"prompts": cfg.model_dump(), "benchmarks": [f.describe() for f in bench_files]}

    with DatasetWriter.for_record(
        out,
        stage="prompts",
        record=PROMPT,
        config=config,
        inputs=[f.describe() for f in files],
        overwrite=overwrite,
    ) as ds:
        opened = ds.open()
        work = out / WORK
        if done := already_done(opened, started):
            shutil.rmtree(work, ignore_errors=True)
            return done

        index = build_index(bench_files, cfg.decontaminate.ngram) if bench_files else None
        index_path = None
        if index is not None:
            work.mkdir(parents=True, exist_ok=True)
            index_path = work / "benchmarks"
            index.save(index_path)

        # Pass 1: per chunk, in parallel, resumable.
        signatures = work / "signatures"
        pass1 = MapStage(
            name="prompts",
            function="distill.prompts.signatures:signatures",
            options={
                "num_perm": cfg.dedup.num_perm,
                "shingle_size": cfg.dedup.shingle_size,
                "seed": cfg.dedup.seed,
                "benchmark_index": str(index_path.resolve()) if index_path else None,
                "detect_language": cfg.language.detect,
            },
            input_record=PROMPT.name,
            mappings=tuple(cfg.sources),
        )
        run_map_stage(
            pass1,
            input_specs,
            signatures,
            workers=workers,
            rows_per_shard=cfg.rows_per_shard,
            show_progress=show_progress,
            executor=executor,
        )

        # Pass 2: global decisions (seconds; recomputed on a resume rather than stored).
        reader = DatasetReader(signatures)
        columns = _load_columns(reader, cfg.dedup.num_perm)
        decisions = decide(
            columns["codes"], columns["sig"], columns["numbers"], columns["bench"], columns["bench_sim"], cfg.dedup
        )
        del columns["sig"]

        # Pass 3: shard k of the work folder -> shard k of DIR.
        shards = [reader.manifest.shards[i] for i in sorted(reader.manifest.shards)]
        ds.set_plan(len(shards))
        offset = 0
        with StageProgress("prompts: write", reader.num_rows, enabled=show_progress) as progress:
            for k, entry in enumerate(shards):
                if k not in opened.done:
                    ds.record_shard(_write_shard(ds, k, signatures, entry, offset, decisions, columns, index))
                offset += entry["rows"]
                progress.advance(entry["rows"])
        report = _report(decisions, columns, reader)
        manifest = ds.finish({"report": report, "seconds": round(time.perf_counter() - started, 3)})
    shutil.rmtree(work, ignore_errors=True)
    return StageResult(manifest, False, time.perf_counter() - started, opened.redone)


def _load_columns(reader: DatasetReader, num_perm: int) -> dict[str, Any]:
    """The columns pass 2 needs, for every row, in input order (signatures as one NumPy matrix)."""
    n = reader.num_rows
    sig = np.empty((n, num_perm), np.uint32)
    numbers = np.empty(n, np.uint64)
    bench = np.empty(n, np.int64)
    bench_sim = np.empty(n, np.float32)
    ids: list[pa.Array] = []
    sources: list[pa.Array] = []
    row = 0
    for b in reader.iter_batches(
        columns=["id", "source", "_sig", "_numbers", "_bench", "_bench_sim"], batch_size=65_536
    ):
        k = b.num_rows
        sig[row : row + k] = b.column("_sig").values.to_numpy().reshape(k, num_perm)
        numbers[row : row + k] = b.column("_numbers").to_numpy()
        bench[row : row + k] = pc.fill_null(b.column("_bench"), -1).to_numpy()
        bench_sim[row : row + k] = pc.fill_null(b.column("_bench_sim"), 0.0).to_numpy()
        ids.append(b.column("id"))
        sources.append(b.column("source"))
        row += k
    id_array = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else pa.array([], pa.string())
    source_array = pa.chunked_array(sources, pa.string()).combine_chunks() if sources else pa.array([], pa.string())
    codes = pc.dictionary_encode(id_array).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return {
        "codes": codes,
        "sig": sig,
        "numbers": numbers,
        "bench": bench,
        "bench_sim": bench_sim,
        "ids": id_array,
        "sources": source_array,
    }


def _write_shard(
    ds: DatasetWriter,
    k: int,
    signatures: Path,
    entry: dict[str, Any],
    offset: int,
    d: Decisions,
    columns: dict[str, Any],
    index: BenchmarkIndex | None,
) -> dict[str, Any]:
    if entry["rows"]:
        table = pq.read_table(signatures / entry["file"]).select([c.name for c in PROMPT.columns])
    else:  # every row of this chunk was rejected
        table = PROMPT.schema.empty_table()
    n = table.num_rows
    reason = d.reason[offset : offset + n]
    sh = ds.shard(k, PROMPT.schema)
    try:
        sh.write(table.filter(pa.array(reason == KEPT)).cast(PROMPT.schema))
        gone = np.flatnonzero(reason != KEPT)
        if len(gone):
            sh.remove(_removed_rows(table.take(gone), offset + gone, d, columns, index))
        if "rejects" in entry:  # bad input rows found in pass 1 surface in DIR/_rejects/
            for rej in pq.read_table(signatures / entry["rejects"]["file"]).to_pylist():
                sh.reject(rej["input"], rej["row"], rej["error"], rej["raw"])
        return sh.commit(rows_in=entry["rows_in"], input={"file": k, "start": 0, "stop": n})
    except BaseException:
        sh.abort()
        raise


def _removed_rows(
    table: pa.Table, rows: np.ndarray, d: Decisions, columns: dict[str, Any], index: BenchmarkIndex | None
) -> pa.Table:
    reasons, matched_ids, matched_sources = [], [], []
    for r in rows:
        code, m = int(d.reason[r]), int(d.matched[r])
        reasons.append(REASONS[code])
        if REASONS[code] == "contaminated":
            assert index is not None
            matched_ids.append(index.ids[m])
            matched_sources.append(index.sources[m])
        else:
            matched_ids.append(columns["ids"][m].as_py())
            matched_sources.append(columns["sources"][m].as_py())
    extra = [
        pa.array(reasons, pa.string()),
        pa.array(matched_ids, pa.string()),
        pa.array(matched_sources, pa.string()),
        pa.array(d.similarity[rows], pa.float32()),
    ]
    out = table.cast(PROMPT.schema)
    for f, arr in zip(REMOVED_COLUMNS, extra, strict=True):
        out = out.append_column(f, arr)
    return out


def _report(d: Decisions, columns: dict[str, Any], reader: DatasetReader) -> dict[str, Any]:
    """Rows in, kept and removed by reason, per source; the largest duplicate clusters."""
    sources = columns["sources"]
    by_source: dict[str, dict[str, int]] = {}
    enc = pc.dictionary_encode(sources)
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    for s, name in enumerate(names):
        mask = codes == s
        counts = {"rows": int(mask.sum()), "kept": int((d.reason[mask] == KEPT).sum())}
        counts.update({reason: int((d.reason[mask] == code).sum()) for code, reason in REASONS.items()})
        by_source[name] = counts
    rejected = Counter[str]()
    for entry in reader.manifest.shards.values():
        rejected.update(entry.get("rejects", {}).get("codes", {}))
    roots = cluster_roots(d)
    dup = d.reason >= 2
    clusters = Counter(roots[dup].tolist()).most_common(10)
    top = [
        {
            "id": columns["ids"][root].as_py(),
            "source": sources[root].as_py(),
            "duplicates": size,
        }
        for root, size in clusters
    ]
    return {
        "by_source": by_source,
        "rejected": dict(rejected),
        "removed": d.counts(),
        "largest_duplicate_clusters": top,
        "lsh": {"bands": d.bands, "rows_per_band": d.rows_per_band},
    }


def print_report(report: dict[str, Any], file: Any = sys.stderr) -> None:
    reasons = list(REASONS.values())
    header = f"  {'source':<24} {'rows':>10} {'kept':>10} " + " ".join(f"{r:>16}" for r in reasons)
    print(header, file=file)
    for name, c in report["by_source"].items():
        cells = " ".join(f"{c[r]:>16,}" for r in reasons)
        print(f"  {name[:24]:<24} {c['rows']:>10,} {c['kept']:>10,} {cells}", file=file)
    for cluster in report["largest_duplicate_clusters"][:5]:
        print(f"  cluster: {cluster['duplicates']:,} duplicates of {cluster['id']} ({cluster['source']})", file=file)
