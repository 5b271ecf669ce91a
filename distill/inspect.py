"""`distill inspect DIR`: what a dataset directory holds, how it got there, and a few of its rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
from rich.console import Console

from distill.store import DatasetReader, totals


def _clip(value: object, width: int) -> str:
    text = "∅" if value is None else str(value)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def inspect_dir(root: Path, *, rows: int = 3, verify: bool = False, console: Console | None = None) -> int:
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
        console.print(f"  input  {inp['path']}  ({inp['rows']:,} rows)")
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
