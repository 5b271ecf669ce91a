"""`distill generate --preset P --keep K --max-samples N`: pay the teacher only for what is kept.

Each trace is judged the moment it comes back, by the function `distill filter` runs (`filters.stage.verdicts`),
and a prompt stops once K of its samples pass, or N were drawn. The rule that decides a prompt is sequential
and so does not depend on timing: samples are numbered in the order they are drawn, and a prompt is decided at
the first T such that samples 0..T-1 are all judged and K of them pass (or T = N); a pass with the same text as an
earlier one of its prompt does not count, as `select` keeps one of identical traces. Its rows are samples 0..T-1:
the same on every rerun and after a kill, whatever finished first. What it costs is what the sequential rule
costs, because a sample is drawn only while the samples below it, in flight ones counted as passing, hold fewer
than K passes: a sample the rule would draw in any case.

With `--speculate S`, when the teacher would otherwise idle (the run's tail: no new prompt left to start, and
open prompts fewer than a quarter of the slots), a prompt may draw S samples more, to be done sooner; once it
is decided, those still in flight are cancelled (one request per connection: closing it aborts the request on
vLLM / SGLang) and those that came back anyway are kept in `_removed/` (reason `beyond_keep`) with their
verdicts and tokens, not among the rows.

The output is what `generate` writes, one row per (id, sample) drawn below T, plus `_verdicts/`: each row's
verdict as `distill filter` with the same preset would write it. So `filter` and `select --per-prompt K`
downstream, the mix, the card and the view work unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from dataclasses import dataclass, field
from math import comb
from pathlib import Path
from typing import Any

import pyarrow as pa

from distill import language
from distill.errors import UserError
from distill.filters.config import FilterPreset
from distill.filters.early import failed_already
from distill.filters.select import text_key
from distill.records import conform_table, get_record, output_schema
from distill.sources import inputs as inputs_mod
from distill.store import DatasetWriter, ShardWriter
from distill.teacher.backends import Backend
from distill.teacher.chunks import TRACE, WRITE_BATCH, ChunkWork, commit_shard, load_chunk, reject_sample, trace_row
from distill.teacher.config import TeacherConfig
from distill.teacher.prompting import Request

VERDICT = get_record("verdict")
TRACE_SCHEMA = output_schema(TRACE)
# per shard, summed over the manifest: kept traces, prompts with `keep` / with one passing, samples drawn beyond a
# decided prompt, traces stopped in flight for a rule they had already failed
ADAPTIVE_COUNTS = ("kept", "prompts_full", "prompts_covered", "removed", "removed_completion_tokens", "stopped",
                   "stopped_completion_tokens")  # fmt: skip


@dataclass(frozen=True)
class Rule:
    keep: int  # passing samples a prompt needs
    max_samples: int  # the most a prompt may cost
    speculate: int  # samples beyond the surely needed, in flight while the teacher would idle

    def describe(self) -> dict[str, Any]:
        return {"keep": self.keep, "max_samples": self.max_samples}


def counts_as_pass(row: dict[str, Any], seen: set[int]) -> bool:
    """A judged sample passes, and is not the same text as an earlier passing sample of its prompt (`seen`, their
    text keys): `distill select` keeps one of identical traces, so the rule counts one."""
    if not row["verdict"]["keep"]:
        return False
    if "_key" not in row:  # in memory only: computed once per sample
        v = row["verdict"]
        row["_key"] = text_key(v.get("reasoning", row.get("reasoning")), v.get("content", row.get("content")))
    if row["_key"] in seen:
        return False
    seen.add(row["_key"])
    return True


@dataclass
class Draw:
    """One prompt's samples: judged (by sample), in flight, failed; decided once its rows are known."""

    work: ChunkWork
    position: int  # in work.prompts
    judged: dict[int, dict[str, Any]] = field(default_factory=dict)  # sample -> journal row (result + verdict)
    in_flight: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    decided: int | None = None  # T: its rows are samples 0..T-1

    @property
    def id(self) -> str:
        return self.work.prompts[self.position]["id"]

    def settle(self, rule: Rule) -> bool:
        """Decide it when the judged samples allow; True once decided."""
        if self.decided is None:
            passes, seen = 0, set()
            for t in range(rule.max_samples):
                row = self.judged.get(t)
                if row is None:
                    return False
                passes += counts_as_pass(row, seen)
                if passes >= rule.keep:
                    self.decided = t + 1
                    return True
            self.decided = rule.max_samples
        return True

    @property
    def finished(self) -> bool:
        """Nothing more will come: decided (or stopped by a failed request) with nothing in flight."""
        return (self.decided is not None or bool(self.failed)) and not self.in_flight

    def to_draw(self, rule: Rule, spare: int) -> list[int]:
        """The samples to send now: each that the sequential rule draws in any case (fewer than K passes below it,
        counting those in flight as passes), then up to `spare` more while it is open."""
        if self.decided is not None or self.failed:
            return []
        out: list[int] = []
        bound, seen = 0, set()  # passes below s, in-flight samples counted as passing
        for s in range(rule.max_samples):
            row = self.judged.get(s)
            if row is not None:
                bound += counts_as_pass(row, seen)
                continue
            if s in self.in_flight:
                if bound >= rule.keep:
                    spare -= 1  # already speculative
                bound += 1
                continue
            if bound >= rule.keep:
                if spare <= 0:
                    break
                spare -= 1  # speculative: the rule would draw it only if samples in flight fail
            out.append(s)
            bound += 1
        return out


