"""`distill filter`: one verdict row per trace, with the check columns, `keep` and `reject_reason`.

Checks run cheapest first, and a trace's `reject_reason` is the first that fails: readability
(truncated, unclosed_think, empty, too_long, repetition, long_paragraph, code_block), then language
(language_mismatch, language_mix), then correctness by domain (no_answer, wrong_answer, verify_timeout,
unverifiable, code_failed, code_timeout). A check that was not reached is null in its column, so
nothing expensive is spent on a trace already rejected. `reject_detail` says what was seen.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import sys
import time
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from distill import language
from distill.config import load_config
from distill.executor import MapStage, check_executor, run_map_stage
from distill.filters import early, langcheck, readability, sandbox
from distill.filters import judge as judge_mod
from distill.filters.answers import choice_letter, final_boxed
from distill.filters.config import FilterPreset, JudgeConfig
from distill.filters.judge import JudgeItem
from distill.filters.mathcheck import BAD_GOLD, CORRECT, TIMEOUT, MathChecker
from distill.filters.sandbox import Limits, last_code_block, run_tests
from distill.sources import inputs, layouts, trace_layouts
from distill.sources.mapping import TraceMapping
from distill.stages import Context, Flow, PlanContext
from distill.store import DatasetReader, StageResult

ABORTED = "abort"  # the finish_reason of a trace `generate --preset` stopped in flight (distill/filters/early.py)
_GOLD_LETTER = re.compile(r"^\s*\(?\s*([A-Za-z])\s*\)?\s*\.?\s*$")
_checkers: dict[float, MathChecker] = {}


def _math_checker(timeout_s: float) -> MathChecker:
    """One verifier child per worker process, reused across batches."""
    if timeout_s not in _checkers:
        _checkers[timeout_s] = MathChecker(timeout_s=timeout_s)
        atexit.register(_checkers[timeout_s].close)
    return _checkers[timeout_s]


@cache
def _preset(blob: str) -> FilterPreset:
    return FilterPreset.model_validate_json(blob)


def verdicts(batch: pa.RecordBatch, preset: dict[str, Any]) -> pa.Table:
    cfg = _preset(json.dumps(preset, sort_keys=True))
    rows = batch.to_pylist()
    n = len(rows)
    readable: list[bool | None] = [None] * n
    language_ok: list[bool | None] = [None] * n
    correct: list[bool | None] = [None] * n
    sandboxed: list[str | None] = [None] * n  # code rows: the isolation their tests ran in
    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    checker: list[str | None] = [None] * n  # what decided `correct`: math-verify, letter, tests, judge
    judge = cfg.judge
    to_judge: list[int] = []  # rows the LLM judge decides (its domains; with on_unverifiable, the undecided)
    reasonings = [r["reasoning"] for r in rows]
    contents = [r["content"] for r in rows]
    math_items: list[tuple[int, str, list[str]]] = []
    limits = Limits(**cfg.correctness.code.model_dump())

    for i, r in enumerate(rows):
        if r["finish_reason"] == ABORTED:  # stopped in flight by `generate --preset`: the rules it was stopped by
            target = r["language"] or language.detect(r["problem"])
            found = early.failed_already(r["reasoning"] or r["content"], r["domain"], target, cfg, _max_tokens(r))
            reason[i], detail[i] = found or ("truncated", "stopped before it finished")
            readable[i] = False if reason[i] in early.READABILITY_CODES else readable[i]
            language_ok[i] = False if reason[i] == "language_mix" else None
            continue
        code, reasoning, answer = readability.check(
            r["reasoning"], r["content"], r["finish_reason"], r["completion_tokens"], r["domain"], cfg.readability
        )
        reasonings[i], contents[i] = reasoning, answer  # inline <think> tags are split here
        if code in ("truncated", "unclosed_think"):
            # Only the text after </think> is an answer; a block that never closed has none, even when
            # readability is off (evaluation): a tentative \boxed{} inside the reasoning must not count.
            answer = ""
        if cfg.readability.enabled:
            readable[i] = code is None
            if code:
                reason[i] = code
                continue
        if cfg.language.enabled:
            target = r["language"] or language.detect(r["problem"])
            lcode, seen = langcheck.check(reasoning, answer, target, cfg.language)
            language_ok[i] = lcode is None
            if lcode:
                reason[i], detail[i] = lcode, seen
                continue
        if not cfg.correctness.enabled:
            continue
        gold = _gold(r)
        if judge and gold and r["domain"] in judge.domains:
            to_judge.append(i)  # the judge decides this domain's rows: no rule check
            continue
        if r["domain"] == "general":
            continue  # no verifier: the row stands on readability and language
        if not gold:
            if cfg.correctness.require_gold:
                reason[i], detail[i] = "unverifiable", "no answer or tests to check against"
            continue
        if r["domain"] == "math":
            candidates = final_boxed(answer)
            checker[i] = "math-verify"
            if not candidates:
                correct[i], reason[i], detail[i] = False, "no_answer", "no \\boxed{} after </think>"
            else:
                math_items.append((i, gold, candidates))
        elif r["domain"] == "science":
            checker[i] = "letter"
            _check_choice(i, r, answer, gold, correct, reason, detail)
        elif r["domain"] == "code":
            checker[i] = "tests"
            block = last_code_block(answer)
            if block is None:
                correct[i], reason[i], detail[i] = False, "no_answer", "no fenced code block after </think>"
                continue
            outcome = run_tests(block, gold, limits)
            sandboxed[i] = limits.sandbox
            correct[i] = outcome.passed
            reason[i], detail[i] = outcome.reason, outcome.detail or None

    if math_items:
        results = _math_checker(cfg.correctness.math_timeout_s).check([(g, c) for _, g, c in math_items])
        for (i, gold, candidates), result in zip(math_items, results, strict=True):
            correct[i] = result == CORRECT if result in (CORRECT, "wrong") else None
            if result == TIMEOUT:
                reason[i], detail[i] = "verify_timeout", f"math-verify ran past {cfg.correctness.math_timeout_s:g}s"
            elif result == BAD_GOLD:
                reason[i], detail[i] = "unverifiable", f"the gold answer {gold[:80]!r} does not parse"
            elif result != CORRECT:
                reason[i], detail[i] = "wrong_answer", f"answered {candidates[0][:80]!r}, expected {gold[:80]!r}"

    if judge is not None:
        if judge.on_unverifiable:
            to_judge += [i for i in range(n) if reason[i] in ("unverifiable", "verify_timeout") and _gold(rows[i])]
        _judge_rows(sorted(to_judge), rows, contents, judge, correct, reason, detail, checker)

    table = pa.Table.from_batches([batch])
    if any(r["reasoning"] is not reasonings[i] for i, r in enumerate(rows)):  # only inline <think> splits
        table = table.set_column(
            table.schema.get_field_index("reasoning"), "reasoning", pa.array(reasonings, pa.large_string())
        )
        table = table.set_column(
            table.schema.get_field_index("content"), "content", pa.array(contents, pa.large_string())
        )
    for name, values, typ in (
        ("correct", correct, pa.bool_()),
        ("readable", readable, pa.bool_()),
        ("language_ok", language_ok, pa.bool_()),
        ("sandbox", sandboxed, pa.string()),
        ("keep", [rr is None for rr in reason], pa.bool_()),
        ("reject_reason", reason, pa.string()),
        ("reject_detail", detail, pa.string()),
        ("checker", checker, pa.string()),
    ):
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array(values, typ))
    return table


def _max_tokens(r: dict[str, Any]) -> int | None:
    """The `max_tokens` the trace was sampled with (its `params`)."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(r["params"] or "{}").get("max_tokens")
    return None


