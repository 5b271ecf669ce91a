"""`distill run PIPELINE.yaml --dry-run`: what a pipeline will cost before it runs.

Counts come from the inputs where they are local (rows of each file, as the stages plan them) and
otherwise from the pipeline's `plan:` assumptions, which are printed beside every figure derived from
them: prompts, teacher requests and tokens, teacher GPU-hours at the stated serving throughput, traces
kept, SFT rows and tokens, student GPU-hours (6 x parameters x tokens x epochs at the recipe's MFU),
and the disk each dataset directory will take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import OTHER_STAGES, PlanAssumptions


@dataclass
class Flow:
    """What flows out of a step, as the plan estimates it."""

    rows: float
    tokens_per_row: float  # text tokens per row (prompt + completion for traces)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _gb(tokens: float, a: PlanAssumptions) -> float:
    return tokens * a.bytes_per_token / a.compression / 1e9


def _local_rows(specs: list[str]) -> int | None:
    """Rows of local inputs, or None when any is missing or remote (hf:)."""
    from distill import inputs

    if any(s.startswith("hf:") for s in specs):
        return None
    try:
        return sum(f.rows for f in inputs.resolve(specs, 10_000))
    except Exception:  # a missing or unreadable input: the plan falls back on its assumption
        return None


def plan_pipeline(pipeline: Any, settings: dict[str, Any]) -> list[str]:
    a: PlanAssumptions = pipeline.config.plan
    flows: dict[str, Flow] = {}
    lines = [f"plan {pipeline.config.name} (dry run: nothing is read beyond row counts, nothing is written)"]
    totals = {"teacher_gpu_h": 0.0, "train_gpu_h": 0.0, "disk_gb": 0.0}
    width = max(10, *(len(step.name) for step in pipeline.config.steps))
    for step in pipeline.config.steps:
        cfg = settings[step.name]
        upstream = [flows[i] for i in step.input if i in flows]
        src = upstream[0] if upstream else None
        kind = step.stage or "function"
        if kind == "prompts":
            counted = _local_rows(pipeline.step_inputs(step))
            rows = counted if counted is not None else a.prompts
            if rows is None:
                rows, how = 0, "inputs not local and no plan.prompts"
            else:
                how = "rows of the local inputs" if counted is not None else "plan.prompts"
            flow = Flow(rows, a.mean_prompt_tokens, f"{rows:,.0f} prompts ({how}; dedup not estimated)")
        elif kind == "generate":
            requests = (src.rows if src else 0) * cfg.samples
            tokens = requests * a.mean_completion_tokens
            gpu_h = tokens / a.teacher_tokens_per_s / 3600 * a.gpus_per_teacher_replica
            replica = f"{a.gpus_per_teacher_replica}-GPU replica"
            serving = f"{gpu_h:,.0f} GPU-hours at {a.teacher_tokens_per_s:,.0f} tok/s per {replica}"
            if cfg.backend == "synthetic":  # the offline arithmetic teacher needs no GPU
                gpu_h, serving = 0.0, "synthetic teacher: no GPU"
            totals["teacher_gpu_h"] += gpu_h
            flow = Flow(
                requests,
                a.mean_prompt_tokens + a.mean_completion_tokens,
                extra={"prompts": src.rows if src else 0, "samples": cfg.samples},
                note=f"{requests:,.0f} requests ({cfg.samples} samples), {tokens / 1e9:,.2f}B teacher tokens "
                f"(plan.mean_completion_tokens {a.mean_completion_tokens:,.0f}); {serving}",
            )
        elif kind == "filter":
            checks = (cfg.correctness.enabled, cfg.readability.enabled, cfg.language.enabled)
            rate, how = (a.keep_rate, f"plan.keep_rate {a.keep_rate:.0%}") if any(checks) else (1.0, "no checks")
            kept = (src.rows if src else 0) * rate
            flow = Flow(src.rows if src else 0, src.tokens_per_row if src else 0,
                        f"one verdict per trace; ~{kept:,.0f} kept ({how})",
                        {**(src.extra if src else {}), "kept": kept, "keep_rate": rate})  # fmt: skip
        elif kind == "select":
            kept = src.extra.get("kept", src.rows) if src else 0
            if src and "prompts" in src.extra:  # prompts with at least one kept sample, k of them each at most
                samples = src.extra["samples"]
                with_one = src.extra["prompts"] * (1 - (1 - src.extra.get("keep_rate", a.keep_rate)) ** samples)
                kept = min(kept, with_one * min(cfg.per_prompt, samples))
            note = f"~{kept:,.0f} traces (at most {cfg.per_prompt} per prompt)"
            flow = Flow(kept, src.tokens_per_row if src else 0, note)
        elif kind == "mix":
            names = {s.name for s in pipeline.config.steps}
            rows, toks, assumed = 0.0, 0.0, []
            for source in cfg.sources:
                step_name = Path(source.path).name if Path(source.path).name in names else None
                available = flows[step_name].rows if step_name in flows else _local_rows([source.path])
                if available is None:  # not there yet: assume it fills its quota
                    available = cfg.quota(source)
                    assumed.append(source.name)
                take = cfg.quota(source) if source.upsample else min(cfg.quota(source), available)
                per_row = flows[step_name].tokens_per_row if step_name in flows else a.mean_prompt_tokens * 2
                rows += take
                toks += take * per_row
            note = f"{rows:,.0f} SFT rows, {toks / 1e9:,.2f}B tokens"
            if assumed:
                note += f" ({', '.join(assumed)} not found: assumed to fill their quotas)"
            flow = Flow(rows, toks / rows if rows else 0, note)
        elif kind == "train":
            student, _ = cfg
            tokens = (src.rows * src.tokens_per_row) if src else 0
            params_b = student.params_b
            gpu_h = 6 * params_b * 1e9 * tokens * student.epochs / (
                student.hardware.peak_tflops * 1e12 * student.hardware.mfu) / 3600 if params_b else 0.0  # fmt: skip
            totals["train_gpu_h"] += gpu_h
            flow = Flow(0, 0, f"{student.name}: {tokens / 1e9:,.2f}B tokens x {student.epochs:g} epochs; "
                              f"{gpu_h:,.0f} GPU-hours on {student.num_processes} {student.hardware.gpu} "
                              f"({gpu_h / max(1, student.num_processes):,.1f} h wall) at {student.hardware.mfu:.0%} MFU"
                              + ("" if params_b else " (params_b unknown)"))  # fmt: skip
        elif kind in ("card", "publish"):
            what = "data card written into its input" if kind == "card" else f"upload to {cfg.repo_id}"
            flow = Flow(0, 0, what + (" (dry run)" if kind == "publish" and cfg.dry_run else ""))
        elif kind == "eval":
            flow = Flow(0, 0, f"{cfg.samples} samples per problem of {cfg.benchmark}")
        elif kind == "compare":
            flow = Flow(0, 0, f"{len(cfg.arms)} arms x {len(next(iter(cfg.arms.values())))} seeds on "
                              f"{', '.join(cfg.metrics)}")  # fmt: skip
        else:
            flow = Flow(src.rows if src else 0, src.tokens_per_row if src else 0, "output size not estimated")
        disk = _gb(flow.rows * flow.tokens_per_row, a) if kind not in OTHER_STAGES else 0.0
        totals["disk_gb"] += disk
        flows[step.name] = flow
        where = f", ~{disk:,.1f} GB" if disk else ""
        lines.append(f"  {step.name:<{width}} {kind:<9} {flow.note or '-'}{where}")
    lines.append(
        f"  total: teacher {totals['teacher_gpu_h']:,.0f} GPU-hours, training {totals['train_gpu_h']:,.0f} GPU-hours, "
        f"disk ~{totals['disk_gb']:,.0f} GB ({a.bytes_per_token:g} bytes/token, {a.compression:g}x zstd)"
    )
    return lines