def judged_table(rows: list[dict[str, Any]], preset: dict[str, Any]) -> pa.Table:
    """Trace rows -> verdict rows, exactly as `distill filter` writes them (its batch function, its conforming)."""
    from distill.filters.stage import verdicts

    batch = pa.RecordBatch.from_pylist(rows, schema=TRACE_SCHEMA)
    table, errors = conform_table(verdicts(batch, preset), VERDICT, "generate --preset: verdicts", "generate")
    if errors:  # a trace the teacher wrote always conforms; say so loudly if not
        raise RuntimeError(f"verdict rows do not conform: {errors[:3]}")
    return table


def judge(rows: list[dict[str, Any]], preset: dict[str, Any]) -> list[dict[str, Any]]:
    """What the verdict adds to each trace row (its check columns; reasoning and content where the judge split
    inline <think> tags), to be journaled beside the result."""
    if not rows:
        return []
    table = judged_table(rows, preset)
    added = [n for n in table.column_names if n not in TRACE_SCHEMA.names]
    columns = {n: table.column(n).to_pylist() for n in [*added, "reasoning", "content"]}
    out = []
    for k, row in enumerate(rows):
        verdict = {n: columns[n][k] for n in added}
        for n in ("reasoning", "content"):
            if columns[n][k] != row[n]:
                verdict[n] = columns[n][k]
        out.append(verdict)
    return out


@dataclass
class AdaptiveTotals:
    cancelled: int = 0  # requests in flight for a decided prompt, cancelled
    speculative: int = 0  # samples drawn beyond the surely needed
    engine_aborted: int | None = None  # backend vllm: cancelled requests its engine aborted (a server counts its own)


