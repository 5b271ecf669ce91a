"""`distill filter` throughput on realistic traces, beside the naive chain.

Traces: math (integer and fraction answers) and science (option letters) problems, 4 samples each,
reasoning of 2K to 30K characters of English prose with inline math, the answer boxed after
</think>; 20% of samples wrong, 5% with a Chinese passage, 3% truncated, 3% looping. The real
`distill filter --preset filters/r1.yaml` runs on all cores; peak RSS is the whole process tree's.

The naive chain is what a script does without this toolkit: langdetect on the whole reasoning and
math-verify on the whole content, one trace after another in one process.

    python -m benchmarks.filter_bench --traces 4000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import run_measured
from distill.records import RECORDS

WORDS = (  # noqa: SIM905 - a word list reads best as text
    "the of and to in is that it for as with was on be by this are we can from at which so have not all one "
    "there their if when will an would what more also two into then other these than first each because only "
    "number value sum term terms equation solution since gives get let now check again case cases both side "
    "sides both factor factors product divide divisible remainder integer integers positive negative square "
    "root roots prime primes odd even multiply add subtract both compute computing note notice means therefore "
    "hence thus wait maybe actually right correct consider given find know need show use using try trying step"
).split()


def _sentences(rng: random.Random, n: int = 5000) -> list[str]:
    out = []
    for _ in range(n):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize()
        if rng.random() < 0.4:
            sentence += f" ${rng.randint(2, 99)}x^{rng.randint(2, 5)} + {rng.randint(1, 50)} = {rng.randint(1, 999)}$"
        out.append(sentence + ".")
    return out


def _prose(rng: random.Random, chars: int, pool: list[str]) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        out.append(rng.choice(pool))
        size += len(out[-1]) + 1
        if rng.random() < 0.15:
            out.append("\n\n")
    return " ".join(out)


def make_traces(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pool = _sentences(rng)
    rows = []
    for p in range(n // 4):
        science = rng.random() < 0.3
        if science:
            gold, problem, domain = (
                rng.choice("ABCD"),
                f"Question {p}: which option holds?\n\nA) a\nB) b\nC) c\nD) d",
                "science",
            )
        else:
            num, den = rng.randint(1, 500), rng.choice([1, 1, 2, 3, 7])
            gold = str(num) if den == 1 else f"\\frac{{{num}}}{{{den}}}"
            problem, domain = f"Problem {p}: compute the value and box it.", "math"
        for s in range(4):
            reasoning = _prose(rng, rng.randint(2_000, 30_000), pool)
            answer = gold
            r = rng.random()
            fault = (
                "wrong" if r < 0.2 else "mix" if r < 0.25 else "truncated" if r < 0.28 else "loop" if r < 0.31 else None
            )
            if r < 0.2:
                answer = rng.choice("ABCD".replace(gold, "")) if science else str(rng.randint(501, 999))
            finish = "stop"
            if 0.2 <= r < 0.25:
                han = "我们需要仔细地计算这个结果然后再检查一遍答案是否正确因为两边的和必须相等所以"
                reasoning += "\n\n" + "".join(rng.choice(han) for _ in range(600))  # mixing, R1-Zero style
            elif 0.25 <= r < 0.28:
                finish = "length"
            elif 0.28 <= r < 0.31:
                reasoning += "\n" + "Wait, let me check the sum of these two terms once more.\n" * 30
            content = f"{_prose(rng, 300, pool)}\n\nTherefore the final answer is $\\boxed{{{answer}}}$."
            rows.append({
                "id": f"p{p}", "source": "bench", "domain": domain, "problem": problem, "answer": gold,
                "language": "en", "sample": s, "reasoning": reasoning, "content": content,
                "finish_reason": finish, "completion_tokens": (len(reasoning) + len(content)) // 4,
                "_fault": fault,  # not a trace column: what was planted, for the detection rates
            })  # fmt: skip
    return rows


def naive(rows: list[dict]) -> dict:
    import langdetect
    from math_verify import parse, verify

    langdetect.DetectorFactory.seed = 0
    langdetect.detect("warm up: load the language profiles before timing")
    verify(parse("$1$"), parse("$1$"))
    started = time.perf_counter()
    flagged = []
    for r in rows:
        lang = langdetect.detect(r["reasoning"])
        ok = verify(parse(f"${r['answer']}$"), parse(r["content"]))
        flagged.append({"mix": lang != "en", "wrong": not ok})
    seconds = time.perf_counter() - started
    return {
        "traces": len(rows),
        "seconds": seconds,
        "traces_per_s": len(rows) / seconds,
        "caught": {
            k: _rate([f[k] for f, r in zip(flagged, rows, strict=True) if r["_fault"] == k]) for k in ("mix", "wrong")
        },
    }


def _rate(hits: list[bool]) -> float:
    return sum(hits) / max(len(hits), 1)


LAYOUTS = ("trace", "openr1-math", "plain")


def write_layout(rows: list[dict], layout: str, root: Path) -> Path:
    """The traces as a file in a public layout: distill's own records (Parquet), OpenR1-Math-220k's (Parquet, one
    row per problem, its generations and correctness lists), or a plain dump (JSONL, problem + response)."""
    if layout == "trace":
        path = root / "traces.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=RECORDS["trace"].schema), path)
        return path
    reply = [f"<think>\n{r['reasoning']}\n</think>\n{r['content']}" for r in rows]
    if layout == "plain":
        path = root / "traces.jsonl"
        with open(path, "w") as f:
            for r, text in zip(rows, reply, strict=True):
                f.write(json.dumps({"problem": r["problem"], "response": text, "answer": r["answer"],
                                    "domain": r["domain"], "finish_reason": r["finish_reason"]}) + "\n")  # fmt: skip
        return path
    by_prompt: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_prompt.setdefault(r["id"], []).append(k)
    table = [
        {"problem": rows[ks[0]]["problem"], "answer": rows[ks[0]]["answer"], "source": "bench", "uuid": pid,
         "generations": [reply[k] for k in ks], "finish_reasons": [rows[k]["finish_reason"] for k in ks],
         "correctness_math_verify": [rows[k]["_fault"] != "wrong" for k in ks],
         "is_reasoning_complete": [rows[k]["finish_reason"] == "stop" for k in ks]}
        for pid, ks in by_prompt.items()
    ]  # fmt: skip
    path = root / "openr1.parquet"
    pq.write_table(pa.Table.from_pylist(table), path)
    return path


def detection_seconds(path: Path) -> float:
    """What recognising the file's layout costs (`inputs.layouts_of`, as `distill filter` calls it)."""
    from distill.sources import inputs, trace_layouts

    files = inputs.resolve([str(path)], 2_000)
    started = time.perf_counter()
    inputs.layouts_of(files, [], table=trace_layouts.TRACES)
    return time.perf_counter() - started


