"""`distill generate --shard i/n`: n client processes, one dataset directory.

Part i takes the chunks k with k % n == i into its own dataset directory, OUT/.work/parts/i-of-n/, its
shards under their global numbers; whichever part finds all n complete links their files into OUT under
one manifest, so the rows and their order are a single process's.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.records import RECORDS
from distill.store import (
    WORK,
    Manifest,
    StageOutput,
    StageResult,
    fingerprint,
    inputs_fingerprint,
    read_manifest,
    shard_files,
)
from distill.teacher.journal import JOURNALS

PARTS = Path(WORK) / "parts"  # `--shard i/n` runs write OUT/.work/parts/i-of-n/ until the last merges them


def parse_shard(spec: str) -> tuple[int, int]:
    """`i/n` (0 <= i < n), or `slurm` for (SLURM_PROCID, SLURM_NTASKS)."""
    if spec == "slurm":
        try:
            i, n = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        except (KeyError, ValueError):
            raise UserError("--shard slurm: SLURM_PROCID / SLURM_NTASKS are not set; run it under srun") from None
    else:
        head, sep, tail = spec.partition("/")
        if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
            raise UserError(f"--shard {spec!r}: write it as i/n, e.g. 0/4 for the first of 4 parts")
        i, n = int(head), int(tail)
    if not 0 <= i < n:
        raise UserError(f"--shard {spec!r}: i must be in 0..n-1 (here n is {n})")
    return i, n


def part_dir(out: Path, i: int, n: int) -> Path:
    return out / PARTS / f"{i}-of-{n}"


def merged_already(
    out: Path, config: dict[str, Any], inputs: list[dict[str, Any]], started: float
) -> StageResult | None:
    """The merged output, when an earlier sharded run already completed it with the same teacher and inputs."""
    manifest = read_manifest(out)
    if (
        manifest is not None
        and manifest.complete
        and manifest.config_fingerprint == fingerprint(config)
        and manifest.input_fingerprint == inputs_fingerprint(inputs)
    ):
        return StageResult(manifest, True, time.perf_counter() - started, [])
    return None


def merge_if_whole(out: Path, n: int, result: StageResult) -> StageResult:
    if n == 1:
        return result
    merged = merge_parts(out, n)
    return result if merged is None else StageResult(merged, result.skipped, result.seconds, result.redone)


def merge_parts(out: Path, n: int) -> Manifest | None:
    """Assemble `out` from its n complete parts, or None while a part is unfinished.

    Each part holds the shards of its own chunks under their global numbers (chunk k -> shard k), so
    merging is linking their files into `out` and listing them in one manifest: the rows and their order
    equal a single process's. Crash-safe: the manifest, written last, makes the merge; a rerun relinks.
    """
    found = [read_manifest(part_dir(out, i, n)) for i in range(n)]
    parts = [p for p in found if p is not None and p.complete]
    if len(parts) < n:
        return None
    first = parts[0]
    config = {k: v for k, v in first.config.items() if k != "shard"}
    for i, p in enumerate(parts):
        if {k: v for k, v in p.config.items() if k != "shard"} != config or p.inputs != first.inputs:
            raise UserError(
                f"{part_dir(out, i, n)}: made with another teacher config or other inputs than part 0; "
                f"rerun that part with the same command (and --overwrite)"
            )
    # the parts record their inputs relative to themselves: given to the merged directory as real paths
    inputs = [{**e, "path": str(p)} for e, p in zip(first.inputs, first.input_paths(part_dir(out, 0, n)), strict=True)]
    with StageOutput(out, stage="generate", record=RECORDS[first.record], config=config, inputs=inputs) as o:
        if o.complete:
            return o.opened.manifest
        o.writer.set_plan(sum(p.planned_shards or 0 for p in parts) // n)
        for i, p in enumerate(parts):
            for index, entry in sorted(p.shards.items()):
                for f in shard_files(entry):
                    _link(part_dir(out, i, n) / f["file"], out / f["file"])
                o.writer.manifest.shards[index] = entry
        stats = [p.stats.get("generate", {}) for p in parts]
        merged = {
            "teacher": stats[0].get("teacher"),
            "backend": stats[0].get("backend"),
            "samples_per_prompt": stats[0].get("samples_per_prompt"),
            "parts": n,
            **{
                k: sum(s.get(k, 0) for s in stats)
                for k in ("traces", "failed_requests", "prompt_tokens", "completion_tokens")
            },
            "prompts": stats[0].get("prompts"),  # every part counts the whole input's prompts
        }
        # the parts' files live on in `out` (hard links); finishing removes OUT/.work/ with the parts
        return o.finish({"generate": merged}, seconds=max(p.stats.get("seconds", 0) for p in parts)).manifest


def _link(src: Path, dst: Path) -> None:
    """Hard-link a part's file into the merged directory (a copy where the filesystem has no links)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def move_legacy_work(out: Path) -> None:
    """Journals and parts of a run started before they moved under .work/ (2026-12): moved there, so an
    interrupted run resumes instead of asking the teacher again."""
    moves = [(p / "_work", p / JOURNALS) for p in sorted((out / "_parts").glob("*-of-*"))]  # inside parts first
    moves += [(out / "_work", out / JOURNALS), (out / "_parts", out / PARTS)]
    for old, new in moves:
        if old.is_dir() and not new.exists():
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)
