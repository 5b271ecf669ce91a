"""Steps, each declared once: its name, options, how it runs, what it plans and what it reports.

A `Stage` is the one place a step is described. From its declaration come the `distill NAME` command
(built in cli.py: `--input`, `--out`, a flag per option, a positional argument where it has one, the
common flags), the pipeline step (`stage: NAME`, its options inline, checked by the same model), the line
of `distill run --dry-run`, the line of the closing report and the library call `invoke`. Every default
is written once, in the options model or (for `rows_per_shard`) in the declaration.

A declaration is light: its hooks (`run`, `load`, `plan`, ...) may be given as "module:function" strings,
imported only when called, so `distill --help` reads every declaration without importing pyarrow, torch or
the stages themselves. Built-in steps are declared beside their options (`BUILTIN` lists the modules); a
team's own stage is one module that calls `register` and is named in `DISTILL_STAGES` (a comma-separated
list of modules), nothing else.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distill.config import parse
from distill.errors import UserError

# Built-in step -> the module that declares it (light: options and declarations, no implementation).
BUILTIN = {
    "prompts": "distill.prompts.config",
    "generate": "distill.teacher.config",
    **dict.fromkeys(("filter", "difficulty", "select"), "distill.filters.config"),
    "mix": "distill.mix.config",
    "train": "distill.train.config",
    "eval": "distill.eval.config",
    **dict.fromkeys(("card", "publish", "compare"), "distill.downstream"),
}


@dataclass(frozen=True)
class Context:
    """Everything a stage's run gets, the same from the command line and from a pipeline step."""

    inputs: list[str]
    out: Path
    options: Any  # the stage's options model, validated
    base: Path  # where relative paths in the options resolve: the recipe's folder, or the working directory
    rows_per_shard: int
    workers: int | None = None
    executor: str = "local"
    overwrite: bool = False
    show_progress: bool = True
    steps: dict[str, Path] = field(default_factory=dict)  # in a pipeline: step name -> its output
    step_stages: dict[str, str] = field(default_factory=dict)  # in a pipeline: step name -> its stage
    settings: Any = None  # what the stage's `load` made of the options (a teacher, a preset, a recipe)

    def path(self, p: str | Path) -> Path:
        """A path from the options: another step's output by name, else relative to `base`."""
        if str(p) in self.steps:
            return self.steps[str(p)]
        q = Path(p)
        return q if q.is_absolute() else Path(os.path.normpath(self.base / q))


@dataclass
class Flow:
    """What flows out of a step, as the dry-run plan estimates it."""

    rows: float
    tokens_per_row: float  # text tokens per row (prompt + completion for traces)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    teacher_gpu_h: float = 0.0
    teacher_usd: float = 0.0  # a hosted API's bill, at the teacher YAML's prices
    train_gpu_h: float = 0.0


@dataclass(frozen=True)
class PlanContext:
    """What a stage's plan sees: the pipeline's assumptions, its own settings and what flows into it."""

    assumptions: Any  # config.PlanAssumptions
    options: Any
    inputs: list[str]
    upstream: Flow | None
    flows: dict[str, Flow]  # every earlier step's flow, by step name
    ctx: Context


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets something nested in the options (`--ngram` -> decontaminate.ngram)."""

    target: str  # dotted path in the options
    type: Any
    help: str
    append: bool = False  # a repeatable flag whose values extend a list
    path: bool = False  # a path on the command line: relative to the working directory, not to --config


@dataclass(frozen=True)
class Argument:
    """The command's positional argument: the input (`distill card DIR`) or an option (`distill train RECIPE`)."""

    target: str  # "input", or the name of an option
    help: str
    metavar: str = "DIR"  # how the usage line names it
    many: bool = False  # several values (`distill compare A B`)
    parse: Callable[[list[str]], Any] | None = None  # the values -> the option's value (compare: arms)


Hook = Callable[..., Any] | str  # a function, or "module:function" imported when it is first called


