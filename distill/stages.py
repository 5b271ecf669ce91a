"""Stages, each declared once: its name, options, how it runs, what it plans and what it reports.

A `Stage` is the one place a stage is described. From its declaration come the `distill NAME` command
(`--input`, `--out`, a flag per option, the common flags; unless its command is written by hand), the
pipeline step (`stage: NAME`, its options inline, checked by the same model), the line of `distill run
--dry-run`, and the line of the closing report. Built-in stages declare themselves in their own modules
(listed in `BUILTIN`); a team's own stage is one module that calls `register` and is named in
`DISTILL_STAGES` (a comma-separated list of modules), nothing else.

A knob means one thing everywhere: `rows_per_shard` is the step's (`--rows-per-shard` on the command line),
with each stage's own default; the options model holds only what is the stage's own.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from distill.errors import UserError

# Built-in stage -> the module that declares it (importing the module registers it).
BUILTIN = {
    "prompts": "distill.prompts.stage",
    "generate": "distill.teacher.stage",
    "filter": "distill.filters.stage",
    "difficulty": "distill.difficulty",
    "select": "distill.filters.select",
    "mix": "distill.mix",
    **dict.fromkeys(("card", "publish", "train", "eval", "compare"), "distill.downstream"),
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
class Stage:
    """A stage's declaration; `register` it at the end of the module that implements it."""

    name: str
    help: str  # the command's help: what it does, then `Example:` lines that run as written
    options: type[BaseModel]
    run: Callable[[Context], Any]  # a StageResult (dataset stages) or a Done (other steps)
    load: Callable[[Context], Any] | None = None  # reads what the options name, before any step runs
    rows_per_shard: int | None = 10_000  # the default of the step's knob; None: writes no dataset directory
    rows_help: str = "Rows per output shard: the unit of work, of parallelism and of resume."
    takes_input: bool = True  # False: its sources are in its options (mix)
    input_optional: bool = False  # True: its options can name what it reads instead (eval's `model`)
    reads: Callable[[Any], list[str]] | None = None  # names in the options that may be earlier steps' outputs
    config_flag: bool = False  # `--config YAML` gives the options (relative paths in it: from its folder)
    config_help: str = "YAML of the options (paths in it are relative to it); flags override it."
    parallel: bool = True  # runs on an executor: --workers and --executor
    flags: dict[str, Flag] = field(default_factory=dict)
    input_help: str = "Input: a dataset directory, .parquet, .jsonl or .csv file, a folder of them, a glob."
    out_help: str = "Output dataset directory."
    plan: Callable[[PlanContext], Flow] | None = None
    details: Callable[[Any, Context], None] | None = None  # prints what the result says, under it (stderr)
    report: Callable[[Any, Path], str] | None = None  # the closing report's line (default: rows -> out)
    inspect: Callable[[Any, Any, int], None] | None = None  # `distill inspect`: (reader, console, limit) prints
    # what only this stage's output says, beside the generic report (rows, rejects, schema, reject_reason)
    cli: bool = True  # False: the command is written by hand (positional arguments, launchers)

    @property
    def writes_dataset(self) -> bool:
        return self.rows_per_shard is not None


@dataclass
class Done:
    """The result of a step that writes no dataset directory (a card, an upload, a checkpoint, an eval)."""

    skipped: bool
    report: str  # one line for the pipeline's report (more lines go under it)
    seconds: float = 0.0


_REGISTRY: dict[str, Stage] = {}
_UNAVAILABLE: dict[str, str] = {}  # built-in stage -> the package its module needs and this Python lacks
_LOADED = False


def register(stage: Stage) -> Stage:
    if stage.name in _REGISTRY and _REGISTRY[stage.name] is not stage:
        raise UserError(f"stage {stage.name!r} is declared twice ({_REGISTRY[stage.name].run.__module__})")
    _REGISTRY[stage.name] = stage
    return stage