class AdaptiveRun:
    """The scheduler of one adaptive run: prompts started as capacity frees, samples drawn by the rule, results
    judged in batches as they arrive, each chunk committed once all its prompts are finished."""

    def __init__(
        self, backend: Backend, cfg: TeacherConfig, preset: dict[str, Any], rule: Rule, ds: DatasetWriter,
        todo: list[tuple[int, inputs_mod.Chunk, int]], root: Path, first: dict[str, tuple[str, int]],
        progress: Any, totals: Any,
    ) -> None:  # fmt: skip
        self.backend, self.cfg, self.preset, self.rule, self.ds = backend, cfg, preset, rule, ds
        self.todo, self.root, self.first, self.progress, self.totals = deque(todo), root, first, progress, totals
        self.capacity = backend.workers * backend.batch_size
        if backend.batch_size != 1:  # a batch cannot be cut short: what it speculated would all be paid for
            self.rule = Rule(rule.keep, rule.max_samples, 0)
        self.free_workers = backend.workers
        self.fresh: deque[Draw] = deque()  # prompts of loaded chunks not started yet
        self.open: dict[str, Draw] = {}  # started, not finished, in start order
        self.ready: deque[tuple[Draw, int]] = deque()
        self.running: dict[asyncio.Task[list[dict[str, Any]]], list[tuple[Draw, int]]] = {}
        self.by_sample: dict[tuple[str, int], asyncio.Task[list[dict[str, Any]]]] = {}
        self.draws: dict[int, list[Draw]] = {}  # chunk index -> its prompts' draws
        self.unfinished: Counter[int] = Counter()  # chunk index -> draws not finished
        self.commits: list[asyncio.Task[None]] = []
        self.adaptive: AdaptiveTotals = totals.adaptive
        self.sent = 0  # requests in the running tasks
        self.targets: dict[str, str | None] = {}  # prompt id -> the language its reasoning must be in
        self.watching = cfg.stream and hasattr(backend, "watch")  # a streamed trace that has failed is stopped
        if self.watching:
            backend.watch = self._watch
            self._preset_model = FilterPreset.model_validate(preset)

    def _watch(self, req: Request, reasoning: str) -> tuple[str, str] | None:
        return failed_already(reasoning, req.domain, self.targets.get(req.id), self._preset_model, self.cfg.max_tokens)

    async def run(self) -> None:
        """Send, collect, judge, decide, until every prompt is finished. The judge runs beside the requests (in a
        thread, on everything that arrived while it was busy), so the teacher is never kept waiting for it."""
        arrived: list[tuple[Draw, int, dict[str, Any]]] = []
        judging: asyncio.Future[Any] | None = None
        while True:
            await self._fill()
            self._send()
            if arrived and judging is None:
                judging = asyncio.ensure_future(self._judge(arrived))
                arrived = []
            waits: set[asyncio.Future[Any]] = {*self.running, *([judging] if judging else [])}
            if not waits:
                if self.open or self.fresh or self.todo:  # nothing in flight yet prompts are open: a bug, not a hang
                    raise RuntimeError(f"adaptive generate stalled with {len(self.open)} prompts open")
                break
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is judging:
                    judging = None
                    self._absorb(*task.result())
                    continue
                batch = self.running.pop(task)  # type: ignore[arg-type]
                self.free_workers += 1
                self.sent -= len(batch)
                for draw, s in batch:
                    self.by_sample.pop((draw.id, s), None)
                if task.cancelled():
                    for draw, s in batch:
                        draw.in_flight.discard(s)
                        self._maybe_finish(draw)
                    continue
                # still counted in flight until judged: the rule must not draw them again meanwhile
                arrived += [(d, s, res) for (d, s), res in zip(batch, task.result(), strict=True)]
        for commit in self.commits:
            await commit

    async def _judge(self, arrived: list[tuple[Draw, int, dict[str, Any]]]) -> tuple[list, list[dict[str, Any]]]:
        good = [(d, s, res) for d, s, res in arrived if "error" not in res]
        params = json.dumps(self.cfg.params(), sort_keys=True)
        rows = [trace_row(d.work.prompts[d.position], s, res, self.cfg, params) for d, s, res in good]
        return arrived, await asyncio.to_thread(judge, rows, self.preset)

    async def _fill(self) -> None:
        """Queue what to send: the samples open prompts surely need, then new prompts, then (the teacher idling
        otherwise) speculative samples of open prompts."""
        room = self.capacity - self.sent - len(self.ready)
        while room > 0:
            if not self.fresh and self.todo:
                await self._load(*self.todo.popleft())
                continue
            if not self.fresh:
                break
            draw = self.fresh.popleft()
            self.open[draw.id] = draw
            room -= self._queue(draw, 0)
        # Speculation only in the tail proper: no prompt left to start and few open, so the teacher would idle. A
        # speculative sample is wasted with the prompt's pass rate; the prompts left open last are the hard ones.
        tail = not self.fresh and not self.todo and len(self.open) <= self.capacity // 4
        if room > 0 and self.rule.speculate and tail:
            for draw in list(self.open.values()):
                if room <= 0:
                    break
                room -= self._queue(draw, min(room, self.rule.speculate))

    def _queue(self, draw: Draw, spare: int) -> int:
        needed = len(draw.to_draw(self.rule, 0))
        samples = draw.to_draw(self.rule, spare)
        for s in samples:
            draw.in_flight.add(s)
            self.ready.append((draw, s))
        self.adaptive.speculative += len(samples) - needed
        return len(samples)

    def _send(self) -> None:
        while self.free_workers and self.ready:
            batch = [self.ready.popleft() for _ in range(min(self.backend.batch_size, len(self.ready)))]
            requests = [self._request(d, s) for d, s in batch]
            task = asyncio.ensure_future(self.backend.generate(requests))
            self.running[task] = batch
            self.sent += len(batch)
            for d, s in batch:
                self.by_sample[(d.id, s)] = task
            self.free_workers -= 1

    def _request(self, draw: Draw, s: int) -> Request:
        p = draw.work.prompts[draw.position]
        return Request(p["id"], s, p["domain"], p["problem"], p["answer"], self.cfg.request_seed(p["id"], s))

    async def _load(self, index: int, chunk: inputs_mod.Chunk, file_index: int) -> None:
        work = await asyncio.to_thread(load_chunk, index, chunk, file_index, self.cfg, self.root, self.first)
        work.todo, work.pending = [], 0  # the fixed-N request list: not used here
        draws = [Draw(work, k) for k in range(len(work.prompts))]
        if self.watching:
            for p in work.prompts:  # as `distill filter` finds it
                self.targets[p["id"]] = p["language"] or language.detect(p["problem"])
        by_id = {d.id: d for d in draws}
        unjudged = [(key, row) for key, row in work.done.items() if "verdict" not in row and key[0] in by_id]
        if unjudged:  # rows a finished shard handed back to redo its failed requests: judged once more
            prompts = {d.id: d.work.prompts[d.position] for d in draws}
            found = await asyncio.to_thread(
                judge, [trace_row(prompts[i], s, row, self.cfg, "") for (i, s), row in unjudged], self.preset
            )
            for (_, row), verdict in zip(unjudged, found, strict=True):
                row["verdict"] = verdict
        for (pid, s), row in work.done.items():
            if pid in by_id and "verdict" in row:
                by_id[pid].judged[s] = row
        self.draws[index] = draws
        self.unfinished[index] = 0
        for d in draws:
            if not d.settle(self.rule) or not d.finished:
                self.unfinished[index] += 1
                self.fresh.append(d)
        if self.unfinished[index] == 0:
            self.commits.append(asyncio.create_task(self._commit(work)))

    def _absorb(self, arrived: list[tuple[Draw, int, dict[str, Any]]], found: list[dict[str, Any]]) -> None:
        good = [(d, s) for d, s, res in arrived if "error" not in res]
        verdict_of = {(d.id, s): v for (d, s), v in zip(good, found, strict=True)}
        tokens = 0
        for d, s, res in arrived:
            d.in_flight.discard(s)
            if "error" in res:
                d.failed[s] = res["error"]
                d.work.failures[(d.id, s)] = res["error"]
                self.totals.failed += 1
            else:
                row = {"id": d.id, "sample": s, **res, "verdict": verdict_of[(d.id, s)]}
                d.work.journal.append(row)
                d.judged[s] = row
                self.totals.prompt_tokens += res.get("prompt_tokens") or 0
                self.totals.completion_tokens += res.get("completion_tokens") or 0
                tokens += res.get("completion_tokens") or 0
            self.totals.requests += 1
        finished = 0
        for d in {id(d): d for d, _, _ in arrived}.values():
            if d.settle(self.rule):
                if d.in_flight:
                    self._cancel(d)
            else:
                self._queue(d, 0)  # what the rule surely draws next goes ahead of new prompts
            finished += self._maybe_finish(d)
        stats = self.backend.stats
        self.progress.advance(
            len(arrived), tokens, stats.errors if stats else None, stats.rate_wait_s if stats else 0.0, finished
        )

    def _cancel(self, draw: Draw) -> None:
        """A decided prompt's samples in flight: cancelled where a request has its own connection."""
        if self.backend.batch_size != 1:
            return  # a batch of several prompts' requests cannot be cut: what comes back goes to _removed/
        for s in sorted(draw.in_flight):
            task = self.by_sample.get((draw.id, s))
            if task is not None and not task.done():
                task.cancel()
                self.adaptive.cancelled += 1

    def _maybe_finish(self, draw: Draw) -> int:
        if not draw.finished or draw.id not in self.open:
            return 0
        del self.open[draw.id]
        index = draw.work.index
        self.unfinished[index] -= 1
        if self.unfinished[index] == 0:
            self.commits.append(asyncio.create_task(self._commit(draw.work)))
        return 1

    async def _commit(self, work: ChunkWork) -> None:
        draws = self.draws.pop(work.index)
        entry = await asyncio.to_thread(commit_adaptive, work, draws, self.cfg, self.rule, self.preset, self.root)
        self.ds.record_shard(entry)
        work.journal.remove()