def _gold(r: dict[str, Any]) -> str | None:
    return r["tests"] if r["domain"] == "code" else r["answer"]


def _final_answer(domain: str, content: str) -> str:
    """The answer as the rule checks would take it out of the content; the content itself when there is none."""
    if domain == "math":
        found = final_boxed(content)
        return found[0] if found else content
    if domain == "science":
        return choice_letter(content) or content
    if domain == "code":
        return last_code_block(content) or content
    return content


def _judge_rows(
    idx: list[int], rows: list[dict[str, Any]], contents: list[str], cfg: JudgeConfig,
    correct: list, reason: list, detail: list, checker: list,
) -> None:  # fmt: skip
    items = [JudgeItem(rows[i]["problem"], _gold(rows[i]) or "", _final_answer(rows[i]["domain"], contents[i]),
                       contents[i]) for i in idx]  # fmt: skip
    for i, j in zip(idx, judge_mod.decide(items, cfg) if items else [], strict=True):
        checker[i] = "judge"
        if j.correct is None:
            correct[i], reason[i], detail[i] = None, "unverifiable", j.reply
            continue
        correct[i] = j.correct
        reason[i] = None if j.correct else "wrong_answer"
        detail[i] = f"judge: {j.reply[-judge_mod.REPLY_CHARS :]}"


