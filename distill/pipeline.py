"""`distill run PIPELINE.yaml`: a pipeline's steps in order, each writing `<run dir>/<step>/`.

A step whose output is complete with the same fingerprints (config and inputs) is skipped; a step cut
short is resumed; a step whose config or inputs changed since its output was written is refused
unless `--overwrite` is given, so an edited recipe never mixes old and new rows silently.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import (
    OTHER_STAGES,
    CardStepOptions,
    CompareStepOptions,
    EvalStepOptions,
    FilterPreset,
    FilterStepOptions,
    GenerateStepOptions,
    MixConfig,
    PipelineConfig,
    PromptsConfig,
    PublishStepOptions,
    SelectStepOptions,
    Step,
    TrainStepOptions,
    load_config,
    parse,
)
from distill.errors import UserError
from distill.executor import MapStage, StageResult, check_executor, load_function, print_result, run_map_stage
from distill.filters.select import run_select
from distill.filters.stage import run_filter
from distill.prompts.stage import run_prompts


@dataclass
class StepOutcome:
    """The result of a step that does not write a dataset directory (card, publish, train, eval)."""

    skipped: bool
    report: str  # one line for the pipeline's final report
    seconds: float = 0.0


@dataclass
class PipelineRun:
    config: PipelineConfig
    root: Path  # where the pipeline file lives: relative paths in it are relative to this
    out: Path  # the run directory

    def step_out(self, step: Step) -> Path:
        return self.out / step.name

    def step_inputs(self, step: Step) -> list[str]:
        names = {s.name for s in self.config.steps}
        return [str(self.out / i) if i in names else str(self._path(i)) for i in step.input]

    def _path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(os.path.normpath(self.root / path))

    def mix_config(self, step: Step, where: str) -> MixConfig:
        """The step's mix, its source paths resolved: a step's name means that step's output."""
        cfg = parse(step.options, MixConfig, where)
        names = {s.name for s in self.config.steps}
        sources = [
            src.model_copy(
                update={"path": str(self.out / src.path) if src.path in names else str(self._path(src.path))}
            )
            for src in cfg.sources
        ]
        tokenizer = (
            str(self._path(cfg.tokenizer))
            if cfg.tokenizer and Path(self.root / cfg.tokenizer).exists()
            else cfg.tokenizer
        )
        return cfg.model_copy(update={"sources": sources, "tokenizer": tokenizer})

    def prompts_config(self, step: Step, where: str) -> PromptsConfig:
        cfg = parse(step.options, PromptsConfig, where)
        benchmarks = [str(self._path(b)) for b in cfg.decontaminate.benchmarks]  # relative to the pipeline file
        return cfg.model_copy(update={"decontaminate": cfg.decontaminate.model_copy(update={"benchmarks": benchmarks})})

    def stage(self, step: Step) -> MapStage:
        assert step.function is not None
        module, _, attr = step.function.rpartition(":")
        if module.endswith(".py"):
            module = str(self._path(module).resolve())
        return MapStage(
            name=step.name,
            function=f"{module}:{attr}",
            options=step.options,
            input_record=step.input_record,
            output_record=step.output_record,
            batch_size=step.batch_size,
        )


def load(path: str | Path, out: str | Path | None = None) -> PipelineRun:
    config = load_config(path, PipelineConfig)
    out_dir = Path(out) if out is not None else Path(config.out) if config.out else Path("runs") / config.name
    return PipelineRun(config, Path(path).resolve().parent, out_dir)


