"""`distill difficulty`: each prompt's pass rate for a *student*, so a set can drop what it already solves.

Teams that distill today (s1, Light-R1, OpenThoughts, Sky-T1) spend teacher tokens where the student is
weak: the base student is run on the prompts k times, through the same generation and verifiers as
`distill eval` (the R1 evaluation prompts, the filters' correctness checks), and each prompt gets

    pass_rate = correct / verified samples        (null when no sample could be verified)

`distill select --student-rates DIR --max-student-pass-rate X` then keeps the prompts the student solves at
most X of the time; with `--min-pass-rate` on the teacher's own verdicts, a set keeps what the teacher
solves and the student does not. The output is a dataset directory with one row per prompt; the student's
samples and their verdicts stay beside it in `_samples/` and `_scored/` (resumable, and there to read).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from distill.records import RECORDS
from distill.sources import inputs
from distill.stages import Context, Flow, PlanContext, invoke
from distill.store import DatasetReader, ShardWriter, StageOutput, StageResult

RATE_BUCKETS = ((0.0, "0"), (0.25, "(0, 0.25]"), (0.5, "(0.25, 0.5]"), (0.75, "(0.5, 0.75]"), (0.999999, "(0.75, 1)"),
                (1.0, "1"))  # fmt: skip
RATES_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("domain", pa.string()), ("problem", pa.large_string()),
    ("answer", pa.large_string()), ("student", pa.string()), ("samples", pa.int32()), ("verified", pa.int32()),
    ("correct", pa.int32()), ("pass_rate", pa.float64()),
])  # fmt: skip


def histogram(rates: list[float | None]) -> dict[str, int]:
    """Prompts per pass-rate bucket (0, (0, 0.25], ..., 1) and those without a rate."""
    out = dict.fromkeys([label for _, label in RATE_BUCKETS] + ["no rate"], 0)
    for rate in rates:
        out["no rate" if rate is None else next(label for edge, label in RATE_BUCKETS if rate <= edge)] += 1
    return out


def histogram_line(hist: dict[str, int]) -> str:
    """`0 7, (0, 0.25] 4, ..., 1 316`: the buckets that hold prompts."""
    return ", ".join(f"{k} {v:,}" for k, v in hist.items() if v)


def prompt_counts(table: pa.Table) -> dict[str, tuple[int, int, int]]:
    """id -> (samples, verified, correct) of verdict rows with `id` and `correct` (null: not verified)."""
    agg = table.select(["id", "correct"]).group_by("id").aggregate(
        [([], "count_all"), ("correct", "count"), ("correct", "sum")]
    ).to_pydict()  # fmt: skip
    return {pid: (n, verified, correct or 0) for pid, n, verified, correct in zip(
        agg["id"], agg["count_all"], agg["correct_count"], agg["correct_sum"], strict=True)}  # fmt: skip


def pass_rates(verdicts: Path) -> dict[str, tuple[int, int, int]]:
    """id -> (samples, verified, correct) over a verdict directory."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for batch in DatasetReader(verdicts).iter_batches(columns=["id", "correct"], batch_size=65_536):
        for pid, part in prompt_counts(pa.Table.from_batches([batch])).items():
            counts[pid] = [x + y for x, y in zip(counts[pid], part, strict=True)]
    return {pid: (n, v, c) for pid, (n, v, c) in counts.items()}


def read_rates(path: Path) -> dict[str, float | None]:
    """id -> pass_rate of a `distill difficulty` output."""
    out: dict[str, float | None] = {}
    for batch in DatasetReader(path).iter_batches(columns=["id", "pass_rate"]):
        out.update(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True))
    return out


