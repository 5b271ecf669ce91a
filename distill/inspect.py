"""`distill inspect DIR`: what a dataset directory holds, how it got there, and a few of its rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from distill import stages
from distill.errors import UserError
from distill.store import DatasetReader, input_path, totals


def clip(value: object, width: int) -> str:
    text = "∅" if value is None else str(value)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def inspect_dir(
    root: Path, *, rows: int = 3, verify: bool = False, matches: int = 20, disagreements: int = 0,
    console: Console | None = None,
) -> int:  # fmt: skip
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

    stage = stages.registry().get(m.stage or "")
    if stage is not None and (own := stage.hook("inspect")) is not None:  # what only this stage's output says
        own(reader, console, matches)

    if "reject_reason" in schema.names:
        _funnel(reader.iter_batches(columns=["reject_reason"], batch_size=65_536), m.rows, console)

    if rows and m.rows:
        _first_rows(reader.iter_batches(batch_size=rows), rows, console)
    if disagreements:
        _disagreements(reader.iter_batches(batch_size=4096), disagreements, console)

    if verify:
        problems = reader.verify()
        for p in problems:
            console.print(f"[red]verify[/] {p}")
        console.print(f"verify: {len(m.shards)} shards checked, {len(problems)} problems")
        return len(problems)
    return 0


def _funnel(batches: Iterator[pa.RecordBatch], rows: int, console: Console) -> None:
    """Rows by `reject_reason` (the first column of the batches), kept ones as `kept`."""
    funnel: Counter[str] = Counter()
    for batch in batches:
        for item in pc.value_counts(batch.column(0)).to_pylist():
            funnel[item["values"] or "kept"] += item["counts"]
    console.print("[bold]funnel by reject_reason[/]")
    for reason, n in funnel.most_common():
        console.print(f"  {reason:<20} {n:>10,}  {n / max(rows, 1):6.1%}")


def _first_rows(batches: Iterator[pa.RecordBatch], rows: int, console: Console) -> None:
    console.print(f"[bold]first {rows} rows[/]")
    for batch in batches:
        for i, row in enumerate(batch.to_pylist()[:rows]):
            console.print(f"[dim]row {i}[/]")
            for name, value in row.items():
                console.print(f"  {name}: {clip(value, 100)}", highlight=False, markup=False)
        break


def _disagreements(batches: Iterator[pa.RecordBatch], limit: int, console: Console) -> None:
    """Traces where our `correct` and the publisher's own label differ: what each side said, and why ours."""
    shown = 0
    for batch in batches:
        if not {"correct", "publisher_correct"} <= set(batch.schema.names):
            console.print("no publisher's labels here: --disagreements needs verdicts of a labelled trace set")
            return
        differ = pc.fill_null(pc.not_equal(batch.column("correct"), batch.column("publisher_correct")), False)
        for row in batch.filter(differ).to_pylist():
            if shown == limit:
                return
            if shown == 0:
                console.print(f"[bold]disagreements with the publisher's label[/] (at most {limit})")
            shown += 1
            console.print(
                f"  {row['id']} sample {row['sample']} ({row['domain']}): ours {row['correct']} "
                f"({row.get('reject_reason') or 'kept'}: {clip(row.get('reject_detail'), 80)}), theirs "
                f"{row['publisher_correct']} ({row['publisher_label']}); gold {clip(row['answer'], 40)}",
                highlight=False,
                markup=False,
            )
    if shown == 0:
        console.print("disagreements with the publisher's label: none")


def inspect_file(path: Path, *, rows: int = 3, disagreements: int = 0, console: Console | None = None) -> None:
    """One Parquet file (a shard, or a file from elsewhere): its rows, schema and, for verdicts, the funnel."""
    console = console or Console(soft_wrap=True)
    if path.suffix != ".parquet":
        raise UserError(f"{path}: distill inspect reads a dataset directory or a .parquet file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    meta = pf.metadata
    record = (pf.schema_arrow.metadata or {}).get(b"distill.record", b"").decode() or "no record type"
    console.print(f"[bold]{path}[/]  one Parquet file, {record}")
    console.print(f"rows {meta.num_rows:,} in {meta.num_row_groups} row groups ({path.stat().st_size / 1e6:,.1f} MB)")
    console.print("[bold]schema[/]")
    for f in pf.schema_arrow:
        console.print(f"  {f.name}: {f.type}")
    if "reject_reason" in pf.schema_arrow.names:
        _funnel(pf.iter_batches(columns=["reject_reason"], batch_size=65_536), meta.num_rows, console)
    if rows and meta.num_rows:
        _first_rows(pf.iter_batches(batch_size=rows), rows, console)
    if disagreements:
        _disagreements(pf.iter_batches(batch_size=4096), disagreements, console)