def load_settings(pipeline: PipelineRun, path: str | Path) -> dict[str, Any]:
    """Every step's settings, loaded and checked before the first step runs: a broken last step fails now."""
    settings: dict[str, Any] = {}
    for i, step in enumerate(pipeline.config.steps):  # a broken last step must not wait for the first
        where = f"{path}: steps[{i}].options"
        if step.stage == "prompts":
            settings[step.name] = pipeline.prompts_config(step, where)
            continue
        if step.stage == "generate":
            from distill.teacher.config import TeacherConfig

            teacher_path = pipeline._path(parse(step.options, GenerateStepOptions, where).teacher)
            settings[step.name] = load_config(teacher_path, TeacherConfig)
            continue
        if step.stage == "filter":
            preset_path = pipeline._path(parse(step.options, FilterStepOptions, where).preset)
            settings[step.name] = load_config(preset_path, FilterPreset)
            continue
        if step.stage == "select":
            settings[step.name] = parse(step.options, SelectStepOptions, where)
            continue
        if step.stage == "mix":
            settings[step.name] = pipeline.mix_config(step, where)
            continue
        if step.stage in ("card", "publish", "eval"):
            model = {"card": CardStepOptions, "publish": PublishStepOptions, "eval": EvalStepOptions}[step.stage]
            settings[step.name] = parse(step.options, model, where)
            continue
        if step.stage == "train":
            from distill.train.config import StudentConfig

            opts = parse(step.options, TrainStepOptions, where)
            student = load_config(pipeline._path(opts.student), StudentConfig)
            overrides = {k: v for k, v in (("epochs", opts.epochs), ("seed", opts.seed)) if v is not None}
            settings[step.name] = (student.model_copy(update=overrides), opts)
            continue
        if step.stage == "compare":
            opts = parse(step.options, CompareStepOptions, where)
            evals = {s.name for s in pipeline.config.steps if s.stage == "eval"}
            for arm, names in opts.arms.items():
                for name in names:
                    if name not in step.input or name not in evals:
                        raise UserError(f"{where}.arms.{arm}: {name!r} is not an eval step in this step's input")
            settings[step.name] = opts
            continue
        try:
            load_function(pipeline.stage(step).function)
        except UserError as e:
            raise UserError(f"{path}: steps[{i}].function: {e}") from None
    return settings


def run(
    path: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
    executor: str = "local",
) -> dict[str, StageResult]:
    started = time.perf_counter()
    check_executor(executor)
    pipeline = load(path, out)
    settings = load_settings(pipeline, path)
    n = len(pipeline.config.steps)
    print(f"pipeline {pipeline.config.name}: {n} step{'s' * (n != 1)} -> {pipeline.out}", file=sys.stderr)
    results: dict[str, StageResult | StepOutcome] = {}
    for step in pipeline.config.steps:
        common = {"overwrite": overwrite, "show_progress": show_progress}
        step_in, step_out = pipeline.step_inputs(step), pipeline.step_out(step)
        if step.stage in OTHER_STAGES:
            outcome = _run_other(step, step_in, step_out, settings[step.name], pipeline, show_progress, overwrite)
            print(
                f"{step.name}: {outcome.report}{' (already done, skipped)' if outcome.skipped else ''}", file=sys.stderr
            )
            results[step.name] = outcome
            continue
        if step.stage == "prompts":
            result = run_prompts(
                step_in, step_out, settings[step.name], workers=workers or step.workers, executor=executor, **common
            )
        elif step.stage == "generate":
            from distill.teacher.stage import run_generate

            result = run_generate(step_in, step_out, settings[step.name], rows_per_shard=step.rows_per_shard, **common)
        elif step.stage == "filter":
            result = run_filter(
                step_in, step_out, settings[step.name], workers=workers or step.workers, executor=executor, **common
            )
        elif step.stage == "select":
            sel = settings[step.name]
            result = run_select(step_in, step_out, per_prompt=sel.per_prompt, seed=sel.seed,
                                workers=workers or step.workers, executor=executor, **common)  # fmt: skip
        elif step.stage == "mix":
            from distill.mix import run_mix

            result, warnings = run_mix(
                settings[step.name], step_out, workers=workers or step.workers, executor=executor, **common
            )
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
        else:
            result = run_map_stage(
                pipeline.stage(step),
                pipeline.step_inputs(step),
                pipeline.step_out(step),
                workers=workers or step.workers,
                overwrite=overwrite,
                rows_per_shard=step.rows_per_shard,
                show_progress=show_progress,
                executor=executor,
            )
        print_result(step.name, result, pipeline.step_out(step))
        if step.stage == "generate" and not result.skipped:
            from distill.teacher.stage import print_generate

            print_generate(result.manifest.stats["generate"])
        results[step.name] = result
    done = sum(r.skipped for r in results.values())
    print(
        f"pipeline {pipeline.config.name}: {len(results)} done ({done} skipped as already done) in "
        f"{time.perf_counter() - started:.1f}s -> {pipeline.out}",
        file=sys.stderr,
    )
    for line in report(pipeline, results):
        print(line, file=sys.stderr)
    return results


