"""The `distill` command line (DESIGN.md, "The command line": the names are a contract).

Every step's command comes from its declaration (`distill/stages.py`); the commands here by hand are the
ones that are no step: run, plan, render-chat, inspect, view, doctor.
A user's mistake prints one line on stderr and exits with status 2; an interrupted run says how to
resume.
"""

from __future__ import annotations

import functools
import inspect as inspect_mod
import os
import shlex
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic_core import PydanticUndefined

from distill import __version__, stages
from distill.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="distill",
    help=(
        "Turn a strong reasoning teacher into small students, the DeepSeek-R1 way.\n\n"
        "Every stage reads dataset directories (Parquet shards + _manifest.json) and writes one; "
        "rerunning a command on the same --out resumes it.\n\n"
        "Example:\n\n"
        "  distill run pipelines/demo.yaml\n\n"
        "  distill inspect runs/demo/verdicts"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def user_errors(fn: F) -> F:
    """One line and exit 2 for a user's mistake; exit 130 with a resume hint on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume where it stopped", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        print(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


EXECUTOR_HELP = ("local: a process pool on this machine; ray: tasks on the Ray cluster in RAY_ADDRESS (or a local "
                 "Ray instance). Same rows either way.")  # fmt: skip
ExecutorOption = Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)]


@app.command()
@user_errors
def run(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline YAML (see pipelines/).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory; default: the YAML's `out`, else runs/<name>.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard existing step outputs and start afresh.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Processes per step; default: the step's, else all cores."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    executor: ExecutorOption = "local",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (rows, teacher tokens, GPU-hours, disk); run nothing.")
    ] = False,
) -> None:
    """Run a whole pipeline's steps in order; finished steps are skipped, a cut-short one resumes.

    Each step writes `<run dir>/<step name>/`. A step whose config or inputs changed since its output
    was written stops the run (exit 2) unless `--overwrite` is given.

    Example:

      distill run pipelines/demo.yaml --out runs/demo

      distill run pipelines/r1-800k.yaml --dry-run
    """
    from distill import pipeline as pipeline_mod

    if dry_run:
        plan(pipeline, out)
        return
    pipeline_mod.run(pipeline, out, overwrite=overwrite, workers=workers, show_progress=progress, executor=executor)


# --- a command per declared step (distill/stages.py): prompts ... compare and DISTILL_STAGES' stages -------


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


def command(stage: stages.Stage) -> Callable[..., None]:
    """The `distill NAME` command of a declared step: its positional argument, --input (or the stage's own
    input flag) and --out, a flag per simple option (its default and help from the options model), the
    stage's own flags, the common flags; built as a function whose signature typer reads."""
    params: list[inspect_mod.Parameter] = []
    arg = stage.argument

    def add(name: str, annotation: Any, default: Any, param_decls: list[str], **option: Any) -> None:
        option = Annotated[annotation, typer.Option(*param_decls, **option)]
        kind = inspect_mod.Parameter.KEYWORD_ONLY
        params.append(inspect_mod.Parameter(name, kind, default=default, annotation=option))

    if arg is not None:
        typ = list[str] if arg.many else str
        positional = Annotated[typ, typer.Argument(help=arg.help, metavar=arg.metavar)]
        params.append(inspect_mod.Parameter("argument", inspect_mod.Parameter.KEYWORD_ONLY, default=...,
                                            annotation=positional))  # fmt: skip
    if stage.takes_input and stage.input_flag and (arg is None or arg.target != "input"):
        required = not stage.input_optional
        add("input", list[str] if required else list[str] | None, ... if required else None,
            param_decls=[stage.input_flag], help=stage.input_help + " Repeatable." * required)  # fmt: skip
    if stage.out_help is not None:
        add("out", Path | None if stage.out_optional else Path, None if stage.out_optional else ...,
            param_decls=["--out"], help=stage.out_help)  # fmt: skip
    fields, needs_config = {}, False
    flagged = {f.target for f in stage.flags.values()}
    for name, info in stage.options.model_fields.items():
        typ = _simple(info.annotation)
        if typ is None or name in flagged or (arg is not None and arg.target == name):
            needs_config = needs_config or (info.is_required() and name not in flagged and typ is None)
            continue
        fields[name] = info
        # a missing required option is the options model's one line (exit 2), like every other mistake
        doc = (info.description or name.replace("_", " ")).rstrip(".") + "."
        if info.is_required():
            doc += " Required." if not stage.config_flag else " Required (here or in --config)."
        elif info.default not in (None, [], PydanticUndefined, False):
            doc += f" Default: {info.default}."
        decls = [f"{_flag(name)}/--no-{name.replace('_', '-')}"] if typ is bool else [_flag(name)]
        add(f"opt_{name}", typ | None, None, param_decls=decls, help=doc)
    for name, flag in stage.flags.items():
        add(f"flag_{name.replace('-', '_')}", flag.type | None, None, param_decls=[f"--{name}"], help=flag.help)
    if stage.config_flag:
        add("config", Path if needs_config else Path | None, ... if needs_config else None, param_decls=["--config"],
            help=stage.config_help)  # fmt: skip
    if stage.writes_dataset:
        add("rows_per_shard", int | None, None, param_decls=["--rows-per-shard"], min=1,
            help=f"{stage.rows_help} Default: the --out directory's own when it has one (a rerun resumes it), "
                 f"else {stage.rows_per_shard:,}.")  # fmt: skip
    if stage.parallel:
        add("workers", int | None, None, param_decls=["--workers"], min=1, help="Processes; default: all cores.")
        add("executor", str, "local", param_decls=["--executor"], help=EXECUTOR_HELP)
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
                stages.parse_options(stage, data, str(kw["config"]), "")  # the one line for a file not a mapping
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
            if flag.path and kw.get("config") is not None:  # given here: relative to here, though --config moved `base`
                value = [str(Path(v).absolute()) for v in value] if isinstance(value, list) else Path(value).absolute()
                value = str(value) if flag.type is str else value
            _set(data, flag.target, value, flag.append)
        inputs = list(kw.get("input") or [])
        if arg is not None:
            value = arg.parse(kw["argument"]) if arg.parse else kw["argument"]
            if arg.target == "input":
                inputs = value if isinstance(value, list) else [value]
            else:
                data[arg.target] = value
        for name, info in fields.items():
            if info.is_required() and name not in data:
                raise UserError(f"distill {stage.name}: {_flag(name)} is required ({info.description}); pass it"
                                + " or set it in --config" * stage.config_flag)  # fmt: skip
        opts = stages.parse_options(stage, data, where, "pass --rows-per-shard N instead")
        rows = kw.get("rows_per_shard") or _rows_per_shard_of(kw.get("out")) or stage.rows_per_shard or 0
        knobs = (rows, kw.get("workers"), kw.get("executor", "local"))
        ctx = stages.Context(inputs, kw.get("out") or Path(), opts, base, *knobs, kw["overwrite"], kw["progress"])
        result = stages.execute(stage, stages.loaded(stage, ctx))
        if isinstance(result, stages.Done) and stage.details is None:
            print(f"{stage.name}: {result.report}", file=sys.stderr)

    run.__signature__ = inspect_mod.Signature(params)  # type: ignore[attr-defined]
    run.__doc__ = stage.help
    run.__name__ = stage.name.replace("-", "_")
    return run


def _rows_per_shard_of(out: Path | None) -> int | None:
    """The shard size `out` was written with: a command rerun on a pipeline's output (whose step may set its
    own) resumes it or finds it done, instead of refusing it as another run's for this knob alone."""
    if out is None or not (out / "_manifest.json").is_file():
        return None
    from distill.store import read_manifest

    manifest = read_manifest(out)
    value = manifest.config.get("rows_per_shard") if manifest is not None else None
    return value if isinstance(value, int) and value > 0 else None


try:
    for declared in stages.registry().values():
        app.command(name=declared.name, help=declared.help)(user_errors(command(declared)))
except UserError as e:  # a DISTILL_STAGES module that cannot be imported: one line, before any command
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


@app.command(name="render-chat")
@user_errors
def render_chat(
    template: Annotated[str, typer.Option("--template", help="r1-qwen, r1-llama, chatml or llama3.")],
    messages: Annotated[Path, typer.Option("--messages", help="JSON file: an array of {role, content} messages.")],
    add_generation_prompt: Annotated[
        bool, typer.Option("--add-generation-prompt", help="End with the assistant's opening, as at inference.")
    ] = False,
    show_loss: Annotated[
        bool, typer.Option("--show-loss", help="Mark the span the loss covers with ⟦ ⟧ (on stderr, the rest as is).")
    ] = False,
) -> None:
    """Print the exact text a student is trained on (or prompted with) under a chat template.

    The loss covers only the last assistant turn after its opening (for the R1 templates: after
    `<｜Assistant｜><think>\\n`), up to and including the end-of-turn token; earlier assistant turns keep
    only what follows `</think>`.

    Example:

      distill render-chat --template r1-qwen --messages data/demo/conversation.json
    """
    import json

    from distill.train.templates import render

    try:
        msgs = json.loads(messages.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{messages}: no such file; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{messages}: not valid JSON ({e}); write a JSON array of messages") from None
    text, spans = render(template, msgs, add_generation_prompt=add_generation_prompt)
    sys.stdout.write(text + "\n")
    if show_loss:
        marked, last = [], 0
        for a, b in spans:
            marked += [text[last:a], "⟦", text[a:b], "⟧"]
            last = b
        marked.append(text[last:])
        print("".join(marked), file=sys.stderr)


@app.command()
@user_errors
def plan(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline YAML (see pipelines/).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory, as for `distill run`.")] = None,
) -> None:
    """The capacity plan of a pipeline, before it runs (the same as `distill run --dry-run`): prompts,
    teacher requests and tokens, GPU-hours for generation and training at the stated throughputs, and
    the disk each dataset directory takes. Figures that rest on an assumption name it (`plan:` block).

    Example:

      distill plan pipelines/r1-800k.yaml
    """
    from distill import pipeline as pipeline_mod
    from distill.plan import plan_pipeline

    loaded = pipeline_mod.load(pipeline, out)
    for line in plan_pipeline(loaded, pipeline_mod.contexts(loaded, pipeline)):
        print(line)


@app.command()
@user_errors
def inspect(
    directory: Annotated[Path, typer.Argument(help="A dataset directory (any stage's --out), or one .parquet file.")],
    rows: Annotated[int, typer.Option("--rows", min=0, help="How many rows to show.")] = 3,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check every shard's size and SHA-256 against the manifest.")
    ] = False,
    matches: Annotated[
        int, typer.Option("--matches", min=0, help="Prompts datasets: benchmark items to list with their copies.")
    ] = 20,
    disagreements: Annotated[
        int,
        typer.Option(
            "--disagreements",
            min=0,
            help="Verdicts: show N traces where our `correct` and the publisher's label differ.",
        ),
    ] = 0,
) -> None:
    """Show a dataset directory: stage, schema, row count, rejects and the funnel by `reject_reason`;
    for prompts, each benchmark item with the prompts removed as its copies and the evidence.

    Example:

      distill inspect runs/demo/verdicts --rows 5 --verify
    """
    from distill.inspect import inspect_dir, inspect_file

    if directory.is_file():
        inspect_file(directory, rows=rows, disagreements=disagreements)
        return
    if inspect_dir(directory, rows=rows, verify=verify, matches=matches, disagreements=disagreements):
        raise typer.Exit(1)


@app.command()
@user_errors
def view(
    directories: Annotated[
        list[Path], typer.Argument(help="Dataset directories, or run folders above them (all found inside).")
    ],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 takes a free one.")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on. Anything but loopback shows the data to the network.")
    ] = "127.0.0.1",
) -> None:
    """Look at the data: a read-only local web page over dataset directories (the funnel, the rows filtered
    by reject reason, domain or source, each row with its LaTeX rendered and its verdict beside the text, all
    samples of a prompt side by side). Ctrl-C stops it. Over SSH: `ssh -L 8765:localhost:8765 host`.

    Example:

      distill view runs/demo
    """
    from distill.view.server import make_server

    try:
        server = make_server(directories, host=host, port=port)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another with --port") from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    count = len(server.RequestHandlerClass.viewer.tables)  # type: ignore[attr-defined]
    print(f"view: {count} dataset{'s' * (count != 1)} at http://{shown}:{bound_port}/  (Ctrl-C stops)",
          file=sys.stderr, flush=True)  # fmt: skip
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"view: warning: listening on {host}: anyone who can reach this machine can read the data",
              file=sys.stderr, flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
