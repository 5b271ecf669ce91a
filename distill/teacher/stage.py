"""`distill generate`: prompts in, exactly one trace row per (prompt `id`, `sample`) out.

The prompts are planned into chunks as every stage's input is (chunk k -> shard k), but a chunk is
not one task: its samples go out as single requests, many chunks' worth in flight at once, and come
back in any order. Each result is appended to the chunk's journal (`distill.teacher.journal`) as it
arrives; when the last sample of a chunk is in, its shard is written in prompt order (then sample
order), committed, recorded in the manifest, and the journal deleted. So:

- a killed run resumes by reading the journals and asking only for the (id, sample) pairs missing;
- a request that failed after every retry becomes a reject of its shard (`request_failed`, with the
  error), and the next run of the same command takes that shard back, keeps its rows and asks again
  for the failed samples only;
- a prompt id seen earlier in the input is rejected (`duplicate_id`), so no pair can appear twice.

This module is the scheduler (its options and declaration are in `config.py`); a chunk's requests and commit are in
`chunks.py`, the backends behind `Backend` in `backends.py`, `--shard i/n` runs and their merge in
`parts.py`. With `--preset --keep --max-samples` the samples are drawn by `adaptive.py` instead: each trace
judged as it arrives, a prompt stopped once it has enough.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import load_config
from distill.errors import UserError
from distill.progress import GenerateProgress
from distill.sources import inputs as inputs_mod
from distill.stages import Context, Flow, PlanContext
from distill.store import WORK, DatasetWriter, StageOutput, StageResult
from distill.teacher.adaptive import (
    AdaptiveRun,
    AdaptiveTotals,
    Rule,
    adaptive_lines,
    adaptive_stats,
    check_rule,
    mix_expected,
    rate_mix,
)
from distill.teacher.backends import Backend, make_backend
from distill.teacher.chunks import (
    PROMPT,
    TRACE,
    ChunkWork,
    commit_chunk,
    drop_stale_journals,
    export_shard,
    first_rows,
    journaled,
    load_chunk,
)
from distill.teacher.config import GenerateOptions, TeacherConfig
from distill.teacher.parts import merge_if_whole, merged_already, move_legacy_work, parse_shard, part_dir
from distill.teacher.prompting import Request


@dataclass
class RunTotals:
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    adaptive: AdaptiveTotals = field(default_factory=AdaptiveTotals)


@dataclass(frozen=True)
class Adaptive:
    """`--preset --keep --max-samples`: the preset's options (as `distill filter` runs them) and the rule."""

    preset: dict[str, Any]
    preset_name: str | None
    rule: Rule


def _adaptive(ctx: Context, cfg: TeacherConfig) -> Adaptive | None:
    opts: GenerateOptions = ctx.options
    if opts.preset is None:
        return None
    from distill.filters.stage import load_preset

    preset = load_preset(ctx.path(opts.preset))
    options = preset.model_dump()
    if options["judge"] is None:
        del options["judge"]  # as `distill filter` passes it
    return Adaptive(options, preset.name, check_rule(opts.keep, opts.max_samples, cfg, opts.speculate))