def _run_other(
    step: Step,
    step_in: list[str],
    step_out: Path,
    settings: Any,
    pipeline: PipelineRun,
    show_progress: bool,
    overwrite: bool = False,
) -> StepOutcome:
    """Steps whose output is not a dataset directory: a card, an upload, a checkpoint, an evaluation, a
    comparison of evaluations."""
    started = time.perf_counter()
    if step.stage == "compare":
        from distill.compare import render, run_compare

        arms = {arm: [pipeline.out / name for name in names] for arm, names in settings.arms.items()}
        doc = run_compare(arms, step_out, settings.metrics, settings.expect_better)
        table = "\n".join(render(doc))
        return StepOutcome(False, f"{len(arms)} arms x {doc['seeds']} seeds -> {step_out / 'comparison.md'}\n{table}")
    if len(step_in) != 1:
        raise UserError(f"step {step.name!r} (stage {step.stage}): give exactly one input")
    source = Path(step_in[0])
    if step.stage == "card":
        from distill.card import write_card

        path = write_card(source, license=settings.license, pretty_name=settings.pretty_name)
        return StepOutcome(False, f"data card -> {path}", time.perf_counter() - started)
    if step.stage == "publish":
        from distill.hub import publish

        staging, plan = publish(source, settings.repo_id, dry_run=settings.dry_run, private=settings.private)
        what = "dry run: would upload" if settings.dry_run else "uploaded"
        return StepOutcome(False, f"{what} {len(plan.add)} files to {settings.repo_id} (staged in {staging})")
    if step.stage == "train":
        from distill.train.sft import train

        student, opts = settings
        summary = train(student, str(source), step_out, max_steps=opts.max_steps, overwrite=overwrite)
        loss = summary["train_loss"]
        last = summary["loss_history"][-1] if summary["loss_history"] else loss
        return StepOutcome(
            bool(summary.get("skipped")),
            f"{summary['global_step']} steps, final loss {last:.3f} (mean {loss:.3f}) -> {step_out}",
            time.perf_counter() - started,
        )
    from distill.eval.run import run_eval

    results = run_eval(str(source), pipeline._path(settings.benchmark), settings.samples, step_out,
                       max_tokens=settings.max_tokens, seed=settings.seed, batch_size=settings.batch_size,
                       show_progress=show_progress)  # fmt: skip
    m = results["metrics"]
    k = m["samples_per_problem"]
    return StepOutcome(
        results.get("reused", False),
        f"pass@1 {m['pass@1']:.1f} ± {m['pass@1_stderr']:.1f} on {m['problems']} problems x {k}, maj@{k} "
        f"{m.get(f'maj@{k}')}, think closed {m['closed_think_pct']}%, boxed {m['boxed_pct']}%, "
        f"mean {m['mean_response_tokens']} tokens -> {step_out / 'results.json'}",
        time.perf_counter() - started,
    )


def report(pipeline: PipelineRun, results: dict[str, StageResult | StepOutcome]) -> list[str]:
    """The closing report: what each step made and where it lives."""
    lines = [f"report {pipeline.config.name}:"]
    width = max(10, *(len(step.name) for step in pipeline.config.steps))
    for step in pipeline.config.steps:
        r = results[step.name]
        out = pipeline.step_out(step)
        if isinstance(r, StepOutcome):
            first, *more = r.report.splitlines()  # a comparison's table goes under its line
            lines.append(f"  {step.name:<{width}} {first}")
            lines.extend(" " * (width + 3) + line for line in more)
            continue
        stats = r.manifest.stats
        if "funnel" in stats:
            f = stats["funnel"]
            reasons = ", ".join(f"{k} {v:,}" for k, v in f["by_reason"].items() if k != "kept")
            reasons = f" ({reasons})" if reasons else ""
            lines.append(f"  {step.name:<{width}} kept {f['kept']:,} of {f['traces']:,} traces{reasons} -> {out}")
        else:
            lines.append(f"  {step.name:<{width}} {r.manifest.rows:,} rows ({step.stage}) -> {out}")
    return lines
