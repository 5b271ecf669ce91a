"""`distill mix`: the SFT set, rows from each source by quota, as chat messages, counted and shuffled.

An SFT row is `id`, `source` (the mix source's name), `domain`, `messages` ([user, assistant]) and
`num_tokens` (tokens of the messages' text with the named tokenizer). The assistant turn of a trace is
`<think>\\n{reasoning}\\n</think>\\n\\n{content}`; a row without reasoning gets an empty think block or
none (`non_reasoning`). Rows that already have `messages` are taken as they are.

Which rows: per source, a seeded sample of `quota` rows without repetition; a source with fewer rows
gives all of them and the report says so, and only `upsample: true` repeats rows (sampled) to fill the
quota. Order: one seeded permutation of the whole mix. Same config, same inputs -> byte-identical shards.

Two passes keep memory bounded: each chosen row is rendered and counted once and appended to the
bucket of its output shard (`DIR/.work/`); then each bucket is sorted into its shard (resumable).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import RowError
from distill.executor import check_executor, executor_map
from distill.filters.readability import split_think
from distill.mix.config import MixConfig
from distill.progress import StageProgress
from distill.records import MESSAGE, RECORDS, coerce_row, stable_id
from distill.sources import inputs, trace_layouts
from distill.sources.mapping import TraceMapping
from distill.stages import Context, Flow, PlanContext
from distill.store import WORK, DatasetWriter, ShardWriter, StageOutput, StageResult, atomic_write_bytes, crash_point
from distill.tokenizer import count_tokens, load_counter, load_tokenizer, save_counter

SFT = RECORDS["sft"]
_WORK_SCHEMA = pa.schema([*SFT.schema, pa.field("_pos", pa.int64())])


def assistant_text(reasoning: str | None, content: str, non_reasoning: str) -> str:
    if reasoning and reasoning.strip():
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.strip()}"
    if non_reasoning == "empty_think":
        return f"<think>\n\n</think>\n\n{content.strip()}"
    return content.strip()


_FIELDS = ("id", "sample", "problem", "prompt", "reasoning", "content", "domain", "messages")


@dataclass
class SFTColumns:
    """Rows rendered as SFT rows, column by column: `messages` flattened (row k's turns are
    `roles[offsets[k]:offsets[k+1]]`), and the text whose tokens are counted."""

    ids: list[str]
    domains: list[str]
    roles: list[str]
    contents: list[str]
    offsets: list[int]
    texts: list[str]
    kept: list[int]  # positions of the rendered rows in the input columns

    def messages(self) -> pa.Array:
        return pa.ListArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.StructArray.from_arrays(
                [pa.array(self.roles, pa.string()), pa.array(self.contents, pa.large_string())],
                fields=list(MESSAGE),
            ),
        ).cast(pa.list_(MESSAGE))


def to_sft(columns: dict[str, list[Any]], source: str, non_reasoning: str) -> tuple[SFTColumns, list[tuple[int, str]]]:
    """Source rows (the `_FIELDS` columns as Python values) as SFT rows (`num_tokens` still to count),
    and (position, error) for each row that cannot be one.

    A pure batch function over columns: a row-at-a-time version building dicts spent more time than
    the Rust tokenizer in a mix of short rows.
    """
    out = SFTColumns([], [], [], [], [0], [], [])
    errors: list[tuple[int, str]] = []
    rows = zip(*(columns[c] for c in _FIELDS), strict=True)
    for k, (ident, sample, problem, prompt, reasoning, content, domain, messages) in enumerate(rows):
        if messages is not None:
            try:
                turns = coerce_row({"id": ident or "", "messages": messages}, SFT, source)["messages"]
            except RowError as e:
                errors.append((k, str(e)))
                continue
            text = "\n".join(m["content"] for m in turns)
            out.ids.append(ident or stable_id(text))
            out.roles.extend(m["role"] for m in turns)
            out.contents.extend(m["content"] for m in turns)
        else:
            if not isinstance(problem, str) or not isinstance(content, str):
                key = "problem" if not isinstance(problem, str) else "content"
                errors.append((k, f"missing_field: column '{key}' is missing or not text (nor is there `messages`)"))
                continue
            # The user turn the teacher answered (problem + its instruction, e.g. R1's "put your final answer
            # within \\boxed{}"), so the student is trained on the prompt it will be evaluated with.
            user = prompt if isinstance(prompt, str) and prompt else problem
            answer = assistant_text(reasoning if isinstance(reasoning, str) else None, content, non_reasoning)
            ident = ident or stable_id(problem)
            out.ids.append(ident if sample is None else f"{ident}:{sample}")
            out.roles += ("user", "assistant")
            out.contents += (user, answer)
            text = f"{user}\n{answer}"
        out.offsets.append(len(out.roles))
        out.domains.append(domain or "general")
        out.texts.append(text)
        out.kept.append(k)
    return out, errors


def _choose(n: int, quota: int, upsample: bool, rng: np.random.Generator) -> np.ndarray:
    """Sorted row numbers (with repeats only when upsampling) of a source with `n` rows."""
    if n >= quota:
        return np.sort(rng.choice(n, size=quota, replace=False))
    if not upsample or n == 0:
        return np.arange(n)
    return np.sort(np.concatenate([np.arange(n), rng.choice(n, size=quota - n, replace=True)]))


def choose_rows(
    cfg: MixConfig, files: dict[str, list[inputs.InputFile]]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The chosen row numbers of each source and what the report says about them."""
    chosen: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {}
    for k, src in enumerate(cfg.sources):
        available = sum(f.rows for f in files[src.name])
        quota = cfg.quota(src)
        rows = _choose(available, quota, src.upsample, np.random.default_rng([cfg.seed, k]))
        chosen[src.name] = rows
        report[src.name] = {
            "available": available,
            "quota": quota,
            "taken": len(rows),
            "distinct": int(min(available, quota)),
            "short_by": max(0, quota - len(rows)),
            "upsampled": max(0, len(rows) - available),
        }
    return chosen, report


