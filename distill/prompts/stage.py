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

import json
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.executor import MapStage, check_executor, run_map_stage
from distill.progress import StageProgress
from distill.prompts import decontaminate
from distill.prompts.config import PromptsConfig
from distill.prompts.decontaminate import BenchmarkIndex, build_index
from distill.prompts.dedup import CONTAMINATED, KEPT, REASONS, Decisions, cluster_roots, decide
from distill.records import RECORDS
from distill.sources import inputs, layouts
from distill.stages import Context, Flow, PlanContext
from distill.store import WORK, DatasetReader, DatasetWriter, StageOutput, StageResult

PROMPT = RECORDS["prompt"]
REMOVED_COLUMNS = [
    pa.field("reason", pa.string()),
    pa.field("matched_id", pa.string()),
    pa.field("matched_source", pa.string()),
    pa.field("similarity", pa.float32()),
    # contaminated rows only: the plain share of the item's n-grams in the prompt, the longest run of words
    # both share (matching form) and the benchmark problem itself, so a person can check the match
    pa.field("matched_coverage", pa.float32()),
    pa.field("matched_span", pa.large_string()),
    pa.field("matched_text", pa.large_string()),
]


def run(ctx: Context) -> StageResult:
    cfg: PromptsConfig = ctx.options
    input_specs, out, rows_per_shard = ctx.inputs, ctx.out, ctx.rows_per_shard
    overwrite, show_progress, executor = ctx.overwrite, ctx.show_progress, ctx.executor
    check_executor(executor)
    bench_specs = [str(ctx.path(b)) for b in cfg.decontaminate.benchmarks]
    cfg = cfg.model_copy(update={"decontaminate": cfg.decontaminate.model_copy(update={"benchmarks": bench_specs})})
    files = inputs.resolve(input_specs, rows_per_shard)
    bench_files = inputs.resolve(bench_specs, 1 << 30, what="--decontaminate") if bench_specs else []
    found = inputs.layouts_of(files, cfg.sources)
    mappings = tuple(m for _, m in found if m is not None)
    sources = [
        {
            "path": f.path,
            "source": f.source,
            "layout": name,
            "mapping": m.model_dump(exclude_defaults=True) if m else None,
        }
        for f, (name, m) in zip(files, found, strict=True)
    ]
    config = {
        "prompts": {**cfg.model_dump(), "rows_per_shard": rows_per_shard},
        "benchmarks": [f.describe() for f in bench_files],
        "sources": sources,
    }

    described = [f.describe() for f in files]
    with StageOutput(out, stage="prompts", record=PROMPT, config=config, inputs=described, overwrite=overwrite) as o:
        if o.complete:
            return o.skipped()
        ds, work = o.writer, out / WORK

        index, bench_layouts = build_index(bench_files, cfg.decontaminate, cfg.sources) if bench_files else (None, [])
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
            mappings=mappings,
        )
        run_map_stage(pass1, replace(ctx, out=signatures, overwrite=False))

        # Pass 2: global decisions (seconds; recomputed on a resume rather than stored).
        reader = DatasetReader(signatures)
        columns = _load_columns(reader, cfg.dedup.num_perm)
        matches = decontaminate.decide(
            index, columns.pop("bench_grams"), columns.pop("bench_cands"), columns.pop("bench_nums"),
            cfg.decontaminate.threshold,
        )  # fmt: skip
        columns.update(bench=matches.item, bench_sim=matches.score, bench_cov=matches.coverage)
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
                if k not in o.opened.done:
                    ds.record_shard(_write_shard(ds, k, signatures, entry, offset, decisions, columns, index))
                offset += entry["rows"]
                progress.advance(entry["rows"])
        report = _report(decisions, columns, reader, index)
        report["sources"] = sources
        report["benchmarks"] = bench_layouts
        return o.finish({"report": report})


_PASS2_TYPES = {
    "id": pa.string(),
    "source": pa.string(),
    "_bench_grams": pa.list_(pa.int32()),
    "_bench_cands": pa.list_(pa.int32()),
    "_bench_nums": pa.list_(pa.string()),
}