@user_errors
def doctor() -> None:
    """Say what this machine gives distill, before a long run: above all, which isolation code checks get.

    Exit status 1 when model-written code cannot be isolated here (`distill filter` would then stop on code
    traces unless the preset says `sandbox: unsafe-rlimits-only`).

    Example:

      distill doctor
    """
    import os
    import platform

    from distill.filters.sandbox import probe

    print("distill doctor")
    print(f"  python   {platform.python_version()} at {sys.executable} (distill {__version__})")
    uid = os.geteuid()
    print(f"  user     uid {uid}" + (" (root): the sandbox drops to nobody" if uid == 0 else ""))
    for key in ("user/max_user_namespaces", "kernel/unprivileged_userns_clone"):
        path = Path("/proc/sys") / key
        value = path.read_text().strip() if path.exists() else "n/a"
        print(f"  sysctl   {key.replace('/', '.')} = {value}")
    iso = probe("bwrap")
    print(f"  sandbox  bwrap: {'yes' if iso.ok else 'NO'}: {iso.why}")
    print(f"  sandbox  unsafe-rlimits-only: only where a preset says so: {probe('unsafe-rlimits-only').why}")
    if not iso.ok:
        raise typer.Exit(1)


def main() -> None:
    import distill

    distill.COMMAND = shlex.join(["distill", *sys.argv[1:]])
    # torch's OpenMP threads spin while they wait for each other: with a core taken by another process, a
    # spinning thread holds its core from the one it waits for, and the demo took 2.12x its quiet time with one
    # busy core. Passive waiting leaves the numbers alone (same threads, same order of sums) and keeps that
    # busy run at 1.30x (benchmarks/RESULTS.md, "The demo on a busy machine").
    # Read by libgomp when torch loads: set before anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