def commit_adaptive(
    work: ChunkWork, draws: list[Draw], cfg: TeacherConfig, rule: Rule, preset: dict[str, Any], root: Path
) -> dict[str, Any]:
    """Chunk k's shard: each prompt's samples below its T in prompt then sample order, their verdicts in
    `_verdicts/`, samples drawn beyond T in `_removed/`, failed requests as rejects (retried by the next run)."""
    writer = ShardWriter(root, work.index, TRACE_SCHEMA)
    verdict_schema = judged_table([], preset).schema
    params = json.dumps(cfg.params(), sort_keys=True)
    path = work.chunk.file.path
    counts: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    judged: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []

    def flush(final: bool = False) -> None:
        nonlocal rows, judged, removed
        if rows and (final or len(rows) >= WRITE_BATCH):
            writer.write(pa.Table.from_pylist(rows, schema=TRACE_SCHEMA))
            writer.side("verdicts", pa.Table.from_pylist(judged, schema=verdict_schema))
            rows, judged = [], []
        if removed and (final or len(removed) >= WRITE_BATCH):
            schema = verdict_schema.append(pa.field("reason", pa.string()))
            writer.remove(pa.Table.from_pylist(removed, schema=schema))
            removed = []

    try:
        for row_no, prompt, draw in zip(work.row_numbers, work.prompts, draws, strict=True):
            limit = draw.decided if draw.decided is not None else rule.max_samples
            passing, seen = 0, set()
            for s in sorted(draw.judged):
                res = draw.judged[s]
                trace = trace_row(prompt, s, res, cfg, params)
                verdict = {**trace, **res["verdict"]}
                if s >= limit:
                    removed.append({**verdict, "reason": f"beyond_keep: {rule.keep} passed by sample {limit - 1}"})
                    counts["removed"] += 1
                    counts["removed_completion_tokens"] += res.get("completion_tokens") or 0
                    continue
                rows.append(trace)
                judged.append(verdict)
                if res.get("finish_reason") == "abort":
                    counts["stopped"] += 1
                    counts["stopped_completion_tokens"] += res.get("completion_tokens") or 0
                passing += counts_as_pass(res, seen)
                counts["prompt_tokens"] += res.get("prompt_tokens") or 0
                counts["completion_tokens"] += res.get("completion_tokens") or 0
                flush()
            for s, error in sorted(draw.failed.items()):  # failed samples are never judged: no row of theirs
                reject_sample(writer, path, row_no, prompt, s, error)
            counts["kept"] += min(passing, rule.keep)
            counts["prompts_full"] += passing >= rule.keep
            counts["prompts_covered"] += passing > 0
        flush(final=True)
        return commit_shard(
            writer,
            work,
            prompt_tokens=counts["prompt_tokens"],
            completion_tokens=counts["completion_tokens"],
            adaptive={k: counts[k] for k in ADAPTIVE_COUNTS},
        )
    except BaseException:
        writer.abort()
        raise