@dataclass(frozen=True)
class Stage:
    """A step's declaration; `register` it in the module that declares it (its implementation may live apart)."""

    name: str
    help: str  # the command's help: what it does, then `Example:` lines that run as written
    options: type[BaseModel]
    run: Hook  # ctx -> a StageResult (dataset stages) or a Done (other steps)
    load: Hook | None = None  # ctx -> settings: reads what the options name, before any step runs
    plan: Hook | None = None  # PlanContext -> Flow
    details: Hook | None = None  # (result, ctx): prints what the result says, under it (stderr)
    report: Hook | None = None  # (result, out) -> the closing report's line (default: rows -> out)
    inspect: Hook | None = None  # `distill inspect`: (reader, console, limit) prints what only this stage's
    # output says, beside the generic report (rows, rejects, schema, reject_reason)
    rows_per_shard: int | None = 10_000  # the default of the step's knob; None: writes no dataset directory
    rows_help: str = "Rows per output shard: the unit of work, of parallelism and of resume."
    takes_input: bool = True  # False: its sources are in its options (mix)
    input_optional: bool = False  # True: its options can name what it reads instead (eval's `model`)
    reads: Callable[[Any], list[str]] | None = None  # names in the options that may be earlier steps' outputs
    config_flag: bool = False  # `--config YAML` gives the options (relative paths in it: from its folder)
    config_help: str = "YAML of the options (paths in it are relative to it); flags override it."
    parallel: bool = True  # runs on an executor: --workers and --executor
    flags: dict[str, Flag] = field(default_factory=dict)
    argument: Argument | None = None  # the command's positional argument, if it has one
    input_flag: str | None = "--input"  # the flag that names the input on the command line (None: none)
    input_help: str = "Input: a dataset directory, .parquet, .jsonl or .csv file, a folder of them, a glob."
    out_help: str = "Output dataset directory."
    out_optional: bool = False  # the options can say where it writes (train: the recipe's output_dir)

    @property
    def writes_dataset(self) -> bool:
        return self.rows_per_shard is not None

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The hook `name` as a function (a "module:function" string is imported now), or None."""
        fn = getattr(self, name)
        if not isinstance(fn, str):
            return fn
        module, _, attr = fn.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            raise UserError(
                f"stage {self.name!r} needs the package {e.name!r}, which {sys.executable} lacks; install distill "
                "with its dependencies (`pip install -e .`) or run it from the environment that has them"
            ) from None


@dataclass
class Done:
    """The result of a step that writes no dataset directory (a card, an upload, a checkpoint, an eval)."""

    skipped: bool
    report: str  # one line for the pipeline's report (more lines go under it)
    seconds: float = 0.0
    detail: Any = None  # what the command's `details` prints under it (eval's results, publish's file list)


_REGISTRY: dict[str, Stage] = {}
_LOADED = False


def register(stage: Stage) -> Stage:
    if stage.name in _REGISTRY and _REGISTRY[stage.name] is not stage:
        raise UserError(f"stage {stage.name!r} is declared twice ({_REGISTRY[stage.name].run})")
    _REGISTRY[stage.name] = stage
    return stage


def _import(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise UserError(f"{what}: cannot import {module!r} ({e}); check the module name") from None
        raise UserError(f"{what}: {module} needs the package {e.name!r}; install it") from None


def registry() -> dict[str, Stage]:
    """Every declared step: the built-in ones and those of the modules named in DISTILL_STAGES."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in dict.fromkeys(BUILTIN.values()):
            _import(module, "distill")
        for module in (m.strip() for m in os.environ.get("DISTILL_STAGES", "").split(",") if m.strip()):
            _import(module, "DISTILL_STAGES")
        order = {name: k for k, name in enumerate(BUILTIN)}  # the built-in steps in pipeline order, then a team's
        ordered = sorted(_REGISTRY.items(), key=lambda kv: order.get(kv[0], len(order)))
        _REGISTRY.clear()
        _REGISTRY.update(ordered)
    return _REGISTRY


def known() -> list[str]:
    return sorted(registry())


def get(name: str) -> Stage:
    stages = registry()
    if name not in stages:
        raise UserError(f"unknown stage {name!r}; the stages are {', '.join(known())}")
    return stages[name]


def parse_options(stage: Stage, data: Any, where: str, knob: str) -> Any:
    """The stage's options from `data`, checked by its model; `rows_per_shard` in them is named as the
    step's knob it now is (`knob`: where it goes instead), not as an unknown key."""
    if isinstance(data, dict) and "rows_per_shard" in data and "rows_per_shard" not in stage.options.model_fields:
        raise UserError(f"{where}: rows_per_shard is not one of {stage.name}'s options; {knob}")
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{where}: the file is {kind}; it must be a YAML mapping of {stage.name}'s options")
    return parse(data, stage.options, where)


def loaded(stage: Stage, ctx: Context) -> Context:
    """The context with the stage's settings read (a missing teacher YAML fails here, before any work)."""
    load = stage.hook("load")
    return replace(ctx, settings=load(ctx)) if load else ctx


def execute(stage: Stage, ctx: Context, label: str | None = None) -> Any:
    """Run a loaded stage and print its result and details: the same from the command line and a pipeline."""
    from distill.progress import print_result

    result = stage.hook("run")(ctx)  # type: ignore[misc]
    if stage.writes_dataset:
        print_result(label or stage.name, result, ctx.out)
    elif label is not None:  # a pipeline says a step without a dataset in its report line
        return result
    if (details := stage.hook("details")) is not None:
        details(result, ctx)
    return result


def invoke(
    name: str,
    inputs: list[str | Path],
    out: str | Path,
    options: BaseModel | dict[str, Any] | None = None,
    *,
    settings: Any = None,
    base: Path | None = None,
    rows_per_shard: int | None = None,
    workers: int | None = None,
    executor: str = "local",
    overwrite: bool = False,
    show_progress: bool = True,
) -> Any:
    """Run a step from Python, as its command does, with the declaration's defaults; returns its result.

    `settings` stands for what the stage's `load` would read (a `TeacherConfig`, a `FilterPreset`, a student
    recipe): then `options` may be left out."""
    stage = get(name)
    if isinstance(options, BaseModel):
        opts = options
    elif options is None and settings is not None:
        opts = stage.options.model_construct()  # the defaults; what is required is in `settings`
    else:
        opts = parse_options(stage, options or {}, f"{name} options", "pass rows_per_shard= instead")
    ctx = Context([str(i) for i in inputs], Path(out), opts, base or Path.cwd(),
                  rows_per_shard or stage.rows_per_shard or 0, workers, executor, overwrite, show_progress)  # fmt: skip
    ctx = replace(ctx, settings=settings) if settings is not None else loaded(stage, ctx)
    return stage.hook("run")(ctx)  # type: ignore[misc]