def run(ctx: Context) -> StageResult:
    """A source that names an earlier step of the pipeline reads that step's output."""
    out, base, rows_per_shard, workers = ctx.out, ctx.base, ctx.rows_per_shard, ctx.workers
    overwrite, show_progress, executor = ctx.overwrite, ctx.show_progress, ctx.executor
    steps = {name: str(path.absolute()) for name, path in ctx.steps.items()}  # other paths: relative to ctx.base
    sources = [s.model_copy(update={"path": steps[s.path]}) if s.path in steps else s for s in ctx.options.sources]
    cfg: MixConfig = ctx.options.model_copy(update={"sources": sources})
    check_executor(executor)
    files = {
        s.name: inputs.resolve([str(_resolve(base, s.path))], CHUNK_ROWS, what=f"source {s.name!r}")
        for s in cfg.sources
    }
    layouts = {name: _layouts(fs) for name, fs in files.items()}
    tokenizer_ref = _tokenizer_ref(base, cfg.tokenizer)
    tokenizer = load_tokenizer(tokenizer_ref)  # a bad tokenizer fails here, before any work
    config = {
        "mix": {**cfg.model_dump(), "rows_per_shard": rows_per_shard},
        "tokenizer": getattr(tokenizer, "name_or_path", None),
    }
    all_files = [f.describe() for s in cfg.sources for f in files[s.name]]
    with StageOutput(out, stage="mix", record=SFT, config=config, inputs=all_files, overwrite=overwrite) as o:
        chosen, report = choose_rows(cfg, files)
        if o.complete:
            return o.skipped()
        total = sum(len(v) for v in chosen.values())
        positions = np.random.default_rng(cfg.seed).permutation(total)
        buckets = -(-total // rows_per_shard)
        work = out / WORK
        workers = workers or os.cpu_count() or 1
        resumed = None
        if not (work / "pass1.done").exists():  # chunks rendered before a crash are not rendered again
            resumed = _pass1(cfg, files, chosen, positions, work, tokenizer, workers, show_progress, executor,
                             rows_per_shard, layouts)  # fmt: skip
            atomic_write_bytes(work / "pass1.done", b"")
        o.writer.set_plan(buckets)
        todo = [WriteTask(k, str(out), str(work)) for k in range(buckets) if k not in o.opened.done]
        done_rows = sum(e.get("rows_in", 0) for k, e in o.opened.manifest.shards.items() if k in o.opened.done)
        with StageProgress("mix: write", total, done_rows, enabled=show_progress) as progress:
            for entry in executor_map(_pass2, todo, workers, executor):
                o.writer.record_shard(entry)
                progress.advance(entry["rows_in"])
        stats = {"sources": report, **_token_stats(out, o.writer), **({"render": resumed} if resumed else {})}
        return o.finish({"mix": stats})


def _tokenizer_ref(base: Path, name: str | None) -> str | None:
    """A local tokenizer folder relative to the mix file, else the name as given (a Hub name)."""
    if name is None:
        return None
    local = _resolve(base, name)
    return str(local) if local.exists() else name


def _resolve(base: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else base / path


CHUNK_ROWS = 10_000  # a source is read this many rows at a time


@dataclass(frozen=True)
class RenderTask:
    """One chunk of one source: its chosen rows, their places in the mix, how to render and count them."""

    task_id: int
    source: str
    chunk: inputs.Chunk
    rows: np.ndarray  # chosen row numbers in this chunk, in order, repeats kept
    positions: np.ndarray  # their positions in the shuffled mix
    counter: str  # the tokenizer for counting, saved by `save_counter`
    non_reasoning: str
    rows_per_shard: int
    work: str
    tokenizer_threads: bool  # False in pool workers: the processes are the parallelism
    layout: TraceMapping | None = None  # a public trace file's layout (OpenR1, a plain dump...): rows become traces


def _pass1(
    cfg: MixConfig,
    files: dict[str, list[inputs.InputFile]],
    chosen: dict[str, np.ndarray],
    positions: np.ndarray,
    work: Path,
    tokenizer: Any,
    workers: int,
    show_progress: bool,
    executor: str = "local",
    rows_per_shard: int = 10_000,
    layouts: dict[str, dict[str, TraceMapping | None]] | None = None,
) -> dict[str, int]:
    """Render and count every chosen row once, chunk by chunk in parallel; each chunk writes its rows to
    the buckets of their output shards (`work/bucket-K/part-T.parquet`), then its marker
    (`work/chunks/T.json`, with its rejects): a rerun renders only the chunks without one.

    A chosen row that cannot be an SFT row (malformed, missing fields) goes to the rejects, kept in
    `work/rejects.json` until pass 2 writes them beside shard 0; its position in the mix stays empty.
    Returns how many chunks there were and how many a crashed run had already rendered.
    """
    counter = str(save_counter(tokenizer, work / "tokenizer.json"))
    tasks: list[RenderTask] = []
    next_pos = 0
    for src in cfg.sources:
        rows = chosen[src.name]
        offset = 0
        for f in files[src.name]:
            mine = rows[(rows >= offset) & (rows < offset + f.rows)] - offset
            offset += f.rows
            for chunk in inputs.plan([f], CHUNK_ROWS):
                sel = mine[(mine >= chunk.start) & (mine < chunk.stop)]
                if len(sel):
                    tasks.append(RenderTask(
                        len(tasks), src.name, chunk, sel, positions[next_pos : next_pos + len(sel)], counter,
                        cfg.non_reasoning, rows_per_shard, str(work), workers <= 1 and executor == "local",
                        (layouts or {}).get(src.name, {}).get(f.path),
                    ))  # fmt: skip
                    next_pos += len(sel)
    rejects: list[dict[str, Any]] = []
    todo = []
    for t in tasks:
        marker = _marker(t)
        if marker.exists():
            rejects.extend(json.loads(marker.read_text()))
        else:
            todo.append(t)
    done_rows = sum(len(t.rows) for t in tasks) - sum(len(t.rows) for t in todo)
    with StageProgress("mix: render + count", len(positions), done_rows, enabled=show_progress) as progress:
        for done, task_rejects in executor_map(_render, todo, workers, executor):  # in the order tasks finish
            rejects.extend(task_rejects)
            progress.advance(done)
    rejects.sort(key=lambda r: (r["input"], r["row"]))
    atomic_write_bytes(work / "rejects.json", json.dumps(rejects).encode())
    return {"chunks": len(tasks), "resumed": len(tasks) - len(todo)}


def _marker(task: RenderTask) -> Path:
    return Path(task.work) / "chunks" / f"{task.task_id:06d}.json"


def _render(task: RenderTask) -> tuple[int, list[dict[str, Any]]]:
    """A pool worker's part of pass 1; returns how many chosen rows it handled and which it rejected."""
    if not task.tokenizer_threads:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = load_counter(task.counter)
    path = task.chunk.file.path
    if task.layout is not None:
        read, columns, unread = _traces(task)
    else:
        read, columns, unread = inputs.take_columns(task.chunk, task.rows, _FIELDS)
    rejects = [{"input": path, "row": r.row, "error": r.error, "raw": _text(r.raw)} for r in unread]
    sft, errors = to_sft(columns, task.source, task.non_reasoning)
    numbers = task.rows[read]
    whole = inputs.rows_at(task.chunk, [int(numbers[k]) for k, _ in errors]) if errors else {}
    for k, error in errors:
        rejects.append({"input": path, "row": int(numbers[k]), "error": error, "raw": _json(whole[int(numbers[k])])})
    # A row that could not be read or rendered leaves its place in the mix empty.
    positions = task.positions[read][sft.kept]
    table = pa.table(
        {
            "id": pa.array(sft.ids, pa.string()),
            "source": pa.array([task.source] * len(sft.ids), pa.string()),
            "domain": pa.array(sft.domains, pa.string()),
            "messages": sft.messages(),
            "num_tokens": pa.array(count_tokens(tokenizer, sft.texts), pa.int64()),
            "_pos": pa.array(positions, pa.int64()),
        },
        schema=_WORK_SCHEMA,
    )
    # Rows grouped by output shard (a stable sort keeps their order), then one part file per shard.
    buckets = positions // task.rows_per_shard
    order = np.argsort(buckets, kind="stable")
    table, buckets = table.take(pa.array(order)), buckets[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]]) if len(buckets) else np.zeros(0, np.int64)
    for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(buckets)], strict=True):
        folder = Path(task.work) / f"bucket-{int(buckets[start]):05d}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".part-{task.task_id:06d}.tmp"
        pq.write_table(table.slice(start, stop - start), tmp, compression="zstd", compression_level=1)
        tmp.replace(folder / f"part-{task.task_id:06d}.parquet")
    _marker(task).parent.mkdir(exist_ok=True)
    atomic_write_bytes(_marker(task), json.dumps(rejects).encode())  # after every part: the chunk is done
    crash_point("mix_chunk_rendered")
    return len(task.rows), rejects