def adaptive_stats(ds: DatasetWriter, rule: Rule, preset_name: str | None, totals: AdaptiveTotals) -> dict[str, Any]:
    """The run's adaptive counts, summed over the manifest's shards (right across any number of resumes)."""
    shards = [s.get("adaptive", {}) for s in ds.manifest.shards.values()]
    out: dict[str, Any] = {"preset": preset_name, **rule.describe(), "speculate": rule.speculate}
    for k in ADAPTIVE_COUNTS:
        out[k] = sum(s.get(k, 0) for s in shards)
    spent = sum(s.get("completion_tokens", 0) for s in ds.manifest.shards.values()) + out["removed_completion_tokens"]
    out["completion_tokens_per_kept"] = round(spent / out["kept"], 1) if out["kept"] else None
    out["this_run"] = {"cancelled": totals.cancelled, "speculative": totals.speculative}
    if totals.engine_aborted is not None:
        out["this_run"]["engine_aborted"] = totals.engine_aborted
    return out


def adaptive_lines(a: dict[str, Any], prompts: int) -> list[str]:
    """What judging in flight gave: prompts with K passing, with one, the kept traces and what they cost."""
    tokens = a.get("completion_tokens_per_kept")
    lines = [
        f"judged as they arrived (preset {a['preset']}): {a['prompts_full']:,} of {prompts:,} prompts have "
        f"{a['keep']} passing, {a['prompts_covered']:,} at least one; {a['kept']:,} kept traces"
        + (f", {tokens:,.0f} completion tokens per kept trace" if tokens else "")
    ]
    run = a.get("this_run", {})
    if a.get("stopped"):
        lines.append(f"stopped in flight, a rule already failed (stream): {a['stopped']:,} traces, "
                     f"{a['stopped_completion_tokens']:,} completion tokens until then")  # fmt: skip
    if a["removed"] or run.get("cancelled"):
        lines.append(
            f"drawn beyond a decided prompt: {a['removed']:,} answered (in _removed/, "
            f"{a['removed_completion_tokens']:,} completion tokens), {run.get('cancelled', 0):,} cancelled in flight"
        )
    return lines