def run(ctx: Context) -> StageResult:
    from distill.eval.run import EVAL_PRESET, model_fingerprint, resolve_model, teacher_for

    input_specs, out, opts, rows_per_shard = ctx.inputs, ctx.out, ctx.options, ctx.rows_per_shard
    overwrite, show_progress = ctx.overwrite, ctx.show_progress
    opts = opts.model_copy(update={"model": resolve_model(opts.model)})
    cfg = teacher_for(opts.model, opts.samples, backend=opts.backend, max_tokens=opts.max_tokens,
                      temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed,
                      served_model_name=opts.served_model_name, concurrency=64, batch_size=16)  # fmt: skip
    files = inputs.resolve(input_specs, rows_per_shard)
    inputs.check_columns(files, RECORDS["prompt"])
    inputs.preflight(files, RECORDS["prompt"])
    config = {"student": cfg.fingerprint_fields(), "model_fingerprint": model_fingerprint(opts.model)}
    described = [f.describe() for f in files]
    with StageOutput(out, stage="difficulty", record=None, config=config, inputs=described,
                     overwrite=overwrite) as o:  # fmt: skip
        if o.complete:
            return o.skipped()
        common = {"overwrite": overwrite, "show_progress": show_progress}
        invoke("generate", input_specs, out / "_samples", settings=cfg,
               rows_per_shard=max(1, rows_per_shard // opts.samples), **common)  # fmt: skip
        invoke("filter", [out / "_samples"], out / "_scored", settings=EVAL_PRESET, workers=ctx.workers, **common)
        counts = pass_rates(out / "_scored")
        prompts: dict[str, dict[str, Any]] = {}
        for chunk in inputs.plan(files, 1 << 62):  # the prompts in input order, each once
            for batch in inputs.read_chunk(chunk, RECORDS["prompt"], 65_536):
                for r in batch.table.select(["id", "source", "domain", "problem", "answer", "tests"]).to_pylist():
                    prompts.setdefault(r["id"], r)
        # No verifier: a general prompt, or one without its answer (tests for code); a raw file whose rows name
        # no domain reads as general: `distill prompts` detects math, code and multiple-choice layouts.
        unverifiable = sum(r["domain"] == "general" or not (r.pop("tests") if r["domain"] == "code" else r["answer"])
                           for r in prompts.values())  # fmt: skip
        rows = []
        for pid, r in prompts.items():
            n, verified, correct = counts.get(pid, (0, 0, 0))
            rate = correct / verified if verified else None
            rows.append({**r, "student": cfg.teacher_name, "samples": n, "verified": verified, "correct": correct,
                         "pass_rate": rate})  # fmt: skip
        o.writer.set_plan(1)
        shard = ShardWriter(out, 0, RATES_SCHEMA)
        shard.write(pa.Table.from_pylist(rows, schema=RATES_SCHEMA))
        o.writer.record_shard(shard.commit(rows_in=len(prompts), input="prompts"))
        rates = [r["pass_rate"] for r in rows]
        known = [x for x in rates if x is not None]
        stats = {"student": cfg.teacher_name, "samples_per_prompt": opts.samples, "seed": opts.seed,
                 "prompts": len(rows), "mean_pass_rate": round(sum(known) / len(known), 4) if known else None,
                 "histogram": histogram(rates), "no_verifier": unverifiable}  # fmt: skip
        return o.finish({"difficulty": stats})


def plan(p: PlanContext) -> Flow:
    src, k = p.upstream, p.options.samples
    rows = src.rows if src else 0
    return Flow(rows, 0, f"the student's pass rate on {rows:,.0f} prompts ({k} samples each)")


def rate_line(s: dict[str, Any]) -> str:
    hist = histogram_line(s["histogram"])
    mean = f"{s['mean_pass_rate']:.3f}" if s["mean_pass_rate"] is not None else "none"
    k = s["samples_per_prompt"]
    return f"student {s['student']}: mean pass rate {mean} over {s['prompts']:,} prompts x {k}; {hist}"


def details(result: StageResult, ctx: Context) -> None:
    stats = result.manifest.stats["difficulty"]
    print(f"  {rate_line(stats)}", file=sys.stderr)
    if stats.get("no_verifier"):
        print(f"  {stats['no_verifier']:,} prompts have no verifier (domain general, or no answer / tests): no rate; "
              "run `distill prompts` on a raw file first, it detects math, code and multiple-choice layouts",
              file=sys.stderr)  # fmt: skip
