"""`distill run PIPELINE.yaml`: a pipeline's steps in order, each writing `<run dir>/<step>/`.

Every step is a declared stage (`distill.stages`) or a batch function; the loop below knows no stage by
name. A step whose output is complete with the same fingerprints (config and inputs) is skipped; a step
cut short is resumed; a step whose config or inputs changed since its output was written is refused
unless `--overwrite` is given, so an edited recipe never mixes old and new rows silently.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill import stages
from distill.config import StrictModel, load_config
from distill.errors import UserError
from distill.executor import MapStage, check_executor, load_function, run_map_stage
from distill.plan import PlanAssumptions
from distill.records import RECORDS
from distill.stages import Context, Done, Stage, execute, get, known, loaded
from distill.store import StageResult

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Step(StrictModel):
    """One stage of a pipeline; its output is `<run dir>/<name>/`."""

    name: str = Field(description="the step's name and the name of its output directory")
    stage: str | None = Field(default=None, description="a declared stage (distill/stages.py); settings in `options`")
    function: str | None = Field(
        default=None,
        description="or a batch function: 'package.module:callable' or 'path/to/file.py:callable' "
        "(relative to the pipeline file)",
    )
    input: list[str] = Field(
        default_factory=list,
        description="earlier steps by name, or paths (dataset directories, .parquet, .jsonl, globs) "
        "relative to the pipeline file",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the stage's options (checked by its model)")
    input_record: str | None = Field(default=None, description="conform input rows to this record")
    output_record: str | None = Field(default=None, description="conform output rows to this record")
    rows_per_shard: int | None = Field(default=None, ge=1, description="rows per output shard; default: the stage's")
    batch_size: int = Field(default=1024, ge=1)
    workers: int | None = Field(default=None, ge=1, description="processes; default: all cores")

    @model_validator(mode="after")
    def _stage_or_function(self) -> Step:
        if (self.stage is None) == (self.function is None):
            raise ValueError(f"step {self.name!r}: give either `stage` (a declared stage) or `function`, not both")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.' (it names a folder)")
        return v

    @field_validator("stage")
    @classmethod
    def _declared_stage(cls, v: str | None) -> str | None:
        if v is not None and v not in known():
            raise ValueError(f"unknown stage {v!r}; the stages are {', '.join(known())}")
        return v

    @field_validator("input", mode="before")
    @classmethod
    def _one_input_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("input_record", "output_record")
    @classmethod
    def _known_record(cls, v: str | None) -> str | None:
        if v is not None and v not in RECORDS:
            raise ValueError(f"unknown record {v!r}; use one of {', '.join(RECORDS)}")
        return v


class PipelineConfig(StrictModel):
    name: str
    out: str | None = Field(default=None, description="run directory; default runs/<name>")
    steps: list[Step] = Field(min_length=1)
    plan: PlanAssumptions = Field(default_factory=PlanAssumptions, description="assumptions of `run --dry-run`")

    @model_validator(mode="after")
    def _steps_are_ordered(self) -> PipelineConfig:
        seen: set[str] = set()
        names = [s.name for s in self.steps]
        for i, step in enumerate(self.steps):
            if step.name in seen:
                raise ValueError(f"steps[{i}]: a second step named {step.name!r}; step names must differ")
            for inp in step.input:
                if inp in names and inp not in seen:
                    raise ValueError(f"steps[{i}] ({step.name}) reads step {inp!r}, which does not come before it")
            seen.add(step.name)
        return self


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
            return run_map_stage(mapped, ctx)

        return Stage(name="function", help=step.function, options=FunctionOptions, run=run,
                     load=lambda ctx: load_function(mapped.function))  # fmt: skip

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
        options = stages.parse_options(stage, step.options, f"{where}.options", knob)
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
        elif (own := stage.hook("report")) is not None:
            text = own(r, out)
        else:
            text = f"{r.manifest.rows:,} rows ({step.stage or 'function'}) -> {out}"
        first, *more = text.splitlines()  # a comparison's table goes under its line
        lines.append(f"  {step.name:<{width}} {first}")
        lines.extend(" " * (width + 3) + line for line in more)
    return lines
