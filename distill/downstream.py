"""The steps downstream of the SFT set, whose output is not a dataset directory: a data card, an upload, a
checkpoint, an evaluation, a comparison of evaluations.

card, publish and compare are declared here; train and eval beside their options (train/config.py,
eval/config.py). The functions below are their hooks: each reads the step's context and calls the library
function that does the work (imported when the step runs, so a declaration costs no torch).
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
from distill.stages import Argument, Context, Done, Flow, PlanContext, Stage, register


class CardOptions(StrictModel):
    """The card is written into the input dataset directory (`DIR/README.md`)."""

    license: str = Field(default="other", description="License id for the Hub metadata")
    pretty_name: str | None = Field(default=None, description="Pretty name; default: the directory's name")


class PublishOptions(StrictModel):
    repo_id: str = Field(description="The Hub dataset repo, ORG/NAME")
    dry_run: bool = Field(default=False, description="Stage and validate the exact upload folder; send nothing")
    private: bool = Field(default=False, description="Create the repo private")


class CompareOptions(StrictModel):
    """The step's eval inputs grouped into arms (on the command line: eval folders)."""

    arms: dict[str, list[str]] = Field(
        min_length=2, description="arm -> its evals, one per seed, in the same seed order in every arm"
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["pass@1", "boxed_pct", "closed_think_pct"], min_length=1,
        description="Keys of the eval results' metrics",
    )  # fmt: skip
    expect_better: str | None = Field(default=None, description="The arm expected to lead on every metric")

    @model_validator(mode="after")
    def _paired(self) -> CompareOptions:
        sizes = {len(steps) for steps in self.arms.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError("every arm needs the same number of eval steps (one per seed), at least one")
        if self.expect_better is not None and self.expect_better not in self.arms:
            raise ValueError(f"expect_better {self.expect_better!r} is not one of the arms {sorted(self.arms)}")
        return self


def _source(ctx: Context) -> Path:
    if len(ctx.inputs) != 1:
        raise UserError(f"step {ctx.out.name!r}: give exactly one input")
    return Path(ctx.inputs[0])


# --- card -------------------------------------------------------------------------------------------


def card(ctx: Context) -> Done:
    from distill.card import write_card

    path = write_card(_source(ctx), license=ctx.options.license, pretty_name=ctx.options.pretty_name)
    return Done(False, f"data card -> {path}")


register(
    Stage(
        name="card",
        help="""Write the data card `DIR/README.md`: Hub metadata, contents, token lengths with a histogram,
    languages, how it was built (prompts, filter funnel, selection, mix) and the commands that rebuild it.

    Example:

      distill card runs/demo/sft --license apache-2.0
    """,
        options=CardOptions,
        argument=Argument("input", "A finished dataset directory (e.g. the --out of `distill mix`)."),
        run="distill.downstream:card",
        plan=lambda p: Flow(0, 0, "data card written into its input"),
        rows_per_shard=None,
        parallel=False,
        input_flag=None,
        out_help=None,
    )
)


# --- publish ----------------------------------------------------------------------------------------


def publish(ctx: Context) -> Done:
    from distill.hub import publish

    o = ctx.options
    done = publish(_source(ctx), o.repo_id, dry_run=o.dry_run, private=o.private)
    what = f"dry run: would upload {len(done.files)} files to {o.repo_id}" if o.dry_run else f"uploaded: {done.url}"
    return Done(
        False,
        f"{what} (staged in {done.staging}; files the repo has are not sent)",
        detail=done.files if o.dry_run else [],
    )


def publish_details(done: Done, ctx: Context) -> None:
    print(f"publish: {done.report}", file=sys.stderr)
    for p in done.detail:
        print(f"  would upload  {p}", file=sys.stderr)


register(
    Stage(
        name="publish",
        help="""Upload shards, card and manifest to a Hub dataset repo; only files the repo lacks are sent.

    The token: HF_TOKEN, else the one `hf auth login` saved.

    Example:

      distill publish runs/demo/sft --repo-id my-org/demo-sft --dry-run
    """,
        options=PublishOptions,
        argument=Argument("input", "A finished dataset directory."),
        run="distill.downstream:publish",
        details="distill.downstream:publish_details",
        plan=lambda p: Flow(0, 0, f"upload to {p.options.repo_id}" + " (dry run)" * p.options.dry_run),
        rows_per_shard=None,
        parallel=False,
        input_flag=None,
        out_help=None,
    )
)


# --- train ------------------------------------------------------------------------------------------


def load_student(ctx: Context) -> Any:
    from distill.train.config import StudentConfig
    from distill.train.sft import check_sft_args

    o = ctx.options
    student = load_config(ctx.path(o.student), StudentConfig)
    check_sft_args(student)  # a typo in the recipe stops here: before a pipeline's first step, before a launcher
    return student.model_copy(update={k: v for k, v in (("epochs", o.epochs), ("seed", o.seed)) if v is not None})


def _launched(ctx: Context, data: str | None, out: Path | None) -> dict[str, Any] | None:
    """Train under `accelerate launch` with the recipe's processes; the step's overrides (epochs, seed,
    max_steps) reach the processes through the effective recipe, written beside the checkpoints."""
    import subprocess

    import yaml

    from distill.train.launch import launch_command, show
    from distill.train.sft import already_trained

    o, student = ctx.options, ctx.settings
    if o.max_steps:
        student = student.model_copy(update={"max_steps": o.max_steps})
    common = {"data": data, "nodes": o.nodes, "num_processes": o.num_processes, "overwrite": ctx.overwrite,
              "verbose": o.verbose}  # fmt: skip
    if o.dry_run:  # the command, with the recipe as given
        print(show(launch_command(student, ctx.path(o.student), out=out, max_steps=o.max_steps, for_display=True,
                                  **common)))  # fmt: skip
        return None
    out = student.checkpoints(out)
    if data and (done := already_trained(student, data, out)) is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "distill_recipe.yaml"
    recipe.write_text(yaml.safe_dump(student.model_dump(mode="json"), sort_keys=False))
    cmd = launch_command(student, recipe, out=out, **common)
    print(f"{out.name}: {show(cmd)}", file=sys.stderr)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise UserError(f"accelerate launch exited with status {code} (its output is above)")
    return json.loads((out / "distill_train.json").read_text())


def train(ctx: Context) -> Done:
    from distill.train.sft import train

    started, o = time.perf_counter(), ctx.options
    data = str(_source(ctx)) if ctx.inputs else None
    out = ctx.out if ctx.out != Path() else None
    if o.launch:
        summary = _launched(ctx, data, out)
    else:
        summary = train(ctx.settings, data, out, max_steps=o.max_steps, dry_run=o.dry_run, overwrite=ctx.overwrite,
                        verbose=o.verbose)  # fmt: skip
    if o.dry_run:
        return Done(False, "dry run: nothing trained")
    loss = summary["train_loss"]
    last = summary["loss_history"][-1] if summary["loss_history"] else loss
    said = f"{summary['global_step']} steps, final loss {last:.3f} (mean {loss:.3f}) -> {ctx.settings.checkpoints(out)}"
    return Done(bool(summary.get("skipped")), said, time.perf_counter() - started)


def plan_train(p: PlanContext) -> Flow:
    student, src = p.ctx.settings, p.upstream
    tokens = (src.rows * src.tokens_per_row) if src else 0
    hw, params_b = student.hardware, student.params_b
    gpu_h = 6 * params_b * 1e9 * tokens * student.epochs / (hw.peak_tflops * 1e12 * hw.mfu) / 3600 if params_b else 0.0
    return Flow(0, 0, f"{student.name}: {tokens / 1e9:,.2f}B tokens x {student.epochs:g} epochs; "
                      f"{gpu_h:,.0f} GPU-hours on {student.num_processes} {hw.gpu} "
                      f"({gpu_h / max(1, student.num_processes):,.1f} h wall) at {hw.mfu:.0%} MFU"
                      + ("" if params_b else " (params_b unknown)"), train_gpu_h=gpu_h)  # fmt: skip


# --- eval -------------------------------------------------------------------------------------------


def load_eval(ctx: Context) -> Any:
    """The teacher YAML, when `teacher` names one; what is evaluated must be named exactly once."""
    o = ctx.options
    named = [what for what, given in (("an input", ctx.inputs), ("model", o.model), ("teacher", o.teacher)) if given]
    if len(named) != 1:
        raise UserError(f"eval: give one of an input (a train step), model (--model) or teacher (--teacher), not "
                        f"{' and '.join(named) or 'none'}")  # fmt: skip
    if o.teacher is None:
        return None
    from distill.teacher.config import TeacherConfig

    return load_config(ctx.path(o.teacher), TeacherConfig)


def evaluate(ctx: Context) -> Done:
    from distill.eval.run import run_eval

    o, started = ctx.options, time.perf_counter()
    if ctx.inputs:
        model = str(_source(ctx))
    elif o.model is not None:  # a URL or distill:NAME as given; a folder relative to the options' base
        model = o.model if o.model.startswith("distill:") or "://" in o.model else str(ctx.path(o.model))
    else:
        model = str(ctx.path(o.teacher))
    params = o.model_dump(exclude={"benchmark", "model", "teacher", "samples", "compare"})
    results = run_eval(model, ctx.path(o.benchmark), o.samples, ctx.out, teacher=ctx.settings, **params,
                       overwrite=ctx.overwrite, show_progress=ctx.show_progress)  # fmt: skip
    m = results["metrics"]
    k = m["samples_per_problem"]
    return Done(
        results.get("reused", False),
        f"pass@1 {m['pass@1']:.1f} ± {m['pass@1_stderr']:.1f} on {m['problems']} problems x {k}, maj@{k} "
        f"{m.get(f'maj@{k}')}, think closed {m['closed_think_pct']}%, boxed {m['boxed_pct']}%, "
        f"mean {m['mean_response_tokens']} tokens -> {ctx.out / 'results.json'}",
        time.perf_counter() - started,
        detail=results,
    )


def eval_details(done: Done, ctx: Context) -> None:
    from distill.eval.published import compare_table
    from distill.eval.run import print_results

    results = done.detail
    print_results(results)
    if ctx.options.compare:
        name = results["benchmark"].get("published")
        if name is None:
            print("  --compare: no published R1-Distill score for this benchmark", file=sys.stderr)
        else:
            for line in compare_table(name, results):
                print(line)


def plan_eval(p: PlanContext) -> Flow:
    return Flow(0, 0, f"{p.options.samples} samples per problem of {p.options.benchmark}")


# --- compare ----------------------------------------------------------------------------------------


def _arms(values: list[str]) -> dict[str, list[str]]:
    """`NAME=DIR[,DIR...]` or `DIR` (the arm named by its folder): each arm's evals, one per seed."""
    arms: dict[str, list[str]] = {}
    for v in values:
        name, _, dirs = v.rpartition("=")
        paths = [d for d in dirs.split(",") if d]
        name = (name or Path(paths[0]).name) if paths else name
        if not paths or name in arms:
            raise UserError(f"{v!r}: give each arm as NAME=DIR[,DIR...] or DIR, every name once")
        arms[name] = paths
    return arms


def check_arms(ctx: Context) -> None:
    """In a pipeline, every arm names eval steps among this step's inputs (checked before the first step runs)."""
    for arm, names in ctx.options.arms.items():
        for name in names:
            if ctx.steps and (str(ctx.steps.get(name)) not in ctx.inputs or ctx.step_stages.get(name) != "eval"):
                raise UserError(f"arms.{arm}: {name!r} is not an eval step in this step's input")


def compare(ctx: Context) -> Done:
    from distill.compare import render, run_compare

    arms = {arm: [ctx.path(name) for name in names] for arm, names in ctx.options.arms.items()}
    doc = run_compare(arms, ctx.out, ctx.options.metrics, ctx.options.expect_better)
    table = "\n".join(render(doc))
    return Done(False, f"{len(arms)} arms x {doc['seeds']} seeds -> {ctx.out / 'comparison.md'}\n{table}")


def _plan_compare(p: PlanContext) -> Flow:
    seeds = len(next(iter(p.options.arms.values())))
    return Flow(0, 0, f"{len(p.options.arms)} arms x {seeds} seeds on {', '.join(p.options.metrics)}")


register(
    Stage(
        name="compare",
        help="""Compare arms of evaluations seed by seed: each metric's mean, spread and range, and the paired gap
    in pass@1 with its 95% interval (bootstrap over seeds and problems) and a sign test.

    Example:

      distill compare student=runs/eval/tiny teacher=runs/eval/syn --out runs/eval/compare
    """,
        options=CompareOptions,
        argument=Argument(
            "arms", "Arms: NAME=DIR[,DIR...] (one eval folder per seed) or DIR.", "ARM", many=True, parse=_arms
        ),
        load="distill.downstream:check_arms",
        run="distill.downstream:compare",
        plan=_plan_compare,
        rows_per_shard=None,
        parallel=False,
        input_optional=True,  # in a pipeline its eval steps are its input; on the command line the arms name them
        input_flag=None,
        out_help="Output folder: comparison.json and comparison.md.",
    )
)