def _load_columns(reader: DatasetReader, num_perm: int) -> dict[str, Any]:
    """The columns pass 2 needs, for every row, in input order (signatures as one NumPy matrix)."""
    n = reader.num_rows
    sig = np.empty((n, num_perm), np.uint32)
    numbers = np.empty(n, np.uint64)
    lists: dict[str, list[pa.Array]] = {name: [] for name in _PASS2_TYPES}
    row = 0
    for b in reader.iter_batches(columns=["_sig", "_numbers", *lists], batch_size=65_536):
        k = b.num_rows
        sig[row : row + k] = b.column("_sig").values.to_numpy().reshape(k, num_perm)
        numbers[row : row + k] = b.column("_numbers").to_numpy()
        for name, parts in lists.items():
            parts.append(b.column(name))
        row += k
    whole = {name: pa.chunked_array(parts, _PASS2_TYPES[name]) for name, parts in lists.items()}
    id_array = whole["id"].combine_chunks()
    source_array = whole["source"].combine_chunks()
    codes = pc.dictionary_encode(id_array).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return {
        "codes": codes,
        "sig": sig,
        "numbers": numbers,
        "ids": id_array,
        "sources": source_array,
        "bench_grams": whole["_bench_grams"],
        "bench_cands": whole["_bench_cands"],
        "bench_nums": whole["_bench_nums"],
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
    reasons, matched_ids, matched_sources, spans, texts = [], [], [], [], []
    problems = table.column("problem").to_pylist()
    for r, problem in zip(rows, problems, strict=True):
        code, m = int(d.reason[r]), int(d.matched[r])
        reasons.append(REASONS[code])
        if REASONS[code] == "contaminated":
            assert index is not None
            matched_ids.append(index.ids[m])
            matched_sources.append(index.sources[m])
            spans.append(decontaminate.longest_shared_span(index, problem, m))
            texts.append(index.texts[m])
        else:
            matched_ids.append(columns["ids"][m].as_py())
            matched_sources.append(columns["sources"][m].as_py())
            spans.append(None)
            texts.append(None)
    contaminated = d.reason[rows] == CONTAMINATED
    extra = [
        pa.array(reasons, pa.string()),
        pa.array(matched_ids, pa.string()),
        pa.array(matched_sources, pa.string()),
        pa.array(d.similarity[rows], pa.float32()),
        pa.array(np.where(contaminated, columns["bench_cov"][rows], np.nan), pa.float32(), mask=~contaminated),
        pa.array(spans, pa.large_string()),
        pa.array(texts, pa.large_string()),
    ]
    out = table.cast(PROMPT.schema)
    for f, arr in zip(REMOVED_COLUMNS, extra, strict=True):
        out = out.append_column(f, arr)
    return out


def _report(
    d: Decisions, columns: dict[str, Any], reader: DatasetReader, index: BenchmarkIndex | None
) -> dict[str, Any]:
    """Rows in, kept and removed by reason, per source; the largest duplicate clusters; the benchmark items
    prompts were found to copy."""
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
    copied = Counter(d.matched[d.reason == CONTAMINATED].tolist())
    contamination = {
        "items_matched": len(copied),
        "items": len(index.ids) if index else 0,
        "top": [
            {"id": index.ids[j], "source": index.sources[j], "prompts": k} for j, k in copied.most_common(20)
        ] if index else [],
    }  # fmt: skip
    return {
        "by_source": by_source,
        "rejected": dict(rejected),
        "removed": d.counts(),
        "largest_duplicate_clusters": top,
        "contamination": contamination,
        "lsh": {"bands": d.bands, "rows_per_band": d.rows_per_band},
    }


def print_report(report: dict[str, Any], file: Any = sys.stderr) -> None:
    for kind, found in (("layout", report.get("sources", [])), ("benchmark", report.get("benchmarks", []))):
        for line in layouts.report_lines(found, layouts.LAYOUTS, kind):
            print(f"  {line}", file=file)
    reasons = list(REASONS.values())
    header = f"  {'source':<24} {'rows':>10} {'kept':>10} " + " ".join(f"{r:>16}" for r in reasons)
    print(header, file=file)
    for name, c in report["by_source"].items():
        cells = " ".join(f"{c[r]:>16,}" for r in reasons)
        print(f"  {name[:24]:<24} {c['rows']:>10,} {c['kept']:>10,} {cells}", file=file)
    for cluster in report["largest_duplicate_clusters"][:5]:
        print(f"  cluster: {cluster['duplicates']:,} duplicates of {cluster['id']} ({cluster['source']})", file=file)
    c = report.get("contamination")
    if c and c["items"]:
        print(
            f"  contaminated: {report['removed']['contaminated']:,} prompts copy {c['items_matched']:,} of "
            f"{c['items']:,} benchmark items (`distill inspect DIR` lists each match with its evidence)",
            file=file,
        )


def _contamination(reader: DatasetReader, console: Any, limit: int) -> None:
    """Each benchmark item with the prompts removed as its copies, and the evidence: how to audit a run."""
    from rich.markup import escape

    from distill.inspect import clip

    by_item: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for batch in reader.iter_side("removed", batch_size=65_536):
        for r in batch.to_pylist():
            if r["reason"] == "contaminated":
                by_item[(r["matched_source"], r["matched_id"])].append(r)
    console.print(f"[bold]contamination[/]: {sum(map(len, by_item.values())):,} prompts copy {len(by_item):,} items")
    ranked = sorted(by_item.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for (source, item), found in ranked[:limit]:
        copies = f"{len(found):,} prompt{'s' if len(found) != 1 else ''}"
        console.print(f"  {source} {item}: {copies}  [dim]{escape(clip(found[0].get('matched_text'), 90))}[/]")
        for r in sorted(found, key=lambda r: -r["similarity"])[:limit]:
            ident = json.loads(r["meta"]).get("source_id", r["id"]) if r.get("meta") else r["id"]
            coverage = r.get("matched_coverage")
            console.print(
                f"    {r['source']} {ident}  score {r['similarity']:.2f}"
                + (f"  covers {coverage:.0%}" if coverage is not None else "")
                + f"  shared: {clip(r.get('matched_span'), 90)}",
                highlight=False,
                markup=False,
            )
    if len(ranked) > limit:
        console.print(f"  … {len(ranked) - limit:,} more items (--matches N, or read _removed/ with DuckDB)")


def inspect_output(reader: DatasetReader, console: Any, limit: int) -> None:
    removed = reader.manifest.stats.get("report", {}).get("removed")
    if not removed:
        return
    console.print(f"removed {sum(removed.values()):,} rows (in _removed/, with matched_id and similarity)")
    for reason, n in removed.items():
        console.print(f"  removed   {reason:<20} {n:>10,}")
    if removed.get("contaminated") and limit:
        _contamination(reader, console, limit)


def plan(p: PlanContext) -> Flow:
    counted = inputs.count_rows(p.inputs)
    rows = counted if counted is not None else p.assumptions.prompts
    if rows is None:
        rows, how = 0, "inputs not local and no plan.prompts"
    else:
        how = "rows of the local inputs" if counted is not None else "plan.prompts"
    return Flow(rows, p.assumptions.mean_prompt_tokens, f"{rows:,.0f} prompts ({how}; dedup not estimated)")


def details(result: StageResult, ctx: Context) -> None:
    print_report(result.manifest.stats["report"])
