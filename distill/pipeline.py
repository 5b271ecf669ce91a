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
    FilterPreset,
    FilterStepOptions,
    GenerateStepOptions,
    PipelineConfig,
    PromptsConfig,
    SelectStepOptions,
    Step,
    load_config,
    parse,
)
from distill.errors import UserError
from distill.executor import MapStage, StageResult, load_function, print_result, run_map_stage
from distill.filters.select import run_select
from distill.filters.stage import run_filter
from distill.prompts.stage import run_prompts


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


def run(
    path: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
) -> dict[str, StageResult]:
    started = time.perf_counter()
    pipeline = load(path, out)
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
        try:
            load_function(pipeline.stage(step).function)
        except UserError as e:
            raise UserError(f"{path}: steps[{i}].function: {e}") from None
    n = len(pipeline.config.steps)
    print(f"pipeline {pipeline.config.name}: {n} step{'s' * (n != 1)} -> {pipeline.out}", file=sys.stderr)
    results: dict[str, StageResult] = {}
    for step in pipeline.config.steps:
        common = {"overwrite": overwrite, "show_progress": show_progress}
        step_in, step_out = pipeline.step_inputs(step), pipeline.step_out(step)
        if step.stage == "prompts":
            result = run_prompts(step_in, step_out, settings[step.name], workers=workers or step.workers, **common)
        elif step.stage == "generate":
            from distill.teacher.stage import run_generate

            result = run_generate(step_in, step_out, settings[step.name], rows_per_shard=step.rows_per_shard, **common)
        elif step.stage == "filter":
            result = run_filter(step_in, step_out, settings[step.name], workers=workers or step.workers, **common)
        elif step.stage == "select":
            sel = settings[step.name]
            result = run_select(step_in, step_out, per_prompt=sel.per_prompt, seed=sel.seed, **common)
        else:
            result = run_map_stage(
                pipeline.stage(step),
                pipeline.step_inputs(step),
                pipeline.step_out(step),
                workers=workers or step.workers,
                overwrite=overwrite,
                rows_per_shard=step.rows_per_shard,
                show_progress=show_progress,
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
    return results
