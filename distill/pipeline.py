"""`distill run PIPELINE.yaml`: a pipeline's steps in order, each writing `<run dir>/<step>/`.

Every step is a declared stage (`distill.stages`) or a batch function; the loop below knows no stage by
name. A step whose output is complete with the same fingerprints (config and inputs) is skipped; a step
cut short is resumed; a step whose config or inputs changed since its output was written is refused
unless `--overwrite` is given, so an edited recipe never mixes old and new rows silently.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from distill import stages
from distill.config import PipelineConfig, Step, load_config
from distill.errors import UserError
from distill.executor import MapStage, check_executor, load_function, run_map_stage
from distill.stages import Context, Done, Stage, execute, get, loaded
from distill.store import StageResult


class FunctionOptions(BaseModel):
    """A batch function's keyword arguments: whatever the step gives (the function's signature checks them)."""

    model_config = ConfigDict(extra="allow", frozen=True)


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

    def stage(self, step: Step) -> Stage:
        """The step's declared stage, or for a `function:` step a stage that maps the function over its input."""
        if step.stage is not None:
            return get(step.stage)
        assert step.function is not None
        module, _, attr = step.function.rpartition(":")
        if module.endswith(".py"):
            module = str(self._path(module).resolve())
        mapped = MapStage(name=step.name, function=f"{module}:{attr}", options=step.options,
                          input_record=step.input_record, output_record=step.output_record,
                          batch_size=step.batch_size)  # fmt: skip

        def run(ctx: Context) -> StageResult:
            return run_map_stage(mapped, ctx.inputs, ctx.out, workers=ctx.workers, overwrite=ctx.overwrite,
                                 rows_per_shard=ctx.rows_per_shard, show_progress=ctx.show_progress,
                                 executor=ctx.executor)  # fmt: skip

        return Stage(name="function", help=step.function, options=FunctionOptions, run=run,
                     load=lambda ctx: load_function(mapped.function), cli=False)  # fmt: skip

    def context(self, i: int, *, overwrite: bool = False, workers: int | None = None, show_progress: bool = True,
                executor: str = "local", where: str = "") -> Context:  # fmt: skip
        """Step i's context, its options checked by its stage's model and its settings loaded."""
        step = self.config.steps[i]
        stage = self.stage(step)
        where = f"{where}: steps[{i}]"
        if stage.takes_input and not step.input and not stage.input_optional:
            raise UserError(f"{where}.input: step {step.name!r} ({stage.name}) reads an input; name a step or a path")
        if not stage.takes_input and step.input:
            raise UserError(f"{where}.input: stage {stage.name} names its sources in its options; remove `input`")
        if stage.rows_per_shard is None and step.rows_per_shard is not None:
            raise UserError(f"{where}.rows_per_shard: stage {stage.name} writes no dataset directory; remove it")
        done = {s.name: self.step_out(s) for s in self.config.steps[:i]}
        later = {s.name for s in self.config.steps[i:]}
        knob = "set it on the step, beside `options:` (every stage's shards are sized there)"
        options = stages.options(stage, step.options, f"{where}.options", knob)
        for name in stage.reads(options) if stage.reads else []:
            if name in later:
                raise UserError(
                    f"{where}.options: step {step.name!r} reads step {name!r}, which does not come before it"
                )
        ctx = Context(
            inputs=self.step_inputs(step),
            out=self.step_out(step),
            options=options,
            base=self.root,
            rows_per_shard=step.rows_per_shard or stage.rows_per_shard or 0,
            workers=workers or step.workers,
            executor=executor,
            overwrite=overwrite,
            show_progress=show_progress,
            steps=done,
            step_stages={s.name: s.stage or "function" for s in self.config.steps[:i]},
        )
        try:
            return loaded(stage, ctx)
        except UserError as e:
            raise UserError(f"{where} ({step.name}): {e}") from None


def load(path: str | Path, out: str | Path | None = None) -> PipelineRun:
    config = load_config(path, PipelineConfig)
    out_dir = Path(out) if out is not None else Path(config.out) if config.out else Path("runs") / config.name
    return PipelineRun(config, Path(path).resolve().parent, out_dir)


def contexts(pipeline: PipelineRun, path: str | Path, **common: Any) -> list[Context]:
    """Every step's context, loaded and checked before the first step runs: a broken last step fails now."""
    return [pipeline.context(i, where=str(path), **common) for i in range(len(pipeline.config.steps))]


def run(
    path: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
    executor: str = "local",
) -> dict[str, StageResult | Done]:
    started = time.perf_counter()
    check_executor(executor)
    pipeline = load(path, out)
    ctxs = contexts(pipeline, path, overwrite=overwrite, workers=workers, show_progress=show_progress,
                    executor=executor)  # fmt: skip
    n = len(pipeline.config.steps)
    print(f"pipeline {pipeline.config.name}: {n} step{'s' * (n != 1)} -> {pipeline.out}", file=sys.stderr)
    results: dict[str, StageResult | Done] = {}
    for step, ctx in zip(pipeline.config.steps, ctxs, strict=True):
        result = execute(pipeline.stage(step), ctx, label=step.name)
        if isinstance(result, Done):
            print(
                f"{step.name}: {result.report}{' (already done, skipped)' if result.skipped else ''}", file=sys.stderr
            )
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


def report(pipeline: PipelineRun, results: dict[str, StageResult | Done]) -> list[str]:
    """The closing report: what each step made and where it lives, one line each, in its stage's words."""
    lines = [f"report {pipeline.config.name}:"]
    width = max(10, *(len(step.name) for step in pipeline.config.steps))
    for step in pipeline.config.steps:
        r, out, stage = results[step.name], pipeline.step_out(step), pipeline.stage(step)
        if isinstance(r, Done):
            text = r.report
        elif stage.report is not None:
            text = stage.report(r, out)
        else:
            text = f"{r.manifest.rows:,} rows ({step.stage or 'function'}) -> {out}"
        first, *more = text.splitlines()  # a comparison's table goes under its line
        lines.append(f"  {step.name:<{width}} {first}")
        lines.extend(" " * (width + 3) + line for line in more)
    return lines
