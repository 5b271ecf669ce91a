"""Batch functions that ship with distill for use as pipeline steps (`function: distill.steps:NAME`)."""

from __future__ import annotations

import pyarrow as pa


def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return the rows unchanged: with `input_record` / `output_record` set on the step, this turns
    JSON lines or foreign Parquet into a validated dataset directory of that record, bad rows to
    `_rejects/`."""
    return batch
