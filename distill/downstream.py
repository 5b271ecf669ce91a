"""Steps downstream of the SFT set, whose output is not a dataset directory: a data card, an upload, a
checkpoint, an evaluation, a comparison of evaluations. Each is declared like any stage (`distill.stages`),
so the pipeline runs, plans and reports it the same way; their commands (`distill card DIR`, `distill train
RECIPE`, ...) take positional arguments and launchers, so they are written by hand in `distill/cli.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from distill.config import StrictModel, load_config
from distill.errors import UserError
from distill.stages import Context, Done, Flow, PlanContext, Stage, register


def _step(**declaration: Any) -> None:
    """Register a step that writes no dataset directory; its command is written by hand in cli.py."""
    register(Stage(**declaration, rows_per_shard=None, cli=False))


def _source(ctx: Context) -> Path:
    if len(ctx.inputs) != 1:
        raise UserError(f"step {ctx.out.name!r}: give exactly one input")
    return Path(ctx.inputs[0])


class CardOptions(StrictModel):
    """`options` of `stage: card`: the card is written into the input dataset directory (`DIR/README.md`)."""

    license: str = "other"
    pretty_name: str | None = None


class PublishOptions(StrictModel):
    """`options` of `stage: publish`."""

    repo_id: str = Field(description="ORG/NAME of the Hub dataset repo")
    dry_run: bool = Field(default=True, description="stage and validate the upload folder only (no token needed)")
    private: bool = False


class TrainOptions(StrictModel):
    """`options` of `stage: train`."""

    student: str = Field(description="student recipe YAML, relative to the pipeline file")
    launch: bool = Field(
        default=False,
        description="run under `accelerate launch` with the recipe's accelerate_config, num_processes and nodes "
        "(as `distill train --launch`); false: in the pipeline's own process",
    )
    max_steps: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=None, gt=0, description="overrides the recipe's epochs")
    seed: int | None = Field(default=None, description="overrides the recipe's seed (data order, sampling)")


class EvalOptions(StrictModel):
    """`options` of `stage: eval`: the input is a `stage: train` step (its checkpoint), or `model` names one."""

    benchmark: str = Field(description="benchmark file, relative to the pipeline file")
    model: str | None = Field(
        default=None, description="instead of an input: a checkpoint folder (relative to the pipeline file) or "
        "distill:tiny-qwen2, e.g. the untrained student to compare with",
    )  # fmt: skip
    samples: int = Field(default=4, ge=1)
    max_tokens: int = Field(default=32_768, ge=1)
    seed: int = 0
    batch_size: int = Field(default=16, ge=1)


class CompareOptions(StrictModel):
    """`options` of `stage: compare`: the step's eval inputs grouped into arms."""

    arms: dict[str, list[str]] = Field(
        min_length=2, description="arm -> its eval steps, one per seed, in the same seed order in every arm"
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["pass@1", "boxed_pct", "closed_think_pct"], min_length=1,
        description="keys of the eval results' metrics",
    )  # fmt: skip
    expect_better: str | None = Field(default=None, description="the arm expected to lead on every metric")

    @model_validator(mode="after")
    def _paired(self) -> CompareOptions:
        sizes = {len(steps) for steps in self.arms.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError("every arm needs the same number of eval steps (one per seed), at least one")
        if self.expect_better is not None and self.expect_better not in self.arms:
            raise ValueError(f"expect_better {self.expect_better!r} is not one of the arms {sorted(self.arms)}")
        return self


# --- card -------------------------------------------------------------------------------------------


def _card(ctx: Context) -> Done:
    from distill.card import write_card

    path = write_card(_source(ctx), license=ctx.options.license, pretty_name=ctx.options.pretty_name)
    return Done(False, f"data card -> {path}")


_step(
    name="card",
    help="Write the data card into the input dataset directory (`DIR/README.md`).",
    options=CardOptions,
    run=_card,
    plan=lambda p: Flow(0, 0, "data card written into its input"),
)


# --- publish ----------------------------------------------------------------------------------------


def _publish(ctx: Context) -> Done:
    from distill.hub import publish

    o = ctx.options
    done = publish(_source(ctx), o.repo_id, dry_run=o.dry_run, private=o.private)
    what = f"dry run: would upload {len(done.files)} files to {o.repo_id}" if o.dry_run else f"uploaded: {done.url}"
    return Done(False, f"{what} (staged in {done.staging})")


_step(
    name="publish",
    help="Upload the input dataset directory to a Hub dataset repo.",
    options=PublishOptions,
    run=_publish,
    plan=lambda p: Flow(0, 0, f"upload to {p.options.repo_id}" + " (dry run)" * p.options.dry_run),
)


# --- train ------------------------------------------------------------------------------------------


def _load_student(ctx: Context) -> Any:
    from distill.train.config import StudentConfig
    from distill.train.sft import check_sft_args

    o = ctx.options
    student = load_config(ctx.path(o.student), StudentConfig)
    check_sft_args(student)  # a typo in the recipe stops the pipeline before its first step
    return student.model_copy(update={k: v for k, v in (("epochs", o.epochs), ("seed", o.seed)) if v is not None})


def _launched(ctx: Context) -> dict[str, Any]:
    """Train under `accelerate launch` with the recipe's processes; the step's overrides (epochs, seed,
    max_steps) reach the processes through the effective recipe, written beside the checkpoints."""
    import subprocess

    import yaml

    from distill.train.launch import launch_command, show
    from distill.train.sft import already_trained

    student, data = ctx.settings, str(_source(ctx))
    if ctx.options.max_steps:
        student = student.model_copy(update={"max_steps": ctx.options.max_steps})
    if (done := already_trained(student, data, ctx.out)) is not None:
        return done
    ctx.out.mkdir(parents=True, exist_ok=True)
    recipe = ctx.out / "distill_recipe.yaml"
    recipe.write_text(yaml.safe_dump(student.model_dump(mode="json"), sort_keys=False))
    cmd = launch_command(student, recipe, data=data, out=ctx.out, overwrite=ctx.overwrite)
    print(f"{ctx.out.name}: {show(cmd)}", file=sys.stderr)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise UserError(f"step {ctx.out.name!r}: accelerate launch exited with status {code} (its output is above)")
    return json.loads((ctx.out / "distill_train.json").read_text())


def _train(ctx: Context) -> Done:
    from distill.train.sft import train

    started = time.perf_counter()
    if ctx.options.launch:
        summary = _launched(ctx)
    else:
        summary = train(ctx.settings, str(_source(ctx)), ctx.out, max_steps=ctx.options.max_steps,
                        overwrite=ctx.overwrite)  # fmt: skip
    loss = summary["train_loss"]
    last = summary["loss_history"][-1] if summary["loss_history"] else loss
    return Done(bool(summary.get("skipped")),
                f"{summary['global_step']} steps, final loss {last:.3f} (mean {loss:.3f}) -> {ctx.out}",
                time.perf_counter() - started)  # fmt: skip


def _plan_train(p: PlanContext) -> Flow:
    student, src = p.ctx.settings, p.upstream
    tokens = (src.rows * src.tokens_per_row) if src else 0
    hw, params_b = student.hardware, student.params_b
    gpu_h = 6 * params_b * 1e9 * tokens * student.epochs / (hw.peak_tflops * 1e12 * hw.mfu) / 3600 if params_b else 0.0
    return Flow(0, 0, f"{student.name}: {tokens / 1e9:,.2f}B tokens x {student.epochs:g} epochs; "
                      f"{gpu_h:,.0f} GPU-hours on {student.num_processes} {hw.gpu} "
                      f"({gpu_h / max(1, student.num_processes):,.1f} h wall) at {hw.mfu:.0%} MFU"
                      + ("" if params_b else " (params_b unknown)"), train_gpu_h=gpu_h)  # fmt: skip


_step(
    name="train",
    help="Fine-tune a student (its recipe YAML) on the input SFT set.",
    options=TrainOptions,
    load=_load_student,
    run=_train,
    plan=_plan_train,
)


# --- eval -------------------------------------------------------------------------------------------


def _eval(ctx: Context) -> Done:
    from distill.eval.run import run_eval

    o, started = ctx.options, time.perf_counter()
    if (o.model is None) == (not ctx.inputs):
        raise UserError(f"step {ctx.out.name!r}: give either an input (a train step) or options.model, not both")
    model = _source(ctx) if o.model is None else (o.model if o.model.startswith("distill:") else ctx.path(o.model))
    results = run_eval(str(model), ctx.path(o.benchmark), o.samples, ctx.out, max_tokens=o.max_tokens,
                       seed=o.seed, batch_size=o.batch_size, overwrite=ctx.overwrite,
                       show_progress=ctx.show_progress)  # fmt: skip
    m = results["metrics"]
    k = m["samples_per_problem"]
    return Done(
        results.get("reused", False),
        f"pass@1 {m['pass@1']:.1f} ± {m['pass@1_stderr']:.1f} on {m['problems']} problems x {k}, maj@{k} "
        f"{m.get(f'maj@{k}')}, think closed {m['closed_think_pct']}%, boxed {m['boxed_pct']}%, "
        f"mean {m['mean_response_tokens']} tokens -> {ctx.out / 'results.json'}",
        time.perf_counter() - started,
    )


_step(
    name="eval",
    help="Evaluate the input checkpoint on a benchmark with the filters' verifiers.",
    options=EvalOptions,
    run=_eval,
    input_optional=True,
    plan=lambda p: Flow(0, 0, f"{p.options.samples} samples per problem of {p.options.benchmark}"),
)


# --- compare ----------------------------------------------------------------------------------------


def _check_arms(ctx: Context) -> None:
    """Every arm names eval steps among this step's inputs (checked before the first step runs)."""
    for arm, names in ctx.options.arms.items():
        for name in names:
            if str(ctx.steps.get(name)) not in ctx.inputs or ctx.step_stages.get(name) != "eval":
                raise UserError(f"arms.{arm}: {name!r} is not an eval step in this step's input")


def _compare(ctx: Context) -> Done:
    from distill.compare import render, run_compare

    arms = {arm: [ctx.steps[name] for name in names] for arm, names in ctx.options.arms.items()}
    doc = run_compare(arms, ctx.out, ctx.options.metrics, ctx.options.expect_better)
    table = "\n".join(render(doc))
    return Done(False, f"{len(arms)} arms x {doc['seeds']} seeds -> {ctx.out / 'comparison.md'}\n{table}")


def _plan_compare(p: PlanContext) -> Flow:
    seeds = len(next(iter(p.options.arms.values())))
    return Flow(0, 0, f"{len(p.options.arms)} arms x {seeds} seeds on {', '.join(p.options.metrics)}")


_step(
    name="compare",
    help="Compare arms of eval steps, seed by seed.",
    options=CompareOptions,
    load=_check_arms,
    run=_compare,
    plan=_plan_compare,
)