def run(
    n: int, root: Path, workers: int | None = None, executor: str = "local", rows_per_shard: int | None = None,
    layout: str = "trace",
) -> dict:  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = make_traces(n)
    path = write_layout(rows, layout, root)
    detect_s, input_mb = detection_seconds(path), path.stat().st_size / 1e6
    chars = sum(len(r["reasoning"]) for r in rows) / len(rows)
    cmd = [sys.executable, "-m", "distill.cli", "filter", "--input", str(path),
           "--preset", "filters/r1.yaml", "--out", str(root / "verdicts"), "--no-progress"]  # fmt: skip
    if workers:
        cmd += ["--workers", str(workers)]
    if rows_per_shard:
        cmd += ["--rows-per-shard", str(rows_per_shard)]
    cmd += ["--executor", executor]
    seconds, peak, _ = run_measured(cmd)
    manifest = json.loads((root / "verdicts" / "_manifest.json").read_text())
    verdict_rows = pq.read_table(root / "verdicts", columns=["problem", "sample", "reject_reason"]).to_pylist()
    got = {(v["problem"], v["sample"]): v["reject_reason"] for v in verdict_rows}
    expect = {"wrong": "wrong_answer", "mix": "language_mix", "truncated": "truncated", "loop": "repetition"}
    # a plain dump has no sample column: a trace's sample is its row's number in the file
    keys = [(r["problem"], k if layout == "plain" else r["sample"]) for k, r in enumerate(rows)]
    caught = {
        fault: _rate([got.get(key) == code for key, r in zip(keys, rows, strict=True) if r["_fault"] == fault])
        for fault, code in expect.items()
    }
    false_rejects = _rate([got.get(key) is not None for key, r in zip(keys, rows, strict=True) if r["_fault"] is None])
    shutil.rmtree(root, ignore_errors=True)
    return {
        "traces": n,
        "mean_reasoning_chars": chars,
        "seconds": seconds,
        "traces_per_s": n / seconds,
        "peak_rss_mb": peak,
        "funnel": manifest["stats"]["funnel"]["by_reason"],
        "caught": caught,
        "false_rejects": false_rejects,
        "layout": layout,
        "detect_s": detect_s,
        "input_mb": input_mb,
        "agreement": manifest["stats"].get("agreement"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--dir", type=Path, default=Path(".bench/filter"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--naive", action="store_true", help="run the naive chain instead (one process)")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--rows-per-shard", type=int, default=None)
    ap.add_argument("--layout", default="trace", choices=LAYOUTS, help="the file the traces are given in")
    args = ap.parse_args()
    if args.naive:
        print(json.dumps(naive(make_traces(args.traces))))
    else:
        print(json.dumps(run(args.traces, args.dir, args.workers, args.executor, args.rows_per_shard, args.layout),
                         indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
