"""`distill prompts` at scale: N generated prompts with planted duplicates and benchmark leaks.

The generated set: distinct problems (random words, numbers and LaTeX), a share of templated problems
that differ only in their numbers (they must all be kept), planted duplicates of earlier rows
(re-spaced, re-cased, LaTeX re-spaced, or reworded: a prefix, a swapped phrase, a dropped word), and
planted leaks (a benchmark problem inside a longer prompt). Recall and precision are measured on the
planted rows; rows/s and the peak RSS of the whole process tree (workers included) are measured on
the real `distill prompts` command.

    python -m benchmarks.prompts_bench --rows 1000000 --bench-items 5000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import run_measured
from distill.records import stable_id

TEMPLATES = [
    "A bag holds {a} red marbles and {b} blue marbles. Two marbles are drawn at random without replacement. "
    "What is the probability that both marbles have the same color? Express the answer as a common fraction.",
    "Let $f(x) = {a}x^2 + {b}x + 1$. Find the sum of all real values of $x$ for which $f(f(x)) = 0$ holds.",
    "How many positive integers less than {a}{b} are divisible by {a} but not by {b}? Give the exact count.",
    "A train travels {a} miles in {b} hours at constant speed. How far does it travel in {a} minutes at that speed?",
]
SWAPS = [("Find", "Determine"), ("What is", "Compute"), ("How many", "Find how many"), ("the", "this")]


def _vocab(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _problem(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(vocab) for _ in range(rng.randint(20, 45))]
    words[0] = words[0].capitalize()
    for _ in range(rng.randint(1, 3)):  # some numbers and a formula, as in a math problem
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 9999)))
    words.insert(rng.randrange(len(words)), f"$x^{rng.randint(2, 9)} + {rng.randint(1, 99)}$")
    return " ".join(words) + "?"


def _reword(rng: random.Random, p: str) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return "Please solve the following problem. " + p
    # A rewording changes words, never numbers: a problem with other numbers is another problem.
    words = p.split(" ")
    plain = [k for k in range(1, len(words) - 1) if words[k].isalpha()]
    if kind == 1:
        del words[rng.choice(plain)]
        return " ".join(words)
    if kind == 2:
        words[rng.choice(plain)] = "quite"
        return " ".join(words)
    for a, b in SWAPS:
        if a in p:
            return p.replace(a, b, 1)
    return p + " Explain briefly."


def _respace(rng: random.Random, p: str) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return p.upper()
    if kind == 1:
        return p.replace(" ", "  ").replace("?", " ?")
    return p.replace("$x^", "$ x ^ ").replace(" + ", "+")


def generate(root: Path, rows: int, bench_items: int, seed: int = 0) -> dict[str, set[str]]:
    """Writes root/prompts.parquet and root/bench.jsonl; returns the ids planted as duplicates / leaks."""
    rng = random.Random(seed)
    vocab = _vocab(rng, 20_000)
    bench = [_problem(rng, vocab) for _ in range(bench_items)]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "bench.jsonl", "w") as f:
        for i, b in enumerate(bench):
            f.write(json.dumps({"id": f"bench-{i}", "problem": b}) + "\n")
    problems: list[str] = []
    planted_dup: set[str] = set()
    planted_leak: set[str] = set()
    originals: set[str] = set()
    for _ in range(rows):
        r = rng.random()
        if r < 0.05 and len(problems) > 100:  # a planted duplicate of an earlier distinct problem
            src = problems[rng.randrange(len(problems))]
            while stable_id(src) in planted_dup or stable_id(src) in planted_leak:
                src = problems[rng.randrange(len(problems))]
            p = _reword(rng, src) if rng.random() < 0.5 else _respace(rng, src)
            planted_dup.add(stable_id(p))
            originals.add(stable_id(src))
        elif r < 0.06:  # a planted leak
            p = f"{_problem(rng, vocab)} Also, here is another one: {rng.choice(bench)} Thanks!"
            planted_leak.add(stable_id(p))
        elif r < 0.26:  # a template with its own numbers: another problem, must be kept
            p = rng.choice(TEMPLATES).format(a=rng.randint(2, 9999), b=rng.randint(2, 9999))
        else:
            p = _problem(rng, vocab)
        problems.append(p)
    table = pa.table({"problem": problems, "domain": ["math"] * rows})
    pq.write_table(table, root / "prompts.parquet", compression="zstd")
    # A templated problem can draw the same numbers twice: such a pair is a true exact duplicate.
    seen: set[str] = set()
    natural = set()
    for p in problems:
        pid = stable_id(p)
        if pid in seen and pid not in planted_dup:
            natural.add(pid)
        seen.add(pid)
    return {"dup": planted_dup, "leak": planted_leak, "natural_dup": natural}


def generate_real(root: Path, rows: int, bench_items: int, seed: int = 0) -> dict[str, set[str]]:
    """The worst case for decontamination's cost: prompts made of real problems (../shared/real's training
    sets, each number replaced by a random one, so few are duplicates) share the stock phrases, templates
    and figure code of the real benchmarks (MATH-500, AIME 2024/2025, filled up to `bench_items` with
    generated items): nearly every prompt hits benchmark n-grams and proposes candidates to score."""
    from benchmarks.decontamination_bench import BENCH, TRAIN, find_real, read_jsonl

    real = find_real()
    rng = random.Random(seed)
    texts = [t.get("problem") or t["question"] for f in TRAIN for t in read_jsonl(real / f)]
    bench = [b["problem"] for f in BENCH for b in read_jsonl(real / f)]
    vocab = _vocab(rng, 20_000)
    bench += [_problem(rng, vocab) for _ in range(max(0, bench_items - len(bench)))]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "bench.jsonl", "w") as f:
        for i, b in enumerate(bench):
            f.write(json.dumps({"id": f"bench-{i}", "problem": b}) + "\n")
    number = re.compile(r"\d+")
    problems = [number.sub(lambda _: str(rng.randint(2, 99_999)), rng.choice(texts)) for _ in range(rows)]
    pq.write_table(pa.table({"problem": problems, "domain": ["math"] * rows}), root / "prompts.parquet")
    return {"dup": set(), "leak": set(), "natural_dup": set()}


def run(rows: int, bench_items: int, root: Path, workers: int | None = None, realistic: bool = False) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    planted = (generate_real if realistic else generate)(root, rows, bench_items)
    gen_s = time.perf_counter() - t0
    out = root / "out"
    cmd = [
        sys.executable,
        "-m",
        "distill.cli",
        "prompts",
        "--input",
        str(root / "prompts.parquet"),
        "--decontaminate",
        str(root / "bench.jsonl"),
        "--out",
        str(out),
        "--no-progress",
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    seconds, peak, err = run_measured(cmd)
    removed = pq.read_table(out / "_removed", columns=["id", "reason"]).to_pylist()
    dup_found = {r["id"] for r in removed if r["reason"] != "contaminated"}
    leak_found = {r["id"] for r in removed if r["reason"] == "contaminated"}
    expected_dup = planted["dup"] | planted["natural_dup"]
    result = {
        "rows": rows,
        "bench_items": bench_items,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": peak,
        "generate_seconds": gen_s,
        "planted_duplicates": len(planted["dup"]),
        "natural_duplicates": len(planted["natural_dup"]),
        "planted_leaks": len(planted["leak"]),
        "dup_recall": len(dup_found & expected_dup) / max(len(expected_dup), 1),
        "dup_precision": len(dup_found & expected_dup) / max(len(dup_found), 1),
        "leak_recall": len(leak_found & planted["leak"]) / max(len(planted["leak"]), 1),
        "leak_precision": len(leak_found & planted["leak"]) / max(len(leak_found), 1),
        "summary": err.strip().splitlines()[0],
    }
    shutil.rmtree(root, ignore_errors=True)
    return result


def naive(rows: int, bench_items: int, root: Path) -> dict:
    """The baseline a script would write: one process, datasketch's MinHashLSH index queried row by row,
    and a Python set of the benchmark's 13-gram strings; same data, same threshold and permutations."""
    from datasketch import MinHash, MinHashLSH

    shutil.rmtree(root, ignore_errors=True)
    planted = generate(root, rows, bench_items)
    problems = pq.read_table(root / "prompts.parquet", columns=["problem"]).column(0).to_pylist()
    with open(root / "bench.jsonl") as f:
        bench = [json.loads(line)["problem"] for line in f]
    started = time.perf_counter()
    grams = set()
    for b in bench:
        w = b.lower().split()
        grams.update(" ".join(w[i : i + 13]) for i in range(len(w) - 12))
    lsh = MinHashLSH(threshold=0.65, num_perm=128)
    kept = 0
    dup_found, leak_found = set(), set()
    for i, p in enumerate(problems):
        w = p.lower().split()
        if any(" ".join(w[k : k + 13]) in grams for k in range(len(w) - 12)):
            leak_found.add(i)
            continue
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(w[k : k + 2]).encode() for k in range(max(1, len(w) - 1))])
        if lsh.query(m):
            dup_found.add(i)
            continue
        lsh.insert(str(i), m)
        kept += 1
    seconds = time.perf_counter() - started
    # Scored like the real run (outside the timing): by the ids of the rows each removed.
    dup_ids = {stable_id(problems[i]) for i in dup_found}
    leak_ids = {stable_id(problems[i]) for i in leak_found}
    expected_dup = planted["dup"] | planted["natural_dup"]
    shutil.rmtree(root, ignore_errors=True)
    import resource

    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "kept": kept,
        "dup_recall": len(dup_ids & expected_dup) / max(len(expected_dup), 1),
        "dup_precision": len(dup_ids & expected_dup) / max(len(dup_ids), 1),
        "leak_recall": len(leak_ids & planted["leak"]) / max(len(planted["leak"]), 1),
        "leak_precision": len(leak_ids & planted["leak"]) / max(len(leak_ids), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bench-items", type=int, default=5_000)
    ap.add_argument("--dir", type=Path, default=Path(".bench/prompts"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--naive", action="store_true", help="run the single-process datasketch baseline instead")
    ap.add_argument("--realistic", action="store_true", help="prompts made of real problems (decontamination's worst)")
    args = ap.parse_args()
    if args.naive:
        print(json.dumps(naive(args.rows, args.bench_items, args.dir)))
    else:
        print(json.dumps(run(args.rows, args.bench_items, args.dir, args.workers, args.realistic), indent=1))


if __name__ == "__main__":
    main()