def _import(module: str, what: str) -> str | None:
    """Import a module that declares stages; the package it needs and this Python lacks, if any."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise UserError(f"{what}: cannot import {module!r} ({e}); check the module name") from None
        return e.name or str(e)
    return None


def registry() -> dict[str, Stage]:
    """Every declared stage: the built-in ones and those of the modules named in DISTILL_STAGES.

    A built-in stage whose module needs a package this Python lacks (a partial install, such as the vLLM
    venv that runs only `distill generate`) is left out and named by `unavailable`, not a crash of every
    command."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for name, module in BUILTIN.items():
            if name not in _REGISTRY and (missing := _import(module, "distill")):
                _UNAVAILABLE[name] = missing
        for module in (m.strip() for m in os.environ.get("DISTILL_STAGES", "").split(",") if m.strip()):
            if missing := _import(module, "DISTILL_STAGES"):
                raise UserError(f"DISTILL_STAGES: {module} needs the package {missing!r}; install it")
    return _REGISTRY


def unavailable(name: str) -> str:
    return (
        f"stage {name!r} needs the package {_UNAVAILABLE[name]!r}, which {sys.executable} lacks; install distill "
        "with its dependencies (`pip install -e .`) or run it from the environment that has them"
    )


def known() -> list[str]:
    return sorted([*registry(), *_UNAVAILABLE])


def get(name: str) -> Stage:
    stages = registry()
    if name in _UNAVAILABLE:
        raise UserError(unavailable(name))
    if name not in stages:
        raise UserError(f"unknown stage {name!r}; the stages are {', '.join(known())}")
    return stages[name]


# --- the command of a dataset stage -----------------------------------------------------------------


def _simple(annotation: Any) -> Any | None:
    """The type a flag can carry for a field of this annotation, or None (nested models come via --config)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _simple(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return str
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        return list[item] if item in (str, int, float, Path) else None
    return annotation if annotation in (str, int, float, bool, Path) else None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _set(data: dict[str, Any], dotted: str, value: Any, append: bool) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = [*data.get(leaf, []), *value] if append else value


def options(stage: Stage, data: Any, where: str, knob: str) -> Any:
    """The stage's options from `data`, checked by its model; `rows_per_shard` in them is named as the
    step's knob it now is (`knob`: where it goes instead), not as an unknown key."""
    from distill.config import parse

    if isinstance(data, dict) and "rows_per_shard" in data and "rows_per_shard" not in stage.options.model_fields:
        raise UserError(f"{where}: rows_per_shard is not one of {stage.name}'s options; {knob}")
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{where}: the file is {kind}; it must be a YAML mapping of {stage.name}'s options")
    return parse(data, stage.options, where)


def loaded(stage: Stage, ctx: Context) -> Context:
    """The context with the stage's settings read (a missing teacher YAML fails here, before any work)."""
    return replace(ctx, settings=stage.load(ctx)) if stage.load else ctx


def execute(stage: Stage, ctx: Context, label: str | None = None) -> Any:
    """Run a loaded stage and print its result and details: the same from the command line and a pipeline."""
    from distill.executor import print_result

    result = stage.run(ctx)
    if stage.writes_dataset:
        print_result(label or stage.name, result, ctx.out)
    if stage.details:
        stage.details(result, ctx)
    return result


