"""`stage: compare`: evaluations of two or more arms (students trained on different data) over seeds,
side by side, with their spread.

Each arm lists its eval steps in seed order, the same order in every arm, so seed i of one arm is
paired with seed i of the others (same rows, steps and seed; only the data differs). For every
metric the table gives the mean, the sample standard deviation and the range over seeds; with
`expect_better`, it also says whether that arm leads every other arm on the mean and in how many of
the paired seeds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.store import atomic_write_bytes

# Metrics of results.json where less is better; every other metric: more is better.
LOWER_IS_BETTER = {"truncation_rate", "missing_samples", "pass@1_stderr"}


def load_results(step_out: Path) -> dict[str, Any]:
    path = step_out / "results.json"
    if not path.exists():
        raise UserError(f"{path}: no evaluation results; run the eval step first")
    return json.loads(path.read_text())


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def compare(
    arms: dict[str, list[dict[str, Any]]], metrics: list[str], expect_better: str | None = None
) -> dict[str, Any]:
    """arms: arm name -> results.json documents in seed order -> the comparison document."""
    table: dict[str, dict[str, Any]] = {}
    for arm, runs in arms.items():
        table[arm] = {}
        for metric in metrics:
            values = [r["metrics"].get(metric) for r in runs]
            if any(v is None for v in values):
                raise UserError(f"compare: arm {arm!r} has no {metric!r} in its results; pick another metric")
            table[arm][metric] = spread([float(v) for v in values])
    doc: dict[str, Any] = {
        "arms": {arm: [r["model"]["path"] for r in runs] for arm, runs in arms.items()},
        "seeds": len(next(iter(arms.values()))),
        "metrics": metrics,
        "table": table,
    }
    if expect_better is not None:
        doc["expect_better"] = expect_better
        doc["leads"] = {}
        for metric in metrics:
            sign = -1 if metric in LOWER_IS_BETTER else 1
            ours = table[expect_better][metric]["values"]
            others = [table[a][metric] for a in arms if a != expect_better]
            on_mean = all(sign * (table[expect_better][metric]["mean"] - o["mean"]) > 0 for o in others)
            seeds_won = sum(all(sign * (v - o["values"][i]) > 0 for o in others) for i, v in enumerate(ours))
            doc["leads"][metric] = {"on_mean": on_mean, "seeds_won": seeds_won}
        doc["holds"] = all(v["on_mean"] for v in doc["leads"].values())
    return doc


def render(doc: dict[str, Any]) -> list[str]:
    """A Markdown table: one row per arm, `mean ± std (min-max)` per metric, then the verdict."""
    metrics = doc["metrics"]
    lines = [
        f"| arm ({doc['seeds']} seeds) | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for arm, row in doc["table"].items():
        cells = [f"{c['mean']:.1f} ± {c['std']:.1f} ({c['min']:.1f}-{c['max']:.1f})" for c in row.values()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if "leads" in doc:
        parts = [
            f"{m} {'yes' if v['on_mean'] else 'NO'} ({v['seeds_won']}/{doc['seeds']} seeds)"
            for m, v in doc["leads"].items()
        ]
        lines.append(f"{doc['expect_better']} leads on the mean: " + ", ".join(parts))
    return lines


def run_compare(
    arms: dict[str, list[Path]], out: Path, metrics: list[str], expect_better: str | None = None
) -> dict[str, Any]:
    """Read each eval step's results.json, compare, write comparison.json and comparison.md into `out`."""
    doc = compare({arm: [load_results(p) for p in paths] for arm, paths in arms.items()}, metrics, expect_better)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "comparison.json", json.dumps(doc, indent=1).encode())
    atomic_write_bytes(out / "comparison.md", ("\n".join(render(doc)) + "\n").encode())
    return doc
