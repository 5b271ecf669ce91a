"""The `distill` command line (DESIGN.md, "The command line": the names are a contract).

Only commands that are built are here; the stages of later issues join as they are finished.
A user's mistake prints one line on stderr and exits with status 2; an interrupted run says how to
resume.
"""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

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


ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="local: a process pool on this machine; ray: tasks on the Ray cluster in RAY_ADDRESS "
        "(or a local Ray instance). Same rows either way.",
    ),
]


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


# prompts, generate, filter, select, mix and DISTILL_STAGES' stages: a command per declaration (distill/stages.py)
try:
    stages.add_commands(app, user_errors)
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
def train(
    student: Annotated[Path, typer.Argument(help="Student recipe YAML (students/*.yaml).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="SFT dataset directory, .parquet/.jsonl, or hf:NAME; default: the YAML's."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint folder; default: the YAML's output_dir.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Tokenize, check and print the plan (with --launch: the command).")
    ] = False,
    launch: Annotated[
        bool, typer.Option("--launch", help="Run under `accelerate launch` with the recipe's config and GPU count.")
    ] = False,
    nodes: Annotated[
        int | None, typer.Option("--nodes", min=1, help="With --launch: nodes (default: the recipe's).")
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option("--num-processes", min=1, help="With --launch: GPUs in all (default: the recipe's).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Remove checkpoints of another recipe or data in --out; start afresh.")
    ] = False,
) -> None:
    """Fine-tune a student on SFT rows (TRL SFTTrainer); resumes from the last checkpoint in --out.

    Run it through `accelerate launch` for several GPUs (the Makefile's `distill-*` targets do). Before
    any training it tokenizes the rows with the student's template, drops rows longer than
    `max_length` (counted), checks the loss mask and prints the plan: rows, tokens, steps, GPU-hours.

    Example:

      distill train students/tiny.yaml --data runs/demo/sft --out runs/students/tiny

      accelerate launch --config_file configs/accelerate/zero3.yaml -m distill.cli train students/qwen-7b.yaml
    """
    from distill.config import load_config
    from distill.train.config import StudentConfig
    from distill.train.sft import check_sft_args
    from distill.train.sft import train as run_train

    cfg = load_config(student, StudentConfig)
    check_sft_args(cfg)  # before a launcher starts N processes that would each fail the same way
    if launch:
        import os
        import subprocess

        from distill.train.launch import launch_command, show

        cmd = launch_command(cfg, student, data=data, out=out, max_steps=max_steps, nodes=nodes,
                             num_processes=num_processes, for_display=dry_run, overwrite=overwrite)  # fmt: skip
        print(show(cmd), file=sys.stderr if not dry_run else sys.stdout)
        if dry_run:
            return
        raise typer.Exit(subprocess.run(cmd, env={**os.environ}).returncode)
    run_train(cfg, data, out, max_steps=max_steps, dry_run=dry_run, overwrite=overwrite)


@app.command(name="eval")
@user_errors
def eval_(
    model: Annotated[
        str | None, typer.Option("--model", help="A checkpoint folder, or the base URL of an OpenAI-compatible server.")
    ] = None,
    benchmark: Annotated[
        Path | None, typer.Option("--benchmark", help="Benchmark .jsonl/.parquet/.csv (problem, answer|tests, domain).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples per problem (k); R1 used 64 for AIME.")] = 4,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder: samples/, scored/, results.json.")] = None,
    teacher: Annotated[
        Path | None, typer.Option("--teacher", help="Teacher YAML: any backend with its settings, instead of --model.")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="For a checkpoint folder: transformers (CPU / one GPU) or vllm.")
    ] = "transformers",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Generated tokens per sample.")] = 32_768,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Default: the checkpoint's generation config, else 0.6.")
    ] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Default: the checkpoint's, else 0.95.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds every sample (per problem and sample index).")] = 0,
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="With a URL: the model name (default: the first listed).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="With a URL: requests in flight.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Offline backends: prompts per batch.")] = 16,
    compare: Annotated[
        bool, typer.Option("--compare", help="Print the result beside the published R1-Distill scores.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard an existing --out and start afresh.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Evaluate a model: k samples per problem, scored by the filters' verifiers; pass@1, maj@k, and more.

    Sampling follows the R1 protocol (temperature 0.6, top-p 0.95, up to 32,768 tokens, no system
    prompt; math asks for \\boxed{}). Killed and rerun, it continues where it stopped. Writes
    OUT/results.json (metrics, fingerprints of model, data and parameters, seed) and per-sample rows
    in OUT/scored/.

    Example:

      distill eval --model runs/students/tiny --benchmark data/demo/heldout.jsonl --samples 4 --out runs/eval/tiny

      distill eval --teacher configs/teacher/synthetic.yaml --benchmark data/demo/heldout.jsonl --out runs/eval/syn

    A served model: `--model http://localhost:8000/v1`; beside the published R1-Distill scores: `--compare`.
    """
    from distill.eval.published import compare_table
    from distill.eval.run import print_results, run_eval

    if benchmark is None or out is None or (model is None and teacher is None):
        raise UserError("eval needs --benchmark FILE, --out DIR and --model (a checkpoint folder or URL) or --teacher")
    if backend not in ("transformers", "vllm"):
        raise UserError(f"--backend {backend!r}: use transformers or vllm")
    teacher_cfg = None
    if teacher is not None:
        from distill.config import load_config
        from distill.teacher.config import TeacherConfig

        teacher_cfg = load_config(teacher, TeacherConfig)
    results = run_eval(
        model or str(teacher), benchmark, samples, out, teacher=teacher_cfg, backend=backend, max_tokens=max_tokens,
        temperature=temperature, top_p=top_p, seed=seed, served_model_name=served_model_name, concurrency=concurrency,
        batch_size=batch_size, overwrite=overwrite, show_progress=progress,
    )  # fmt: skip
    print_results(results)
    name = results["benchmark"].get("published")
    if compare:
        if name is None:
            print("  --compare: no published R1-Distill score for this benchmark", file=sys.stderr)
        else:
            for line in compare_table(name, results):
                print(line)


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
def card(
    directory: Annotated[Path, typer.Argument(help="A finished dataset directory (e.g. the --out of `distill mix`).")],
    license: Annotated[str, typer.Option("--license", help="License id for the Hub metadata.")] = "other",
    name: Annotated[str | None, typer.Option("--name", help="Pretty name; default: the directory's name.")] = None,
) -> None:
    """Write the data card `DIR/README.md`: Hub metadata, contents, token lengths with a histogram,
    languages, how it was built (prompts, filter funnel, selection, mix) and the commands that rebuild it.

    Example:

      distill card runs/demo/sft --license apache-2.0
    """
    from distill.card import write_card

    path = write_card(directory, license=license, pretty_name=name)
    print(f"card: {path}", file=sys.stderr)


@app.command()
@user_errors
def publish(
    directory: Annotated[Path, typer.Argument(help="A finished dataset directory.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="The Hub dataset repo, ORG/NAME.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Stage and validate the exact upload folder; send nothing.")
    ] = False,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
) -> None:
    """Upload shards, card and manifest to a Hub dataset repo; only files the repo lacks are sent.

    The token: HF_TOKEN, else the one `hf auth login` saved.

    Example:

      distill publish runs/demo/sft --repo-id my-org/demo-sft --dry-run
    """
    from distill.hub import publish as publish_dir

    done = publish_dir(directory, repo_id, dry_run=dry_run, private=private)
    print(f"publish: {done.staging} validated ({len(done.files)} files)", file=sys.stderr)
    if dry_run:
        for p in done.files:
            print(f"  would upload  {p}", file=sys.stderr)
    else:
        print(f"publish: {repo_id} holds it: {done.url} (files it already had were not sent)", file=sys.stderr)


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
    from distill import store

    store.COMMAND = shlex.join(["distill", *sys.argv[1:]])
    app()


if __name__ == "__main__":
    main()