def _check_choice(i: int, r: dict[str, Any], answer: str, gold: str, correct: list, reason: list, detail: list) -> None:
    m = _GOLD_LETTER.match(gold)
    if not m:
        reason[i], detail[i] = "unverifiable", f"the gold {gold[:40]!r} is not an option letter"
        return
    options = 26
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        options = len(json.loads(json.loads(r["meta"] or "{}").get("choices", "[]"))) or 26
    letter = choice_letter(answer, options)
    if letter is None:
        correct[i], reason[i], detail[i] = False, "no_answer", "no option letter after </think>"
        return
    correct[i] = letter == m.group(1).upper()
    if not correct[i]:
        reason[i], detail[i] = "wrong_answer", f"chose {letter}, expected {m.group(1).upper()}"


def funnel(out: Path) -> dict[str, Any]:
    """Traces in, kept, rejected by reason, by domain: for the manifest and `distill inspect`."""
    by_reason: Counter[str] = Counter()
    by_domain: dict[str, Counter[str]] = {}
    for b in DatasetReader(out, allow_partial=True).iter_batches(
        columns=["domain", "reject_reason"], batch_size=65_536
    ):
        pairs = pc.value_counts(pc.binary_join_element_wise(b.column(0), pc.fill_null(b.column(1), "kept"), "\x1f"))
        for item in pairs.to_pylist():
            domain, why = item["values"].split("\x1f")
            by_reason[why] += item["counts"]
            by_domain.setdefault(domain, Counter())[why] += item["counts"]
    return {
        "traces": sum(by_reason.values()),
        "kept": by_reason.get("kept", 0),
        "by_reason": dict(by_reason.most_common()),
        "by_domain": {d: dict(c.most_common()) for d, c in sorted(by_domain.items())},
    }


def load_preset(path: Path) -> FilterPreset:
    """The preset, its judge's teacher YAML found relative to it and checked before any trace is read."""
    preset = load_config(path, FilterPreset)
    if preset.judge is None:
        return preset
    here = Path(path).parent
    teacher = (here / preset.judge.teacher).resolve()
    judge_mod.check_teacher(str(teacher), f"{path}: judge.teacher ({teacher})")
    update = {"teacher": str(teacher)}
    if preset.judge.cache:
        update["cache"] = str((here / Path(preset.judge.cache).expanduser()).resolve())
    return preset.model_copy(update={"judge": preset.judge.model_copy(update=update)})


def _judge_stats(out: Path, preset: FilterPreset, started: float) -> dict[str, Any]:
    """Rows the judge decided in the output, and what this run asked of it (from the judge's cache file)."""
    if preset.judge is None:
        return {}
    judged = correct = 0
    for b in DatasetReader(out, allow_partial=True).iter_batches(columns=["checker", "correct"], batch_size=65_536):
        mask = pc.equal(b.column(0), "judge")
        judged += pc.sum(mask).as_py() or 0
        correct += pc.sum(pc.and_(mask, pc.fill_null(b.column(1), False))).as_py() or 0
    store = judge_mod.JudgeCache(judge_mod.cache_path(preset.judge))
    try:
        usage = store.usage_since(started)
    finally:
        store.close()
    teacher = judge_mod.check_teacher(preset.judge.teacher, "judge.teacher")
    stats = {"rows": judged, "correct": correct, "model": teacher.model, **usage}
    if teacher.prices is not None:
        stats["cost_usd"] = round(teacher.prices.cost(usage["prompt_tokens"], usage["completion_tokens"]), 4)
    return {"judge": stats}


def _isolation(files: list[inputs.InputFile], preset: FilterPreset, tests_mapped: bool) -> dict[str, Any]:
    """Before anything is read or written: where there are code answers to run, the isolation the preset asks
    for, or the one line that says why it cannot be had here and what to do (`SandboxUnavailable`, exit 2)."""
    if not preset.correctness.enabled:
        return {}
    if not tests_mapped and not inputs.column_has(files, "domain", "code"):
        return {}
    iso = sandbox.require(preset.correctness.code.sandbox)
    return {"sandbox": {"sandbox": iso.sandbox, "isolation": iso.why}}


