"""The coverage rule of decontamination (`distill/prompts/decontaminate.py`) on planted cases: what is a copy
(re-typeset, reworded, pasted into a longer prompt, copied many times) and what is not (a template with other
numbers, shared stock phrases, shared figure code)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from distill.prompts.config import PromptsConfig
from distill.prompts.decontaminate import gram_hashes, strip_figures, tokens_for
from tests.conftest import curate, read_rows, read_side, write_jsonl

STOCK = (
    "The probability can be written as $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers. "
    "Find $m+n$."
)
FIGURE = (
    "[asy] size(180); defaultpen(linewidth(.7pt)+fontsize(10pt)); pair A=(0,0), B=(6,0), C=(2,5); "
    'draw(A--B--C--cycle); label("$A$",A,SW); label("$B$",B,SE); label("$C$",C,N); [/asy]'
)
ITEM = (
    "A fair coin is tossed $10$ times while a fair die is rolled $4$ times. Let $p$ be the probability that "
    "the number of heads is greater than the largest number rolled on the die. " + STOCK
)
SCENES = [
    "A jar holds {} red and {} blue beads and two beads are drawn",
    "A spinner with {} equal sectors is spun {} times",
    "Seven cards labelled 1 to {} are dealt to {} players",
    "A frog jumps {} times on a ring of {} lily pads",
]


def _other(rng: random.Random) -> str:
    scene = rng.choice(SCENES).format(rng.randint(3, 40), rng.randint(3, 40))
    return f"{scene}. Let $q$ be the chance that the outcome is symmetric under {rng.randint(2, 9)} moves. {STOCK}"


def _contaminated(tmp_path: Path, rows: list[dict], bench: list[dict]) -> dict[str, dict]:
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    b = write_jsonl(tmp_path / "bench.jsonl", bench)
    out = tmp_path / "out"
    curate([str(inp)], out, PromptsConfig(), benchmarks=[str(b)], workers=1, show_progress=False)
    return {r["problem"]: r for r in read_side(out, "removed") if r["reason"] == "contaminated"}


def test_copies_are_caught_however_they_are_typeset_worded_or_embedded(tmp_path: Path) -> None:
    rng = random.Random(0)
    bench = [{"id": "2025-I-1", "problem": ITEM}] + [{"id": f"o{k}", "problem": _other(rng)} for k in range(20)]
    copies = [
        ITEM.replace("$\\frac{m}{n}$", "\\(\\dfrac{m}{n}\\)").replace("$10$", "10").upper(),  # re-typeset, re-cased
        ITEM.replace("A fair coin is tossed", "Suppose we toss a fair coin").replace("largest", "biggest"),  # reworded
        f"Here is a problem from my homework, please help:\n\n{ITEM}\n\nThanks in advance!",  # inside a longer prompt
    ]
    others = [_other(rng) for _ in range(200)]  # share the stock phrase with every benchmark item
    template = ITEM.replace("$10$", "$12$").replace("$4$", "$3$")  # the same template with other numbers
    found = _contaminated(tmp_path, [{"problem": p} for p in [*copies, *others, template]], bench)
    assert set(found) == set(copies)
    for row in found.values():
        assert row["matched_id"] == "2025-I-1" and row["similarity"] >= 0.5 and row["matched_text"] == ITEM
        span = row["matched_span"]
        assert len(span.split()) >= 10 and span in " ".join(tokens_for(ITEM, "coverage", True))


def test_figure_code_is_not_evidence_and_a_redrawn_figure_does_not_hide_a_copy(tmp_path: Path) -> None:
    item = (
        f"In triangle $ABC$ shown, $AB = 6$ and the altitude from $C$ is $5$. Find the area of the triangle. {FIGURE}"
    )
    same_figure = f"In the figure, find the length of the median from $A$ to side $BC$ of the triangle. {FIGURE}"
    redrawn = item.replace(FIGURE, "[asy] unitsize(1cm); draw((0,0)--(6,0)--(2,5)--cycle); [/asy]")
    found = _contaminated(tmp_path, [{"problem": same_figure}, {"problem": redrawn}], [{"id": "g1", "problem": item}])
    assert set(found) == {redrawn}
    assert "[asy]" not in strip_figures(item) and "altitude" in strip_figures(item)


def test_a_benchmark_item_copied_many_times_is_still_caught(tmp_path: Path) -> None:
    # Weights come from how many prompts share an n-gram; 300 copies make all of the item's n-grams common
    # alike, so the item's score (a ratio within the item) stays 1.
    rng = random.Random(1)
    rows = [{"problem": f"{ITEM} (version {k})"} for k in range(300)] + [{"problem": _other(rng)} for _ in range(300)]
    rng.shuffle(rows)
    found = _contaminated(tmp_path, rows, [{"id": "2025-I-1", "problem": ITEM}])
    assert len(found) == 300 and all(r["similarity"] == 1.0 for r in found.values())


def test_open_r1_rule_is_any_shared_8_gram_of_lower_cased_white_space_words(tmp_path: Path) -> None:
    item = "Find the number of ordered pairs (m,n) of positive integers such that m^2 n = 20^20."
    rows = [
        {"problem": "Unrelated start. find the number of ordered pairs (m,n) of positive integers with m < n."},
        {"problem": "Find the number of ordered pairs (m, n) of positive integers such that m + n = 10."},  # "(m, n)"
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    b = write_jsonl(tmp_path / "b.jsonl", [{"problem": item}])
    cfg = PromptsConfig.model_validate({"decontaminate": {"rule": "open-r1"}})
    curate([str(inp)], tmp_path / "o", cfg, benchmarks=[str(b)], workers=1, show_progress=False)
    [removed] = read_side(tmp_path / "o", "removed")
    assert removed["problem"] == rows[0]["problem"] and removed["matched_span"].startswith("find the number")
    assert [r["problem"] for r in read_rows(tmp_path / "o")] == [rows[1]["problem"]]


def test_gram_hashes_are_the_same_in_every_process_and_tell_runs_apart() -> None:
    ws = ["let", "x", "be", "a", "real", "number", "such", "that", "x", "squared", "is", "two"]
    h = gram_hashes(ws, 5)
    assert len(h) == len(ws) - 4 and len(np.unique(h)) == len(h)
    assert np.array_equal(h, gram_hashes(list(ws), 5))
    assert gram_hashes(ws[:3], 5).size == 0
    assert gram_hashes(["a", "b", "c", "d", "e"], 5)[0] != gram_hashes(["b", "a", "c", "d", "e"], 5)[0]


def test_benchmarks_in_other_layouts_are_matched_on_their_problem_text(tmp_path: Path) -> None:
    question = (
        "A spin-half particle is in a linear superposition 0.5|up> + sqrt(3)/2|down> of its spin states. What is "
        "the expectation value up to one decimal place of the operator 10 sigma_z + 5 sigma_x?"
    )
    gpqa = [{"Question": question, "Correct Answer": "-0.7", "Incorrect Answer 1": "0.85",
             "Incorrect Answer 2": "1.65", "Incorrect Answer 3": "-1.4", "Record ID": "rec1"}]  # fmt: skip
    lcb = [{"question_id": "abc301_a", "question_content": "Takahashi and Aoki played N games. You are given a "
            "string S of length N, the results of these games. Find the overall winner: Takahashi or Aoki.",
            "public_test_cases": "[]"}]  # fmt: skip
    rows = [
        {"problem": f"Answer briefly. {question}\n(A) -1.4 (B) 0.85 (C) -0.7 (D) 1.65"},  # options in another order
        {"problem": "Takahashi and Aoki played N games. You are given a string S of length N, the results of "
                    "these games. Find the overall winner: Takahashi or Aoki. Write it in Python."},
        {"problem": "What is the expectation value of sigma_z for a spin-half particle in the state |up>?"},
    ]  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    benches = [str(write_jsonl(tmp_path / "gpqa.jsonl", gpqa)), str(write_jsonl(tmp_path / "lcb.jsonl", lcb))]
    out = tmp_path / "out"
    result = curate([str(inp)], out, PromptsConfig(), benchmarks=benches, workers=1, show_progress=False)
    found = {r["matched_id"]: r for r in read_side(out, "removed") if r["reason"] == "contaminated"}
    assert set(found) == {"rec1", "abc301_a"}
    assert found["rec1"]["matched_text"] == question  # the question itself: the options are not matched
    assert [b["layout"] for b in result.manifest.stats["report"]["benchmarks"]] == ["gpqa", "livecodebench"]
