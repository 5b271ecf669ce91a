"""`distill card DIR`: the data card (`DIR/README.md`) of a dataset directory, from its manifests.

Everything in the card is read from the data and from the manifests of the directory and of every
dataset directory upstream of it (a manifest lists its inputs, so the chain prompts -> traces ->
verdicts -> kept -> sft is followed back): counts, the funnel by reject reason, the filter preset,
the decontamination benchmarks, the mix quotas, token-length statistics with a histogram image, the
commands and config fingerprints that rebuild it. The Hub metadata (YAML front matter) comes from
`huggingface_hub.DatasetCardData`; the body from the Jinja template `distill/data/card_template.md`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from distill.errors import UserError
from distill.store import MANIFEST, DatasetReader, Manifest, atomic_write_bytes, read_manifest, shard_files

TEMPLATE = Path(__file__).resolve().parent / "data" / "card_template.md"  # package data: in every install
HISTOGRAM = "token_lengths.png"


def lineage(root: Path) -> list[tuple[Path, Manifest]]:
    """This dataset directory and every one upstream of it, nearest first."""
    out: list[tuple[Path, Manifest]] = []
    seen: set[Path] = set()
    queue = [root.resolve()]
    while queue:
        d = queue.pop(0)
        if d in seen:
            continue
        seen.add(d)
        m = read_manifest(d)
        if m is None:
            continue
        out.append((d, m))
        for path in m.input_paths(d):
            parent = path.parent
            if (parent / MANIFEST).exists() and parent not in seen:
                queue.append(parent)
    return out


def _features(schema: Any) -> list[dict[str, Any]]:
    import datasets

    return datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def _histogram(tokens: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on these machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.hist(tokens, bins=min(60, max(5, len(np.unique(tokens)))), color="#4a6fa5")
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    ax.set_title("Token lengths")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, metadata={"Software": None})  # no version stamp: the same data gives the same image
    plt.close(fig)
    tmp.replace(path)


def collect(root: Path) -> dict[str, Any]:
    """Every number the card shows, computed from the data and the manifests."""
    reader = DatasetReader(root)
    m = reader.manifest
    schema = reader.schema
    chain = lineage(root)
    by_stage: dict[str, tuple[Path, Manifest]] = {}
    for d, man in chain:
        by_stage.setdefault(man.stage, (d, man))
    facts: dict[str, Any] = {
        "name": root.name,
        "stage": m.stage,
        "record": m.record,
        "rows": m.rows,
        "shards": len(m.shards),
        "bytes": sum(f["bytes"] for s in m.shards.values() for f in shard_files(s)[:1]),
        "schema": [(f.name, str(f.type)) for f in schema],
        "features": _features(schema) if len(schema) else [],
        "lineage": [
            {
                "dir": os.path.relpath(d, root.resolve()),  # the same card wherever it is written from
                "stage": man.stage,
                "config": man.config_fingerprint[:16],
                "inputs": man.input_fingerprint[:16],
                "rows": man.rows,
                "command": man.command,
            }
            for d, man in reversed(chain)
        ],
    }
    columns = set(schema.names)
    domains: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    tokens: list[np.ndarray] = []
    wanted = [c for c in ("domain", "source", "num_tokens") if c in columns]
    for batch in reader.iter_batches(columns=wanted, batch_size=65_536):
        if "domain" in columns:
            domains.update(batch.column("domain").to_pylist())
        if "source" in columns:
            sources.update(batch.column("source").to_pylist())
        if "num_tokens" in columns:
            tokens.append(pc.fill_null(batch.column("num_tokens"), 0).to_numpy())
    facts["domains"] = dict(domains.most_common())
    facts["sources"] = dict(sources.most_common())
    if tokens:
        t = np.concatenate(tokens)
        facts["tokens"] = {
            "total": int(t.sum()), "mean": round(float(t.mean()), 1), "p50": int(np.percentile(t, 50)),
            "p90": int(np.percentile(t, 90)), "p99": int(np.percentile(t, 99)), "max": int(t.max()),
        }  # fmt: skip
        _histogram(t, root / HISTOGRAM)
    facts["languages"] = _languages(by_stage)
    if "mix" in by_stage:
        facts["mix"] = {**by_stage["mix"][1].config.get("mix", {}), "report": by_stage["mix"][1].stats.get("mix", {})}
    if "select" in by_stage:
        facts["select"] = {**by_stage["select"][1].config, **by_stage["select"][1].stats.get("select", {})}
    if "filter" in by_stage:
        fm = by_stage["filter"][1]
        facts["filter"] = {"preset": fm.stats.get("preset"), "funnel": fm.stats.get("funnel", {}),
                           "layouts": sorted({f["layout"] for f in fm.stats.get("layouts", [])}),
                           "agreement": fm.stats.get("agreement")}  # fmt: skip
    if "prompts" in by_stage:
        pm = by_stage["prompts"][1]
        facts["prompts"] = {
            "report": pm.stats.get("report", {}),
            "benchmarks": [Path(b["path"]).name for b in pm.config.get("benchmarks", [])],
            "decontaminate": _decontamination(pm.config.get("prompts", {}).get("decontaminate", {})),
        }
    return facts


def _decontamination(cfg: dict[str, Any]) -> str:
    """How leaks were found, in words (`distill/prompts/decontaminate.py`)."""
    if cfg.get("rule") == "open-r1":
        return f"any shared {cfg.get('ngram') or 8}-gram of lower-cased words (open-r1's rule)"
    if "rule" in cfg:
        return (f"at least {cfg.get('threshold', 0.5):.0%} of a benchmark problem's {cfg.get('ngram') or 5}-grams "
                "(weighted by rarity) and all its numbers")  # fmt: skip
    return f"a shared {cfg.get('ngram', 13)}-gram"  # manifests written before the coverage rule


def _languages(by_stage: dict[str, tuple[Path, Manifest]]) -> dict[str, int]:
    """Languages of the prompts upstream (the records that carry one)."""
    for stage in ("prompts", "filter", "select"):
        if stage in by_stage:
            d = by_stage[stage][0]
            counts: Counter[str] = Counter()
            for batch in DatasetReader(d).iter_batches(columns=["language"], batch_size=65_536):
                counts.update(v or "unknown" for v in batch.column(0).to_pylist())
            return dict(counts.most_common())
    return {}


def render(root: Path, *, license: str = "other", pretty_name: str | None = None) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    facts = collect(root)
    size = facts["rows"]
    category = next(c for limit, c in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                                       (1e7, "1M<n<10M"), (float("inf"), "n>10M")) if size < limit)  # fmt: skip
    total = sum(facts["languages"].values()) or 1
    languages = [k for k, v in facts["languages"].items() if k != "unknown" and v / total >= 0.01] or ["en"]
    data = DatasetCardData(
        license=license,
        language=languages,
        task_categories=["text-generation"],
        tags=["reasoning", "distillation", "synthetic", "deepseek-r1", "distill"],
        size_categories=[category],
        pretty_name=pretty_name or facts["name"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "train-*.parquet"}]}],
        dataset_info={
            "features": facts["features"],
            "splits": [{"name": "train", "num_bytes": facts["bytes"], "num_examples": size}],
            "download_size": facts["bytes"],
            "dataset_size": facts["bytes"],
        },
    )
    if not TEMPLATE.exists():
        raise UserError(f"{TEMPLATE}: the card template is missing from this install; reinstall distill")
    card = DatasetCard.from_template(data, template_path=str(TEMPLATE), facts=facts, histogram=HISTOGRAM)
    return str(card)


def write_card(root: Path, **kw: Any) -> Path:
    text = render(root, **kw)
    path = root / "README.md"
    atomic_write_bytes(path, text.encode())
    return path