async def _generate(
    backend: Backend,
    cfg: TeacherConfig,
    ds: DatasetWriter,
    todo: list[tuple[int, inputs_mod.Chunk, int]],
    root: Path,
    first: dict[str, tuple[str, int]],
    progress: GenerateProgress,
    totals: RunTotals,
) -> None:
    queue: asyncio.Queue[tuple[ChunkWork, Request] | None] = asyncio.Queue(
        maxsize=max(64, 2 * backend.workers * backend.batch_size)
    )
    commits: list[asyncio.Task[None]] = []

    async def commit(work: ChunkWork) -> None:
        entry = await asyncio.to_thread(commit_chunk, work, cfg, root)
        ds.record_shard(entry)
        work.journal.remove()

    def record(work: ChunkWork, req: Request, res: dict[str, Any]) -> None:
        if "error" in res:
            work.failures[req.key] = res["error"]
            totals.failed += 1
        else:
            work.journal.append({"id": req.id, "sample": req.sample, **res})
            totals.prompt_tokens += res.get("prompt_tokens") or 0
            totals.completion_tokens += res.get("completion_tokens") or 0
        totals.requests += 1
        work.pending -= 1
        if work.pending == 0:
            commits.append(asyncio.create_task(commit(work)))

    async def worker() -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            # A full batch, waiting for the producer if need be: what a batch holds must not depend on timing,
            # because a batched sampler (transformers: one seed per batch, rows padded together) gives other
            # samples for other batches; so the same run samples the same tokens every time.
            batch = [item]
            while len(batch) < backend.batch_size:
                nxt = await queue.get()
                if nxt is None:
                    queue.put_nowait(None)  # leave the stop signal for the next worker
                    break
                batch.append(nxt)
            results = await backend.generate([req for _, req in batch])
            for (work, req), res in zip(batch, results, strict=True):
                record(work, req, res)
            tokens = sum(r.get("completion_tokens") or 0 for r in results)
            stats = backend.stats
            progress.advance(len(batch), tokens, stats.errors if stats else None, stats.rate_wait_s if stats else 0.0)

    async def produce() -> None:
        for index, chunk, file_index in todo:
            work = await asyncio.to_thread(load_chunk, index, chunk, file_index, cfg, root, first)
            if work.pending == 0:  # everything was in the journal (or the chunk has no good rows)
                commits.append(asyncio.create_task(commit(work)))
                continue
            for req in work.todo:
                await queue.put((work, req))
        for _ in range(backend.workers):
            await queue.put(None)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        for _ in range(backend.workers):
            group.create_task(worker())
    # Commits are started by the last result of each chunk; all results are in, so wait for them.
    for task in commits:
        await task


def run(ctx: Context) -> StageResult:
    """Generate into `out`; with `--shard i/n`, only chunks k with k % n == i, into `out/.work/parts/i-of-n/`,
    and whichever of the n processes finds all parts complete merges them into `out` (`merge_parts`)."""
    started = time.perf_counter()
    input_specs, out, cfg, rows_per_shard = ctx.inputs, ctx.out, ctx.settings, ctx.rows_per_shard
    overwrite, show_progress = ctx.overwrite, ctx.show_progress
    shard = parse_shard(ctx.options.shard) if ctx.options.shard is not None else None
    files = inputs_mod.resolve(input_specs, rows_per_shard)
    inputs_mod.check_columns(files, PROMPT)
    inputs_mod.preflight(files, PROMPT)
    chunks = inputs_mod.plan(files, rows_per_shard)
    config = {"teacher": cfg.fingerprint_fields(), "rows_per_shard": rows_per_shard}
    adaptive = _adaptive(ctx, cfg)
    if adaptive is not None:  # absent otherwise: earlier outputs keep their fingerprint
        config["adaptive"] = {"preset": adaptive.preset, **adaptive.rule.describe()}
    inputs = [f.describe() for f in files]
    mine, n = (shard[0], shard[1]) if shard else (0, 1)
    root = out
    move_legacy_work(out)
    if shard is not None:
        if merged := merged_already(out, config, inputs, started):
            return merged
        root = part_dir(out, mine, n)
        config = {**config, "shard": [mine, n]}
    with StageOutput(root, stage="generate", record=TRACE, config=config, inputs=inputs, overwrite=overwrite) as o:
        ds, opened = o.writer, o.opened
        retried = [k for k, e in sorted(opened.manifest.shards.items()) if e.get("failed_requests")]
        for k in retried:  # keep the rows, ask again for the failed samples
            export_shard(root, opened.manifest.shards[k], k)
            ds.reopen_shard(k)
            opened.done.discard(k)
            opened.redone.append(f"shard {k}: retrying its failed requests")
        if o.complete:
            result = o.skipped()
        else:
            drop_stale_journals(root, opened.done)
            ds.set_plan(len(chunks))
            file_index = {f.path: i for i, f in enumerate(files)}
            todo = [(k, c, file_index[c.file.path]) for k, c in enumerate(chunks)
                    if k not in opened.done and k % n == mine]  # fmt: skip
            # Ids are deduplicated over the whole input, so every part rejects the same repeats.
            first, good = first_rows(chunks)
            own = _own_prompts(first, chunks, mine, n)
            if adaptive is None:
                total = own * cfg.samples
                have = sum(s["rows"] for s in ds.manifest.shards.values()) + journaled(root, todo)
            else:  # the bar counts prompts decided
                total, have = own, sum(s.get("rows_in", 0) for s in ds.manifest.shards.values())
            backend = make_backend(_share_of_quota(cfg, n), root / WORK)
            totals = RunTotals()
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(_run(backend, cfg, ds, todo, root, first, total, have, show_progress, totals, adaptive))
            stats = generate_stats(ds, cfg, totals, backend, good, time.perf_counter() - o.started)
            if adaptive is not None:
                totals.adaptive.engine_aborted = getattr(backend, "aborted", None)
                stats["adaptive"] = adaptive_stats(ds, adaptive.rule, adaptive.preset_name, totals.adaptive)
            result = o.finish({"generate": stats})  # every chunk is a shard now: the journals go with .work/
    return merge_if_whole(out, n, result)  # outside the part's lock: the merge removes the parts