def _traces_per_row(files: list[inputs.InputFile], found: list[tuple[str, TraceMapping | None]]) -> float:
    """The most traces an input row holds on average, over the files whose layout packs several in a row."""
    most = 1.0
    for f, (_, m) in zip(files, found, strict=True):
        column = m and (m.generations or m.choices)
        if column:
            _, rows = inputs.sample_rows(f)
            sizes = [len(r[column]) for r in rows if isinstance(r.get(column), list)]
            most = max(most, sum(sizes) / len(sizes) if sizes else 1.0)
    return most


def agreement(out: Path) -> dict[str, Any] | None:
    """Our `correct` against the publisher's own label, per domain (None when no row carries one): the counts of
    (ours, theirs) with ours correct / incorrect / undecided (a check before correctness rejected the row, or
    nothing could verify it) and theirs correct / incorrect."""
    cells: dict[str, Counter[str]] = {}
    columns: Counter[str] = Counter()
    reader = DatasetReader(out, allow_partial=True)
    if "publisher_correct" not in reader.schema.names:
        return None
    for b in reader.iter_batches(columns=["domain", "correct", "publisher_correct", "publisher_label"],
                                 batch_size=65_536):  # fmt: skip
        theirs = b.column(2)
        if theirs.null_count == len(theirs):
            continue
        for d, ours, th, label in zip(*(b.column(k).to_pylist() for k in range(4)), strict=True):
            if th is None:
                continue
            o = "undecided" if ours is None else ("correct" if ours else "incorrect")
            cells.setdefault(d, Counter())[f"{o}/{'correct' if th else 'incorrect'}"] += 1
            columns[label] += 1
    if not cells:
        return None
    total = sum(sum(c.values()) for c in cells.values())
    decided = sum(n for c in cells.values() for k, n in c.items() if not k.startswith("undecided"))
    agree = sum(c["correct/correct"] + c["incorrect/incorrect"] for c in cells.values())
    return {
        "labelled": total,
        "decided": decided,
        "agree": agree,
        "disagree": decided - agree,
        "label_columns": dict(columns.most_common()),
        "by_domain": {d: dict(sorted(c.items())) for d, c in sorted(cells.items())},
    }


def agreement_lines(a: dict[str, Any]) -> list[str]:
    """The 2x2 table (ours x theirs, per domain) and the agreement rate, as `distill filter` prints it."""
    share = f"{a['agree'] / a['decided']:.1%}" if a["decided"] else "n/a"
    lines = [
        f"publisher's labels ({', '.join(a['label_columns'])}): {a['labelled']:,} traces labelled; ours agrees on "
        f"{a['agree']:,} of the {a['decided']:,} we decided ({share}), {a['disagree']:,} disagree "
        "(distill inspect DIR --disagreements N)",
        f"  {'domain':<10} {'ours / theirs':<14} {'correct':>9} {'incorrect':>10}",
    ]
    for d, c in a["by_domain"].items():
        for k, ours in enumerate(("correct", "incorrect", "undecided")):
            if ours == "undecided" and not (c.get("undecided/correct") or c.get("undecided/incorrect")):
                continue
            lines.append(f"  {d if k == 0 else '':<10} {ours:<14} {c.get(f'{ours}/correct', 0):>9,} "
                         f"{c.get(f'{ours}/incorrect', 0):>10,}")  # fmt: skip
    return lines


def load(ctx: Context) -> FilterPreset:
    return load_preset(ctx.path(ctx.options.preset))


def run(ctx: Context) -> StageResult:
    out, preset = ctx.out, ctx.settings
    check_executor(ctx.executor)  # a bad --executor is named before any input is read
    files = inputs.resolve(ctx.inputs, ctx.rows_per_shard)
    # an unknown layout: one line, exit 2
    found = inputs.layouts_of(files, ctx.options.sources, table=trace_layouts.TRACES, layout=ctx.options.layout)
    described = [{"path": f.path, "layout": name} for f, (name, _) in zip(files, found, strict=True)]
    # A shard is cut from input rows: where a row holds a list of traces (OpenR1's generations, an API reply's
    # choices), fewer rows make a shard, so shards stay ~rows_per_shard traces and every core gets work.
    rows_per_shard = max(1, round(ctx.rows_per_shard / _traces_per_row(files, found)))
    isolation = _isolation(files, preset, any(m is not None and m.tests for _, m in found))
    options = preset.model_dump()
    if options["judge"] is None:
        del options["judge"]  # a preset without a judge keeps the fingerprint it had before judges existed
    started = time.time()
    stage = MapStage(
        name="filter",
        function="distill.filters.stage:verdicts",
        options={"preset": options},
        input_record="trace",
        output_record="verdict",
        batch_size=256,
        mappings=tuple(m for _, m in found if m is not None),
    )

    def stats() -> dict[str, Any]:
        agreed = agreement(Path(out))
        return {
            "funnel": funnel(Path(out)),
            "preset": preset.name,
            "layouts": described,
            **({"agreement": agreed} if agreed else {}),
            **isolation,
            **_judge_stats(Path(out), preset, started),
        }

    same = rows_per_shard == ctx.rows_per_shard  # the inputs as resolved above, unless shards are cut smaller
    return run_map_stage(stage, ctx, rows_per_shard=rows_per_shard, files=files if same else None, extra_stats=stats)