def _layouts(files: list[inputs.InputFile]) -> dict[str, TraceMapping | None]:
    """Per file of a source, the trace layout that reads it, where mix cannot take its rows as they are (rows with
    `messages`, or traces with `problem` and `content`): a public trace set given as a source (OpenR1-Math, a plain
    dump, s1K...). A file in no known layout stops with the one line that names its columns."""
    out: dict[str, TraceMapping | None] = {}
    for f in files:
        columns, _ = inputs.sample_rows(f)
        if f.record is not None or "messages" in columns or {"problem", "content"} <= set(columns):
            out[f.path] = None
            continue
        ((_, mapping),) = inputs.layouts_of([f], [], table=trace_layouts.TRACES, what="source")
        out[f.path] = mapping
    return out


def _traces(task: RenderTask) -> tuple[list[int], dict[str, list[Any]], list[inputs.Reject]]:
    """`take_columns` for a file in a public trace layout: each chosen row as one trace (of a row that holds several,
    the first its publisher labelled correct, else the first), its think block split as the filter splits it."""
    assert task.layout is not None
    numbers = task.rows.tolist()
    try:
        whole = inputs.rows_at(task.chunk, sorted(set(numbers)))
    except RowError:  # a malformed line among them: read them one by one, that line becomes a reject
        whole = {}
        for n in set(numbers):
            with contextlib.suppress(RowError):
                whole.update(inputs.rows_at(task.chunk, [n]))
    read: list[int] = []
    values: dict[str, list[Any]] = {c: [] for c in _FIELDS}
    rejects: list[inputs.Reject] = []
    for i, n in enumerate(numbers):
        if n not in whole:
            rejects.append(inputs.Reject(n, "malformed_json: the line is not a JSON object", ""))
            continue
        try:
            found = trace_layouts.to_traces(whole[n], task.layout, task.chunk.file.source, n)
        except RowError as e:
            rejects.append(inputs.Reject(n, str(e), _json(whole[n])))
            continue
        trace = next((t for t in found if t["publisher_correct"]), found[0])
        reasoning, answer, _ = split_think(trace["reasoning"], trace["content"])
        trace = {**trace, "reasoning": reasoning, "content": answer, "messages": None}
        read.append(i)
        for c in _FIELDS:
            values[c].append(trace.get(c))
    return read, values, rejects


