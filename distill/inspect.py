"""`distill inspect DIR`: what a dataset directory holds, how it got there, and a few of its rows."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.compute as pc
from rich.console import Console
from rich.markup import escape

from distill.store import DatasetReader, input_path, totals


def _clip(value: object, width: int) -> str:
    text = "∅" if value is None else str(value)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _contamination(reader: DatasetReader, console: Console, limit: int) -> None:
    """Each benchmark item with the prompts removed as its copies, and the evidence: how to audit a run."""
    by_item: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for batch in reader.iter_side("removed", batch_size=65_536):
        for r in batch.to_pylist():
            if r["reason"] == "contaminated":
                by_item[(r["matched_source"], r["matched_id"])].append(r)
    console.print(f"[bold]contamination[/]: {sum(map(len, by_item.values())):,} prompts copy {len(by_item):,} items")
    ranked = sorted(by_item.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for (source, item), found in ranked[:limit]:
        copies = f"{len(found):,} prompt{'s' if len(found) != 1 else ''}"
        console.print(f"  {source} {item}: {copies}  [dim]{escape(_clip(found[0].get('matched_text'), 90))}[/]")
        for r in sorted(found, key=lambda r: -r["similarity"])[:limit]:
            ident = json.loads(r["meta"]).get("source_id", r["id"]) if r.get("meta") else r["id"]
            coverage = r.get("matched_coverage")
            console.print(
                f"    {r['source']} {ident}  score {r['similarity']:.2f}"
                + (f"  covers {coverage:.0%}" if coverage is not None else "")
                + f"  shared: {_clip(r.get('matched_span'), 90)}",
                highlight=False,
                markup=False,
            )
    if len(ranked) > limit:
        console.print(f"  … {len(ranked) - limit:,} more items (--matches N, or read _removed/ with DuckDB)")


def inspect_dir(
    root: Path, *, rows: int = 3, verify: bool = False, matches: int = 20, console: Console | None = None
) -> int:
    """Print the report; returns the number of problems `verify` found (0 when not verifying)."""
    console = console or Console(soft_wrap=True)  # piped output stays one line per fact, for grep
    reader = DatasetReader(root, allow_partial=True)
    m = reader.manifest
    state = "complete" if m.complete else f"partial: {len(m.shards)} of {m.planned_shards or '?'} shards done"
    record = f"record {m.record} v{m.schema_version}" if m.record else "no record type"
    size = sum(s["bytes"] for s in m.shards.values())
    console.print(f"[bold]{root}[/]  stage [cyan]{m.stage}[/], {record}, {state}")
    t = totals(m)
    console.print(
        f"rows {m.rows:,} in {len(m.shards)} shards ({size / 1e6:,.1f} MB on disk); "
        f"{t['rows_in']:,} input rows; {t['rejected']:,} rejected"
    )
    for code, n in t["rejects_by_code"].items():
        console.print(f"  rejected  {code:<20} {n:>10,}")
    console.print(
        f"config {m.config_fingerprint[:12]}  inputs {m.input_fingerprint[:12]}  "
        f"written by distill {m.distill_version}, updated {m.updated_at}"
    )
    for inp in m.inputs[:5]:
        where = inp["path"] if str(inp["path"]).startswith("hf:") else input_path(root, inp["path"])
        console.print(f"  input  {where}  ({inp['rows']:,} rows)")
    if len(m.inputs) > 5:
        console.print(f"  input  … and {len(m.inputs) - 5} more")

    schema = reader.schema
    console.print("[bold]schema[/]")
    for f in schema:
        console.print(f"  {f.name}: {f.type}")

    removed = m.stats.get("report", {}).get("removed")
    if removed:
        console.print(f"removed {sum(removed.values()):,} rows (in _removed/, with matched_id and similarity)")
        for reason, n in removed.items():
            console.print(f"  removed   {reason:<20} {n:>10,}")

    if removed and removed.get("contaminated") and matches:
        _contamination(reader, console, matches)

    funnel_stats = m.stats.get("funnel")
    if funnel_stats and funnel_stats.get("by_domain"):
        console.print(f"[bold]funnel by domain[/] (preset {m.stats.get('preset', '?')})")
        for domain, reasons in funnel_stats["by_domain"].items():
            total = sum(reasons.values())
            detail = ", ".join(f"{k} {v:,}" for k, v in reasons.items() if k != "kept")
            console.print(
                f"  {domain:<10} {reasons.get('kept', 0):>8,} kept of {total:,}" + (f" ({detail})" if detail else "")
            )

    if "reject_reason" in schema.names:
        funnel: Counter[str] = Counter()
        for batch in reader.iter_batches(columns=["reject_reason"], batch_size=65_536):
            counts = pc.value_counts(batch.column(0))
            for item in counts.to_pylist():
                funnel[item["values"] or "kept"] += item["counts"]
        console.print("[bold]funnel by reject_reason[/]")
        for reason, n in funnel.most_common():
            console.print(f"  {reason:<20} {n:>10,}  {n / max(m.rows, 1):6.1%}")

    if rows and m.rows:
        console.print(f"[bold]first {rows} rows[/]")
        for batch in reader.iter_batches(batch_size=rows):
            for i, row in enumerate(batch.to_pylist()[:rows]):
                console.print(f"[dim]row {i}[/]")
                for name, value in row.items():
                    console.print(f"  {name}: {_clip(value, 100)}", highlight=False, markup=False)
            break

    if verify:
        problems = reader.verify()
        for p in problems:
            console.print(f"[red]verify[/] {p}")
        console.print(f"verify: {len(m.shards)} shards checked, {len(problems)} problems")
        return len(problems)
    return 0