def plan(p: PlanContext) -> Flow:
    cfg, src = p.ctx.settings, p.upstream
    checks = (cfg.correctness.enabled, cfg.readability.enabled, cfg.language.enabled)
    rate, how = (p.assumptions.keep_rate, f"plan.keep_rate {p.assumptions.keep_rate:.0%}") if any(checks) else (
        1.0, "no checks")  # fmt: skip
    kept = (src.rows if src else 0) * rate
    if src and "expected_kept" in src.extra and any(checks):  # judged in flight: what passed is known per prompt
        kept, how = src.extra["expected_kept"], "as generate --preset expects"
    return Flow(src.rows if src else 0, src.tokens_per_row if src else 0,
                f"one verdict per trace; ~{kept:,.0f} kept ({how})",
                {**(src.extra if src else {}), "kept": kept, "keep_rate": rate})  # fmt: skip


def details(result: StageResult, ctx: Context) -> None:
    for line in layouts.report_lines(result.manifest.stats.get("layouts", []), trace_layouts.TRACE_LAYOUTS):
        print(f"  {line}", file=sys.stderr)
    f = result.manifest.stats["funnel"]
    print(f"  kept {f['kept']:,} of {f['traces']:,} traces", file=sys.stderr)
    for why, n in f["by_reason"].items():
        if why != "kept":
            print(f"  {why:<20} {n:>10,}", file=sys.stderr)
    if "judge" in result.manifest.stats:
        print(f"  {judge_line(result.manifest.stats['judge'])}", file=sys.stderr)
    if "agreement" in result.manifest.stats:
        for line in agreement_lines(result.manifest.stats["agreement"]):
            print(f"  {line}", file=sys.stderr)


def judge_line(j: dict[str, Any]) -> str:
    """`judge: 40 rows judged (31 correct); this run sent 12 requests, 28 from the cache; tokens; cost; retries`."""
    line = (f"judge {j['model']}: {j['rows']:,} rows judged ({j['correct']:,} correct); this run sent "
            f"{j['requests_sent']:,} requests, {j['from_cache']:,} answers from the cache; "
            f"{j['prompt_tokens']:,} prompt + {j['completion_tokens']:,} completion tokens")  # fmt: skip
    if "cost_usd" in j:
        line += f"; cost ${j['cost_usd']:,.2f}"
    if j["retries"]:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(j["errors"].items()))
        line += f"; {j['retries']} retries ({errors})"
    return line


def report(result: StageResult, out: Path) -> str:
    f = result.manifest.stats["funnel"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in f["by_reason"].items() if k != "kept")
    return f"kept {f['kept']:,} of {f['traces']:,} traces{f' ({reasons})' if reasons else ''} -> {out}"


def inspect_output(reader: DatasetReader, console: Any, limit: int) -> None:
    m = reader.manifest
    for line in layouts.report_lines(m.stats.get("layouts", []), trace_layouts.TRACE_LAYOUTS):
        console.print(line, highlight=False, markup=False)
    if "agreement" in m.stats:
        for line in agreement_lines(m.stats["agreement"]):
            console.print(line, highlight=False, markup=False)
    funnel_stats = m.stats.get("funnel")
    if funnel_stats and funnel_stats.get("by_domain"):
        console.print(f"[bold]funnel by domain[/] (preset {m.stats.get('preset', '?')})")
        for domain, reasons in funnel_stats["by_domain"].items():
            total = sum(reasons.values())
            detail = ", ".join(f"{k} {v:,}" for k, v in reasons.items() if k != "kept")
            console.print(
                f"  {domain:<10} {reasons.get('kept', 0):>8,} kept of {total:,}" + (f" ({detail})" if detail else "")
            )
