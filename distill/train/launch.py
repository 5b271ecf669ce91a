"""`distill train STUDENT.yaml --launch`: the `accelerate launch` command a recipe runs with.

The recipe names its accelerate config, GPU count and node count; this builds the command (or runs
it) so the Makefile targets and the Slurm script never repeat those numbers. On several nodes each
node runs the same command with its own MACHINE_RANK and the head's MAIN_PROCESS_IP (the Slurm
script sets both from SLURM_NODEID and the first host of the job).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from distill.errors import UserError
from distill.train.config import StudentConfig


def launch_command(
    cfg: StudentConfig,
    student: Path,
    *,
    data: str | None = None,
    out: Path | None = None,
    max_steps: int | None = None,
    nodes: int | None = None,
    num_processes: int | None = None,
    for_display: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
) -> list[str]:
    nodes = nodes or cfg.nodes
    per_node = cfg.num_processes // cfg.nodes
    processes = num_processes or per_node * nodes
    if processes % nodes:
        raise UserError(f"--num-processes {processes} is not a multiple of --nodes {nodes}")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cfg.accelerate_config,
           "--num_processes", str(processes), "--num_machines", str(nodes)]  # fmt: skip
    if nodes > 1:
        rank, head = os.environ.get("MACHINE_RANK"), os.environ.get("MAIN_PROCESS_IP")
        if for_display:
            rank, head = rank or "$MACHINE_RANK", head or "$MAIN_PROCESS_IP"
        elif rank is None or head is None:
            raise UserError(
                f"{nodes} nodes: set MACHINE_RANK and MAIN_PROCESS_IP on each node (configs/slurm/train.sbatch does)"
            )
        cmd += ["--machine_rank", rank, "--main_process_ip", head, "--main_process_port", "29500"]
    cmd += ["-m", "distill.cli", "train", str(student)]
    if data:
        cmd += ["--data", data]
    if out:
        cmd += ["--out", str(out)]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    if overwrite:
        cmd += ["--overwrite"]
    if verbose:
        cmd += ["--verbose"]
    return cmd


def show(cmd: list[str]) -> str:
    """The command as a shell line; a file under the working folder named relative to it, as one types it."""
    here = Path.cwd()

    def word(c: str) -> str:
        if c.startswith("$"):
            return c
        p = Path(c)
        return shlex.quote(str(p.relative_to(here)) if p.is_absolute() and p.is_relative_to(here) else c)

    return " ".join(map(word, cmd))
