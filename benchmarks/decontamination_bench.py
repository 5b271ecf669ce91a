"""Decontamination on real public data: copies caught and unrelated problems removed, per rule.

The training sets of ../shared/real (MATH train, the AIME history 1983-2023, the first 3,000 GSM8K rows)
against MATH-500, AIME 2024 and AIME 2025, through the real `distill prompts` command, with:

- `coverage` (this project's rule, the default),
- `open-r1` (open-r1's scripts/decontaminate.py: any shared 8-gram of lower-cased white-space words),
- `plain 13-gram` (the same any-shared-n-gram rule with n = 13, GPT-3 style).

Scored against the hand labels of tests/data/decontamination_labels.json (docs/decontamination.md):
recall = labelled copies removed / copies; false removals = removed problems labelled clearly different;
siblings (same data, another question) are counted apart, as neither.

    python -m benchmarks.decontamination_bench [--real ../shared/real]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
LABELS = json.loads((HERE.parent / "tests" / "data" / "decontamination_labels.json").read_text())
TRAIN = ("train_math.jsonl", "train_aime_1983_2023.jsonl", "train_gsm8k_first3000.jsonl")
BENCH = ("bench_math500.jsonl", "bench_aime24.jsonl", "bench_aime25.jsonl")
RULES = {
    "coverage (this project)": "decontaminate: {rule: coverage}\n",
    "open-r1 8-gram": "decontaminate: {rule: open-r1}\n",
    "plain 13-gram": "decontaminate: {rule: open-r1, ngram: 13}\n",
}


def find_real() -> Path:
    for c in (os.environ.get("DISTILL_REAL_DATA"), HERE.parent.parent / "shared" / "real", "/work/shared/real"):
        if c and (Path(c) / "README.md").exists():
            return Path(c)
    raise SystemExit("../shared/real not found; pass --real DIR or set DISTILL_REAL_DATA")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:  # split on "\n" only: two GSM8K rows hold U+2028
        return [json.loads(line) for line in f.read().split("\n") if line.strip()]


def run(real: Path, root: Path) -> list[dict]:
    copies, siblings = set(LABELS["copy"]), set(LABELS["sibling"])
    results = []
    for name, yaml in RULES.items():
        out = root / "out"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / "rule.yaml").write_text(yaml)
        cmd = [sys.executable, "-m", "distill.cli", "prompts", "--out", str(out), "--no-progress"]
        cmd += [a for f in TRAIN for a in ("--input", str(real / f))]
        cmd += [a for f in BENCH for a in ("--decontaminate", str(real / f))]
        cmd += ["--config", str(root / "rule.yaml")]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        removed = pq.read_table(out / "_removed", columns=["reason", "meta", "matched_id"]).to_pylist()
        found = {json.loads(r["meta"])["source_id"]: r["matched_id"] for r in removed if r["reason"] == "contaminated"}
        rows = sum(len(read_jsonl(real / f)) for f in TRAIN)
        different = rows - len(copies) - len(siblings)
        false = set(found) - copies - siblings
        caught = {c for c in copies if found.get(c) == LABELS["copy"][c]}
        results.append(
            {
                "rule": name,
                "removed": len(found),
                "copies": len(copies),
                "caught": len(caught),
                "missed": sorted(copies - caught),
                "siblings": len(found.keys() & siblings),
                "false": len(false),
                "different": different,
                "false_pct": 100 * len(false) / different,
                "precision": len(found.keys() & (copies | siblings)) / max(len(found), 1),
                "seconds": seconds,
            }
        )
    shutil.rmtree(root, ignore_errors=True)
    return results


def _score(train: list[tuple[str, str]], bench: list[tuple[str, str]], *, n: int, weights: str, numbers: bool,
           figures: bool, frac: bool, threshold: float = 1e-9) -> dict[str, tuple[str, float]]:  # fmt: skip
    """The coverage rule with its parts switched on and off (a plain re-statement for the ablations; the
    shipped code is `distill.prompts.decontaminate`, and the full variant must agree with it)."""
    from collections import Counter, defaultdict

    from distill.normalize import words
    from distill.prompts.decontaminate import strip_figures

    def tok(text: str) -> list[str]:
        ws = (words(strip_figures(text)) if figures else []) or words(text)
        return [w for w in ws if w != "\\frac"] if not frac else ws

    def grams(ws: list[str], k: int) -> set[str]:
        return {" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)}

    b_ws = [tok(b) for _, b in bench]
    b_grams = [grams(ws, min(n, len(ws))) for ws in b_ws]
    index: dict[str, set[int]] = defaultdict(set)
    for j, gs in enumerate(b_grams):
        for g in gs:
            index[g].add(j)
    lengths = {min(n, len(ws)) for ws in b_ws}
    t_ws = [tok(t) for _, t in train]
    hits = [{g for k in lengths for g in grams(ws, k) if g in index} for ws in t_ws]
    df = Counter({g: len(js) for g, js in index.items()})
    if weights == "all":
        for h in hits:
            df.update(h)

    def w(g: str) -> float:
        return 1.0 if weights == "none" else 1.0 / df[g]

    total = [sum(w(g) for g in gs) for gs in b_grams]
    found = {}
    for (tid, _), ws, h in zip(train, t_ws, hits, strict=True):
        best = (threshold, None)
        for j in {j for g in h for j in index[g]}:
            s = sum(w(g) for g in b_grams[j] & h) / total[j]
            has = Counter(x for x in ws if x.isdigit())
            if s >= best[0] and not (numbers and Counter(x for x in b_ws[j] if x.isdigit()) - has):
                best = (s, j)
        if best[1] is not None:
            found[tid] = (bench[best[1]][0], best[0])
    return found


ABLATIONS = {
    "the rule (5-grams, weights from items + prompts, numbers, figures removed, \\frac ignored)": {},
    "weights from the benchmark items only": {"weights": "items"},
    "no weights (plain coverage of the item)": {"weights": "none"},
    "no numbers check": {"numbers": False},
    "figure code kept": {"figures": False},
    "`\\frac` kept": {"frac": True},
    "4-grams": {"n": 4},
    "6-grams": {"n": 6},
}


def ablations(real: Path) -> list[dict]:
    def rows(files: tuple[str, ...], key: str) -> list[tuple[str, str]]:
        return [
            (str(r.get(key) or r["id"]), r.get("problem") or r["question"]) for f in files for r in read_jsonl(real / f)
        ]

    train, bench = rows(TRAIN, "id"), rows(BENCH, "unique_id")
    copies, siblings = LABELS["copy"], set(LABELS["sibling"])
    results = []
    for name, change in ABLATIONS.items():
        opts = {"n": 5, "weights": "all", "numbers": True, "figures": True, "frac": False, **change}
        scored = _score(train, bench, **opts)  # every prompt's best item and score
        found = {t: item for t, (item, score) in scored.items() if score >= 0.5}
        different = [score for t, (_, score) in scored.items() if t not in copies and t not in siblings]
        results.append({
            "variant": name, "caught": sum(found.get(c) == b for c, b in copies.items()),
            "siblings": len(found.keys() & siblings), "false": sum(s >= 0.5 for s in different),
            "lowest_copy": min(scored[c][1] if scored.get(c, ("", 0))[0] == b else 0 for c, b in copies.items()),
            "highest_different": max(different, default=0),
        })  # fmt: skip
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--real", type=Path, default=None)
    ap.add_argument("--dir", type=Path, default=Path(".bench/decontamination"))
    ap.add_argument("--ablations", action="store_true", help="the rule with each of its parts switched off")
    args = ap.parse_args()
    real = args.real or find_real()
    print(json.dumps(ablations(real) if args.ablations else run(real, args.dir), indent=1))


if __name__ == "__main__":
    main()