def command(stage: Stage) -> Callable[..., None]:
    """The `distill NAME` command: --input/--out, a flag per simple option, the stage's own flags, the
    common flags; built as a function whose signature typer reads."""
    import typer

    params: list[inspect.Parameter] = []

    def add(name: str, annotation: Any, default: Any, param_decls: list[str], **option: Any) -> None:
        option = Annotated[annotation, typer.Option(*param_decls, **option)]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option))

    if stage.takes_input:
        add("input", list[str], ..., param_decls=["--input"], help=stage.input_help + " Repeatable.")
    add("out", Path, ..., param_decls=["--out"], help=stage.out_help)
    fields, needs_config = {}, False
    for name, info in stage.options.model_fields.items():
        typ = _simple(info.annotation)
        if typ is None or name in stage.flags:
            needs_config = needs_config or (info.is_required() and name not in stage.flags)
            continue
        fields[name] = info
        required = info.is_required() and not stage.config_flag
        doc = (info.description or name.replace("_", " ")).rstrip(".") + "."
        shown = info.default not in (None, [], PydanticUndefined) and not required
        doc += f" Default: {info.default}." if shown else ""
        if typ is bool:
            add(f"opt_{name}", bool | None, None, param_decls=[f"{_flag(name)}/--no-{name.replace('_', '-')}"],
                help=doc)  # fmt: skip
        else:
            add(f"opt_{name}", typ if required else typ | None, ... if required else None, param_decls=[_flag(name)],
                help=doc)  # fmt: skip
    for name, flag in stage.flags.items():
        add(f"flag_{name.replace('-', '_')}", flag.type | None, None, param_decls=[f"--{name}"], help=flag.help)
    if stage.config_flag:
        add("config", Path if needs_config else Path | None, ... if needs_config else None, param_decls=["--config"],
            help=stage.config_help)  # fmt: skip
    if stage.writes_dataset:
        add("rows_per_shard", int, stage.rows_per_shard, param_decls=["--rows-per-shard"], min=1, help=stage.rows_help)
    if stage.parallel:
        add("workers", int | None, None, param_decls=["--workers"], min=1, help="Processes; default: all cores.")
        add("executor", str, "local", param_decls=["--executor"],
            help="local: a process pool on this machine; ray: tasks on the Ray cluster in RAY_ADDRESS (or a local "
            "Ray instance). Same rows either way.")  # fmt: skip
    add("overwrite", bool, False, param_decls=["--overwrite"], help="Discard an existing --out and start afresh.")
    add("progress", bool, True, param_decls=["--progress/--no-progress"], help="Show progress bars.")

    def run(**kw: Any) -> None:
        from distill.config import load_yaml

        base = Path.cwd()
        data: dict[str, Any] = {}
        where = f"distill {stage.name}"
        if kw.get("config") is not None:
            data = load_yaml(kw["config"])
            if not isinstance(data, dict):
                options(stage, data, str(kw["config"]), "")  # the one line for a file that is not a mapping
            # checked once, with the flags given beside it (a required option may come from either)
            where, base = f"{kw['config']} (with the command's flags)", kw["config"].resolve().parent
        for name in fields:
            value = kw.get(f"opt_{name}")
            if value is not None:
                data[name] = [str(v) for v in value] if isinstance(value, list) else value
        for name, flag in stage.flags.items():
            value = kw.get(f"flag_{name.replace('-', '_')}")
            if value is None or value == []:
                continue
            if flag.path:  # given here, so relative to here even when --config moved `base`
                value = [str(Path(v).absolute()) for v in value] if isinstance(value, list) else Path(value).absolute()
                value = str(value) if flag.type is str else value
            _set(data, flag.target, value, flag.append)
        opts = options(stage, data, where, "pass --rows-per-shard N instead")
        ctx = Context(kw.get("input") or [], kw["out"], opts, base, kw.get("rows_per_shard") or 0,
                      kw.get("workers"), kw.get("executor", "local"), kw["overwrite"], kw["progress"])  # fmt: skip
        execute(stage, loaded(stage, ctx))

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__doc__ = stage.help
    run.__name__ = stage.name.replace("-", "_")
    return run


def add_commands(app: Any, wrap: Callable[[Callable[..., None]], Callable[..., None]]) -> None:
    """One `distill NAME` command for every declared stage that does not have a hand-written one, and for a
    built-in stage this Python cannot import, a command that says what is missing."""
    for stage in registry().values():
        if stage.cli:
            app.command(name=stage.name, help=stage.help)(wrap(command(stage)))
    for name in _UNAVAILABLE:
        if name in ("prompts", "generate", "filter", "select", "mix"):
            settings = {"ignore_unknown_options": True, "allow_extra_args": True}
            app.command(name=name, help=unavailable(name), context_settings=settings)(wrap(_missing(name)))


def _missing(name: str) -> Callable[[], None]:
    def missing() -> None:
        raise UserError(unavailable(name))

    return missing