def _share_of_quota(cfg: TeacherConfig, n: int) -> TeacherConfig:
    """Each of n `--shard` parts keeps 1/n of a hosted API's per-minute quota (the parts do not talk)."""
    limits = {k: max(1, getattr(cfg, k) // n) for k in ("requests_per_minute", "tokens_per_minute") if getattr(cfg, k)}
    return cfg.model_copy(update=limits) if n > 1 and limits else cfg


def _own_prompts(first: dict[str, tuple[str, int]], chunks: list[inputs_mod.Chunk], mine: int, n: int) -> int:
    """How many distinct prompts fall in this part's chunks (k % n == mine)."""
    if n == 1:
        return len(first)
    starts: dict[str, list[tuple[int, int]]] = {}
    for k, c in enumerate(chunks):
        starts.setdefault(c.file.path, []).append((c.start, k))
    count = 0
    for path, row in first.values():
        spans = starts[path]
        count += spans[bisect.bisect_right(spans, (row, len(chunks))) - 1][1] % n == mine
    return count


async def _run(
    backend: Backend,
    cfg: TeacherConfig,
    ds: DatasetWriter,
    todo: list,
    root: Path,
    first: dict,
    total: int,
    have: int,
    show_progress: bool,
    totals: RunTotals,
    adaptive: Adaptive | None,
) -> None:
    await backend.start()
    try:
        with GenerateProgress(total, have, enabled=show_progress) as progress:
            if adaptive is None:
                await _generate(backend, cfg, ds, todo, root, first, progress, totals)
            else:
                run = AdaptiveRun(backend, cfg, adaptive.preset, adaptive.rule, ds, todo, root, first, progress, totals)
                await run.run()
    except BaseExceptionGroup as group:  # the TaskGroup's: raise the first cause as itself (a UserError first)
        errors = sorted(group.exceptions, key=lambda e: not isinstance(e, UserError))
        raise errors[0] from None
    finally:
        await backend.close()


def _loop_factory() -> Any:
    """uvloop when installed: the same asyncio, with less CPU per request (benchmarks/generate_bench.py)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def generate_stats(
    ds: DatasetWriter, cfg: TeacherConfig, totals: RunTotals, backend: Backend, good: int, seconds: float
) -> dict[str, Any]:
    shards = ds.manifest.shards.values()
    prompt_tokens = sum(s.get("prompt_tokens", 0) for s in shards)
    completion_tokens = sum(s.get("completion_tokens", 0) for s in shards)
    stats: dict[str, Any] = {
        "teacher": cfg.teacher_name,
        "backend": cfg.backend,
        "prompts": good,
        "samples_per_prompt": cfg.samples,
        "traces": ds.manifest.rows,
        "failed_requests": sum(s.get("failed_requests", 0) for s in shards),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "this_run": {
            "requests": totals.requests,
            "failed": totals.failed,
            "completion_tokens": totals.completion_tokens,
            "seconds": round(seconds, 3),
            "requests_per_s": round(totals.requests / seconds, 2) if seconds else None,
            "tokens_per_s": round(totals.completion_tokens / seconds, 2) if seconds else None,
            "errors": dict(backend.stats.errors) if backend.stats else {},
            "retries": backend.stats.retries if backend.stats else 0,
            "rate_limit_wait_s": round(backend.stats.rate_wait_s, 1) if backend.stats else 0.0,
        },
    }
    if (shard := ds.manifest.config.get("shard")) is not None:
        stats["part"] = shard
    if cfg.prices is not None:
        stats["cost_usd"] = round(cfg.prices.cost(prompt_tokens, completion_tokens), 4)
    return stats


def print_generate(stats: dict[str, Any], merged_hint: bool = False) -> None:
    """The summary lines of a generate run; `merged_hint`: a --shard run that found the parts merged."""
    run = stats.get("this_run") or {"requests": 0}  # a merge of parts has no run of its own
    a = stats.get("adaptive")
    drawn = f"x {stats['samples_per_prompt']} samples" if a is None else f"(at most {a['max_samples']} each)"
    line = (
        f"  {stats['traces']:,} traces of {stats['prompts']:,} prompts {drawn}; "
        f"{stats['prompt_tokens']:,} prompt + {stats['completion_tokens']:,} completion tokens"
    )
    if "cost_usd" in stats:
        line += f"; cost ${stats['cost_usd']:,.2f}"
    if "part" in stats:
        line = f"  part {stats['part'][0]} of {stats['part'][1]}:" + line[1:] + "; merged when every part is done"
    elif "parts" in stats:
        line += f"; merged from {stats['parts']} parts"
    print(line, file=sys.stderr)
    if a is not None:
        for text in adaptive_lines(a, stats["prompts"]):
            print(f"  {text}", file=sys.stderr)
    if run["requests"]:
        errors = ", ".join(f"{k} {v:,}" for k, v in run["errors"].items()) or "none"
        print(
            f"  this run: {run['requests']:,} requests ({run['failed']:,} failed), {run['requests_per_s']:,.0f} req/s, "
            f"{run['tokens_per_s']:,.0f} tok/s; transient errors {errors}; {run['retries']:,} retries"
            + (f"; held {run['rate_limit_wait_s']:,.0f}s by the rate limits" if run.get("rate_limit_wait_s") else ""),
            file=sys.stderr,
        )
    if stats["failed_requests"]:
        print(
            f"  {stats['failed_requests']:,} samples failed after every retry (see _rejects/); "
            + (
                "the parts are merged: run the command without --shard to retry them"
                if merged_hint
                else "run the same command again to retry them"
            ),
            file=sys.stderr,
        )


def load(ctx: Context) -> TeacherConfig:
    opts: GenerateOptions = ctx.options
    path = ctx.path(opts.teacher)
    cfg = load_config(path, TeacherConfig)
    if cfg.backend == "replay":  # its answers file is named relative to the teacher YAML
        answers = path.parent / Path(cfg.model).expanduser()
        if not answers.exists():
            raise UserError(f"{path}: model: the replay file {answers} does not exist")
        cfg = cfg.model_copy(update={"model": str(answers.resolve())})
    if opts.shard is not None:
        parse_shard(opts.shard)  # a bad --shard is named before anything is read
    if opts.preset is not None:  # a bad preset or rule too
        _adaptive(ctx, cfg)
    return cfg.model_copy(update={"base_urls": opts.base_url}) if opts.base_url else cfg


def plan(p: PlanContext) -> Flow:
    a, cfg, src, opts = p.assumptions, p.ctx.settings, p.upstream, p.options
    prompts = src.rows if src else 0
    samples, how, extra = float(cfg.samples), f"{cfg.samples} samples", {}
    saving = ""
    if opts.preset is not None:  # judged in flight: what the rule draws for the expected pass rates
        keep, cap = opts.keep or 1, opts.max_samples or cfg.samples
        mix, source = rate_mix(a.pass_rates, p.ctx, a.keep_rate)
        rule, fixed = mix_expected(mix, keep, cap), mix_expected(mix, keep, cfg.samples, fixed=True)
        samples = rule.drawn
        how = (f"until {keep} pass, at most {cap}: {samples:.2f} per prompt for {source}; {rule.covered:.1%} of "
               f"prompts with one kept" + (f", {rule.full:.1%} with {keep}" if keep > 1 else ""))  # fmt: skip
        fixed_gpu_h, fixed_usd = _teacher_cost(cfg, a, prompts * cfg.samples)
        bill = f", ~${fixed_usd:,.0f}" if fixed_usd else f", {fixed_gpu_h:,.0f} GPU-hours" if fixed_gpu_h else ""
        saving = (f"; fixed N = {cfg.samples} would be {prompts * cfg.samples:,.0f} requests{bill}: "
                  f"{samples / cfg.samples - 1:+.0%} teacher tokens, {rule.kept / fixed.kept - 1:+.0%} kept traces, "
                  f"{rule.covered - fixed.covered:+.1%} prompts covered")  # fmt: skip
        extra = {"expected_kept": prompts * rule.kept, "keep_rate": rule.kept / rule.drawn if rule.drawn else 0.0}
    requests = prompts * samples
    tokens = requests * a.mean_completion_tokens
    gpu_h, usd = _teacher_cost(cfg, a, requests)
    if cfg.backend in OFFLINE_TEACHERS:
        serving = f"{cfg.backend} teacher: no GPU"
    elif cfg.prices is not None:
        serving = f"~${usd:,.0f} at the teacher's prices (hosted: no GPU-hours of yours)"
    else:
        serving = (f"{gpu_h:,.0f} GPU-hours at {a.teacher_tokens_per_s:,.0f} tok/s per "
                   f"{a.gpus_per_teacher_replica}-GPU replica")  # fmt: skip
    return Flow(
        requests,
        a.mean_prompt_tokens + a.mean_completion_tokens,
        extra={"prompts": prompts, "samples": samples, **extra},
        note=f"{requests:,.0f} requests ({how}), {tokens / 1e9:,.2f}B teacher tokens "
        f"(plan.mean_completion_tokens {a.mean_completion_tokens:,.0f}); {serving}{saving}",
        teacher_gpu_h=gpu_h,
        teacher_usd=usd,
    )


OFFLINE_TEACHERS = ("synthetic", "replay")  # the offline arithmetic teacher, answers already written: no GPU


def _teacher_cost(cfg: TeacherConfig, a: Any, requests: float) -> tuple[float, float]:
    """(GPU-hours, USD) of `requests` at the plan's mean lengths: a served teacher costs GPU-hours, a hosted API
    bills tokens at its prices, an offline one costs neither."""
    tokens = requests * a.mean_completion_tokens
    if cfg.backend in OFFLINE_TEACHERS:
        return 0.0, 0.0
    if cfg.prices is not None:
        return 0.0, cfg.prices.cost(int(requests * a.mean_prompt_tokens), int(tokens))
    return tokens / a.teacher_tokens_per_s / 3600 * a.gpus_per_teacher_replica, 0.0


def details(result: StageResult, ctx: Context) -> None:
    stats = result.manifest.stats["generate"]
    print_generate(stats, merged_hint=ctx.options.shard is not None and "parts" in stats)
