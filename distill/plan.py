"""`distill run PIPELINE.yaml --dry-run`: what a pipeline will cost before it runs.

Counts come from the inputs where they are local (rows of each file, as the stages plan them) and
otherwise from the pipeline's `plan:` assumptions, which are printed beside every figure derived from
them: prompts, teacher requests and tokens, teacher GPU-hours at the stated serving throughput, traces
kept, SFT rows and tokens, student GPU-hours (6 x parameters x tokens x epochs at the recipe's MFU),
and the disk each dataset directory will take. Each stage says its own line (`Stage.plan`); this module
only walks the steps and adds up.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from distill.config import StrictModel
from distill.sources import inputs
from distill.stages import Context, Flow, PlanContext


class BetaRates(StrictModel):
    """Pass rates spread as Beta(alpha, beta): a strong teacher on a curated set is about Beta(2, 1)."""

    alpha: float = Field(gt=0)
    beta: float = Field(gt=0)


class PlanAssumptions(StrictModel):
    """What `distill run --dry-run` assumes where the inputs cannot tell (every figure is printed with it)."""

    prompts: int | None = Field(default=None, ge=1, description="prompts after curation, if inputs are not local")
    mean_prompt_tokens: float = Field(default=150, gt=0)
    mean_completion_tokens: float = Field(default=8_000, gt=0, description="R1 traces: thousands of tokens")
    teacher_tokens_per_s: float = Field(default=2_500, gt=0, description="generated tokens/s of one serving replica")
    gpus_per_teacher_replica: int = Field(default=16, ge=1, description="R1 671B: 2 nodes of 8xH100")
    keep_rate: float = Field(default=0.6, gt=0, le=1, description="share of traces the filter keeps")
    pass_rates: str | BetaRates | None = Field(
        default=None, description="each prompt's pass rate, for `generate --preset`'s estimate: a pilot run's "
        "verdicts directory (its `keep` share per prompt), a `distill difficulty` output, or {alpha, beta} of a "
        "Beta distribution; default: every prompt at keep_rate",
    )  # fmt: skip
    bytes_per_token: float = Field(default=4.0, gt=0, description="UTF-8 bytes per token of text")
    compression: float = Field(default=3.0, ge=1, description="text bytes / zstd Parquet bytes")
    shares: dict[str, float] = Field(
        default_factory=dict, description="function steps by name: the share of their input rows they keep (1.0)"
    )


def _gb(tokens: float, a: PlanAssumptions) -> float:
    return tokens * a.bytes_per_token / a.compression / 1e9


def _together(upstream: list[Flow]) -> Flow | None:
    """The flows of a step's several inputs as one: rows added, tokens per row weighted by rows."""
    if len(upstream) <= 1:
        return upstream[0] if upstream else None
    rows = sum(f.rows for f in upstream)
    tokens = sum(f.rows * f.tokens_per_row for f in upstream) / rows if rows else 0.0
    extra = dict(upstream[0].extra)
    if all("prompts" in f.extra for f in upstream):
        extra["prompts"] = sum(f.extra["prompts"] for f in upstream)
    return Flow(rows, tokens, extra=extra)


def _function_flow(name: str, src: Flow | None, specs: list[str], a: PlanAssumptions) -> Flow:
    """A batch function's output: its input's rows times `plan.shares[name]` (all of them when not given)."""
    if src is None:
        rows = inputs.count_rows(specs) if specs else None
        if rows is None:
            return Flow(0, 0, "output size not estimated")
        return Flow(rows, a.mean_prompt_tokens, f"{rows:,} rows of its local input")
    share = a.shares.get(name)
    if share is None:
        note = f"~{src.rows:,.0f} rows (all its input: plan.shares.{name} not given)"
        return Flow(src.rows, src.tokens_per_row, note, dict(src.extra))
    rows = src.rows * share
    extra = {**src.extra, **({"prompts": src.extra["prompts"] * share} if "prompts" in src.extra else {})}
    return Flow(rows, src.tokens_per_row, f"~{rows:,.0f} rows (plan.shares.{name} {share:.0%})", extra)


def plan_pipeline(pipeline: Any, contexts: list[Context]) -> list[str]:
    a: PlanAssumptions = pipeline.config.plan
    flows: dict[str, Flow] = {}
    lines = [f"plan {pipeline.config.name} (dry run: nothing is read beyond row counts, nothing is written)"]
    totals = {"teacher_gpu_h": 0.0, "teacher_usd": 0.0, "train_gpu_h": 0.0, "disk_gb": 0.0}
    width = max(10, *(len(step.name) for step in pipeline.config.steps))
    for step, ctx in zip(pipeline.config.steps, contexts, strict=True):
        stage = pipeline.stage(step)
        upstream = [flows[i] for i in step.input if i in flows]
        src = _together(upstream)
        if (plan := stage.hook("plan")) is not None:
            flow = plan(PlanContext(a, ctx.options, ctx.inputs, src, flows, ctx))
        else:
            flow = _function_flow(step.name, src, ctx.inputs, a)
        disk = _gb(flow.rows * flow.tokens_per_row, a) if stage.writes_dataset else 0.0
        totals["teacher_gpu_h"] += flow.teacher_gpu_h
        totals["teacher_usd"] += flow.teacher_usd
        totals["train_gpu_h"] += flow.train_gpu_h
        totals["disk_gb"] += disk
        flows[step.name] = flow
        where = f", ~{disk:,.1f} GB" if disk else ""
        lines.append(f"  {step.name:<{width}} {step.stage or 'function':<9} {flow.note or '-'}{where}")
    api = f" + ~${totals['teacher_usd']:,.0f} of hosted API" if totals["teacher_usd"] else ""
    lines.append(
        f"  total: teacher {totals['teacher_gpu_h']:,.0f} GPU-hours{api}, "
        f"training {totals['train_gpu_h']:,.0f} GPU-hours, "
        f"disk ~{totals['disk_gb']:,.0f} GB ({a.bytes_per_token:g} bytes/token, {a.compression:g}x zstd)"
    )
    return lines