def _json(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


def _text(raw: str | bytes | None) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw or ""


@dataclass(frozen=True)
class WriteTask:
    """Pass 2 for one output shard: its bucket's parts, sorted into place."""

    index: int
    out: str
    work: str


def _pass2(task: WriteTask) -> dict[str, Any]:
    """A pool worker's part of pass 2: writes and commits shard `index`; the caller records it."""
    work = Path(task.work)
    parts = sorted((work / f"bucket-{task.index:05d}").glob("part-*.parquet"))
    table = (  # no part: every row of this shard was rejected
        pa.concat_tables([pq.read_table(p) for p in parts]) if parts else _WORK_SCHEMA.empty_table()
    )
    table = table.sort_by("_pos").drop_columns(["_pos"])
    sh = ShardWriter(Path(task.out), task.index, SFT.schema)
    try:
        sh.write(table.cast(SFT.schema))
        rejected = json.loads((work / "rejects.json").read_text()) if task.index == 0 else []
        for r in rejected:
            sh.reject(r["input"], r["row"], r["error"], r["raw"])
        return sh.commit(rows_in=table.num_rows + len(rejected), input={"bucket": task.index})
    except BaseException:
        sh.abort()
        raise


def _token_stats(out: Path, ds: DatasetWriter) -> dict[str, Any]:
    """Token-length statistics and per-domain / per-source counts of what was written."""
    tokens: list[np.ndarray] = []
    domains: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for i in sorted(ds.manifest.shards):
        t = pq.read_table(out / ds.manifest.shards[i]["file"], columns=["num_tokens", "domain", "source"])
        tokens.append(t.column("num_tokens").to_numpy())
        domains.update(t.column("domain").to_pylist())
        sources.update(t.column("source").to_pylist())
    n = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    pct = {f"p{q}": int(np.percentile(n, q)) for q in (50, 90, 99)} if len(n) else {}
    return {
        "rows": len(n),
        "tokens": {
            "total": int(n.sum()),
            "mean": float(n.mean()) if len(n) else 0.0,
            "max": int(n.max()) if len(n) else 0,
            **pct,
        },
        "by_domain": dict(domains.most_common()),
        "by_source": dict(sources.most_common()),
    }


def plan(p: PlanContext) -> Flow:
    cfg: MixConfig = p.options
    rows, toks, assumed = 0.0, 0.0, []
    for source in cfg.sources:
        flow = p.flows.get(source.path)
        available = flow.rows if flow else inputs.count_rows([str(p.ctx.path(source.path))])
        if available is None:  # not there yet: assume it fills its quota
            available = cfg.quota(source)
            assumed.append(source.name)
        take = cfg.quota(source) if source.upsample else min(cfg.quota(source), available)
        rows += take
        toks += take * (flow.tokens_per_row if flow else p.assumptions.mean_prompt_tokens * 2)
    note = f"{rows:,.0f} SFT rows, {toks / 1e9:,.2f}B tokens"
    if assumed:
        note += f" ({', '.join(assumed)} not found: assumed to fill their quotas)"
    return Flow(rows, toks / rows if rows else 0, note)


def warnings(report: dict[str, Any]) -> list[str]:
    """A line for each source short of its quota (`stats.mix.sources`)."""
    return [
        f"source {name!r}: {r['available']:,} rows for a quota of {r['quota']:,}; "
        + ("took all and repeated sampled rows to fill it (upsample)" if r["upsampled"] else "took all of them")
        for name, r in report.items()
        if r["available"] < r["quota"]
    ]


def details(result: StageResult, ctx: Context) -> None:
    m = result.manifest.stats["mix"]
    for w in warnings(m["sources"]):
        print(f"warning: {w}", file=sys.stderr)
    for name, r in m["sources"].items():
        print(f"  {name:<20} {r['taken']:>10,} of quota {r['quota']:>10,} ({r['available']:,} available)",
              file=sys.stderr)  # fmt: skip
    t = m["tokens"]
    if m["rows"]:
        summary = f"mean {t['mean']:,.0f}, p50 {t['p50']:,}, p99 {t['p99']:,}, max {t['max']:,}"
        print(f"  tokens: {t['total']:,} in all; {summary}", file=sys.stderr)