@dataclass(frozen=True)
class Expected:
    """One prompt of pass rate p, in expectation: samples drawn, passing among them, kept (at most `keep`), and the
    chances it ends with one kept trace and with `keep`."""

    drawn: float
    passing: float
    kept: float
    covered: float
    full: float


def expected(p: float, keep: int, cap: int, fixed: bool = False) -> Expected:
    """What the rule (draw until `keep` pass, at most `cap`) gives for pass rate p; `fixed`: `cap` samples each,
    then `keep` of the passing ones selected."""
    binom = [comb(cap, j) * p**j * (1 - p) ** (cap - j) for j in range(cap + 1)]
    kept = sum(min(keep, j) * b for j, b in enumerate(binom))
    if fixed:
        drawn, passing = float(cap), cap * p
    else:  # sample t is drawn while samples 0..t-1 hold fewer than `keep` passes
        drawn = sum(sum(comb(t, j) * p**j * (1 - p) ** (t - j) for j in range(keep)) for t in range(cap))
        passing = kept
    return Expected(drawn, passing, kept, 1 - (1 - p) ** cap, sum(b for j, b in enumerate(binom) if j >= keep))


def rate_mix(spec: Any, ctx: Any, default: float) -> tuple[list[tuple[float, float]], str]:
    """Pass rates as (rate, weight) pairs, and where they came from: a pilot run's verdicts (the share of each
    prompt's samples kept), a `distill difficulty` output (its pass_rate), {alpha, beta} of a Beta, or `default`
    for every prompt."""
    if spec is None:
        return [(default, 1.0)], f"plan.keep_rate {default:.0%} for every prompt"
    if not isinstance(spec, str):  # Beta(alpha, beta), on a grid of 200 cells
        cells = [(k + 0.5) / 200 for k in range(200)]
        weights = [x ** (spec.alpha - 1) * (1 - x) ** (spec.beta - 1) for x in cells]
        return list(zip(cells, weights, strict=True)), f"pass rates ~ Beta({spec.alpha:g}, {spec.beta:g})"
    from distill.store import DatasetReader

    path = ctx.path(spec)
    reader = DatasetReader(path)  # one line when it is not a finished dataset directory
    names = reader.schema.names
    if "keep" in names:
        counts: dict[str, list[int]] = {}
        for b in reader.iter_batches(columns=["id", "keep"], batch_size=65_536):
            for pid, keep in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True):
                c = counts.setdefault(pid, [0, 0])
                c[0] += 1
                c[1] += bool(keep)
        rates = [kept / n for n, kept in counts.values()]
    elif "pass_rate" in names:
        rates = [
            r for b in reader.iter_batches(columns=["pass_rate"]) for r in b.column(0).to_pylist() if r is not None
        ]
    else:
        raise UserError(f"plan.pass_rates {spec}: neither verdicts (a `keep` column) nor `distill difficulty` output "
                        "(a `pass_rate` column); give a pilot run's filter output")  # fmt: skip
    if not rates:
        raise UserError(f"plan.pass_rates {spec}: no prompt with a pass rate in it")
    return [(r, 1.0) for r in rates], f"pass rates of the {len(rates):,} prompts of {spec}"


def mix_expected(mix: list[tuple[float, float]], keep: int, cap: int, fixed: bool = False) -> Expected:
    """`expected` averaged over a mix of pass rates (per prompt)."""
    total = sum(w for _, w in mix)
    parts = [(expected(p, keep, cap, fixed), w / total) for p, w in mix]
    return Expected(*(sum(getattr(e, f) * w for e, w in parts) for f in ("drawn", "passing", "kept", "covered",
                                                                        "full")))  # fmt: skip


def check_rule(keep: int | None, max_samples: int | None, cfg: TeacherConfig, speculate: int) -> Rule:
    cap = max_samples or cfg.samples
    if keep is None:
        raise UserError("--preset needs --keep: the passing samples a prompt needs")
    if keep > cap:
        raise UserError(f"--keep {keep} is more than the {cap} samples a prompt may cost; raise --max-samples")
    return Rule(keep, cap, speculate)
