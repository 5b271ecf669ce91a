"""Rejection sampling: every reject code by hand, answer forms, no crash or hang on any input."""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.config import load_config
from distill.filters.config import FilterPreset
from distill.filters.stage import verdicts
from distill.records import RECORDS
from tests.conftest import REPO

R1 = load_config(REPO / "filters" / "r1.yaml", FilterPreset)
STEPS = "First, note what is given.\n\nThen we combine the two facts and simplify carefully.\n\nSo we are done."


def trace(**kw: Any) -> dict[str, Any]:
    row = {
        "id": "p1",
        "source": "t",
        "domain": "math",
        "problem": "What is one half of one? Put the answer in a box.",
        "answer": "1/2",
        "language": "en",
        "sample": 0,
        "reasoning": STEPS,
        "content": "Half of one is \\boxed{\\frac{1}{2}}.",
        "finish_reason": "stop",
        "completion_tokens": 100,
    }
    row.update(kw)
    return row


def judge(rows: list[dict[str, Any]], preset: FilterPreset = R1) -> list[dict[str, Any]]:
    table = pa.Table.from_pylist(rows, schema=RECORDS["trace"].schema)
    return verdicts(table.to_batches()[0], preset=preset.model_dump()).to_pylist()


def reason(**kw: Any) -> str | None:
    return judge([trace(**kw)])[0]["reject_reason"]


LOOP = "Wait, let me recompute the sum of the two terms again.\n" * 12
CODE_PROBLEM = {"domain": "code", "problem": "Read two integers and print their sum.", "answer": None}
SUM_TESTS = json.dumps({"inputs": ["1 2\n", "10 20\n"], "outputs": ["3\n", "30\n"]})


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (trace(), None),
        (trace(finish_reason="length"), "truncated"),
        (trace(reasoning=None, content="<think>\nstill thinking about it and never closing"), "unclosed_think"),
        (
            trace(reasoning=None, content="<think>\nthink\n</think>\n\nfirst <think>again</think> \\boxed{1/2}"),
            "unclosed_think",
        ),
        (trace(reasoning="   "), "empty"),
        (trace(content="  "), "empty"),
        (trace(completion_tokens=40_000), "too_long"),
        (trace(reasoning=STEPS + "\n\n" + LOOP), "repetition"),
        (trace(reasoning=" ".join(["word"] * 2000)), "repetition"),
        (trace(reasoning="Start.\n\n" + " ".join(f"w{i}" for i in range(1500))), "long_paragraph"),
        (trace(reasoning=STEPS + "\n\n```python\nprint(1/2)\n```\n"), "code_block"),
        (
            trace(
                reasoning="Tout d'abord, nous notons ce qui est donné dans l'énoncé du problème. Ensuite nous "
                "combinons les deux faits et nous simplifions soigneusement le résultat obtenu."
            ),
            "language_mismatch",
        ),
        (
            trace(reasoning=STEPS + "\n\n我们需要仔细地计算这个结果，然后再检查一遍答案是否正确。这样就完成了。"),
            "language_mix",
        ),
        (trace(content="Half of one is 1/2."), "no_answer"),
        (trace(content="It is \\boxed{\\frac{1}{3}}."), "wrong_answer"),
        (trace(content="It is \\boxed{9^{9^{9^{9^{9^{9}}}}}}.", answer="1"), "verify_timeout"),
        (trace(answer=None), "unverifiable"),
        (trace(answer="\\\\\\"), "unverifiable"),
        (trace(domain="science", answer="C", content="The answer is (B)."), "wrong_answer"),
        (trace(domain="science", answer="C", content="I am not sure."), "no_answer"),
        (trace(domain="science", answer="C", content="So the answer is \\boxed{C}."), None),
        (trace(domain="general", answer=None, content="A friendly reply."), None),
        (
            trace(
                **CODE_PROBLEM,
                tests=SUM_TESTS,
                content="```python\na, b = map(int, input().split())\nprint(a + b)\n```",
            ),
            None,
        ),
        (
            trace(
                **CODE_PROBLEM,
                tests=SUM_TESTS,
                content="```python\na, b = map(int, input().split())\nprint(a * b)\n```",
            ),
            "code_failed",
        ),
        (trace(**CODE_PROBLEM, tests=SUM_TESTS, content="```python\nwhile True: pass\n```"), "code_timeout"),
        (trace(**CODE_PROBLEM, tests=SUM_TESTS, content="Just add them."), "no_answer"),
    ],
)
def test_every_reject_code(row: dict[str, Any], code: str | None) -> None:
    preset = R1.model_copy(update={"correctness": R1.correctness.model_copy(update={"math_timeout_s": 2.0})})
    preset.correctness.code.__dict__["timeout_s"] = 3.0  # keep the endless loop short
    [v] = judge([row], preset)
    assert v["reject_reason"] == code, v["reject_detail"]
    assert v["keep"] is (code is None)


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("1/2", "\\frac{1}{2}"),
        ("\\frac12", "0.5"),
        ("0.5", "\\dfrac{1}{2}"),
        ("50\\%", "0.5"),
        ("[1, 2)", "[1,2)"),
        ("\\{1, 2\\}", "\\{2, 1\\}"),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
        ("10", "10\\text{ cm}"),
        ("\\text{(A)}", "\\text{(A)}"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("x = 3", "3"),
        ("3.75", "3,75"),  # a decimal comma, read as plain text once `$3,75$` (a pair) does not match
        ("$y \\leq 4$", "y <= 4"),  # a gold that marks its own math is read as written
    ],
)
def test_answer_forms_that_are_equal(gold: str, answer: str) -> None:
    assert reason(answer=gold, content=f"Therefore the answer is $\\boxed{{{answer}}}$.") is None


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("1/2", "\\frac{1}{3}"),
        ("[1, 2)", "[1, 2]"),
        ("\\{1, 2\\}", "\\{1, 3\\}"),
        ("0.5", "5"),
        ("2\\sqrt{2}", "\\sqrt{2}"),
        ("3.75", "375"),
        ("\\{3, 75\\}", "3.75"),
    ],
)
def test_answer_forms_that_differ(gold: str, answer: str) -> None:
    assert reason(answer=gold, content=f"Therefore the answer is $\\boxed{{{answer}}}$.") == "wrong_answer"


def test_several_boxes_form_one_answer_and_the_last_box_wins() -> None:
    content = (
        "A first attempt gave \\boxed{5}, which is wrong.\n\nThe solutions are $x = \\boxed{2}$ and $x = \\boxed{-2}$."
    )
    assert reason(answer="2, -2", content=content) is None
    assert reason(answer="-2", content=content) is None
    assert reason(answer="5", content=content) == "wrong_answer"


_junk = st.one_of(
    st.text(max_size=3000),
    st.binary(max_size=2000).map(lambda b: b.decode("latin-1")),
    st.integers(1, 400).map(lambda n: "\\boxed{" + "{" * n + "1" + "}" * (n // 2)),
    st.integers(1, 60).map(lambda n: "\\boxed{" + "\\frac{1}{" * n + "2" + "}" * n + "}"),
    st.just("\\boxed{" + "9^{" * 30 + "9" + "}" * 31),
    st.just("x" * 1_000_000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reasoning=st.one_of(st.none(), _junk),
    content=_junk,
    answer=st.one_of(st.none(), _junk),
    domain=st.sampled_from(["math", "science", "general"]),
)
def test_no_input_crashes_or_hangs_the_filter(reasoning, content, answer, domain) -> None:
    preset = R1.model_copy(update={"correctness": R1.correctness.model_copy(update={"math_timeout_s": 1.0})})
    started = time.perf_counter()
    [v] = judge([trace(reasoning=reasoning, content=content, answer=answer, domain=domain)], preset)
    assert v["keep"] is (v["reject_reason"] is None)
    assert time.perf_counter() - started < 30  # one math comparison is cut at 1 s; the rest is linear


# --- selection and the commands ----------------------------------------------------------------------


def test_choose_keeps_at_most_k_distinct_and_is_seeded() -> None:
    from distill.filters.select import choose

    rows = [(pos, f"p{pos % 3}", pos, pos % 5 if pos < 20 else 1000 + pos) for pos in range(30)]
    chosen, counts = choose(rows, 2, seed=7)
    per_prompt = {f"p{k}": [p for p in chosen if p % 3 == k] for k in range(3)}
    assert all(len(v) == 2 for v in per_prompt.values())
    again, _ = choose(list(reversed(rows)), 2, seed=7)
    assert again == chosen  # independent of input order
    other, _ = choose(rows, 2, seed=8)
    assert other != chosen
    more, _ = choose(rows, 3, seed=7)
    assert chosen <= more  # a larger K only adds
    keys = {}
    for pos, pid, _, key in rows:
        if pos in chosen:
            assert (pid, key) not in keys  # distinct traces only
            keys[(pid, key)] = pos
    assert counts["identical_dropped"] > 0


def test_difficulty_keeps_the_prompts_the_teacher_solves_only_sometimes() -> None:
    from distill.filters.select import by_difficulty

    # (verified samples, correct ones): always solved, 3 of 4, 1 of 4, never, nothing verifiable
    rates = {"easy": [4, 4], "mid": [4, 3], "hard": [4, 1], "never": [4, 0], "open": [0, 0]}
    rows = [(i, pid, 0, i) for i, pid in enumerate(["easy", "mid", "hard", "open"])]  # "never" has no kept trace
    kept, stats = by_difficulty(rows, rates, 0.25, 0.75)
    assert [r[1] for r in kept] == ["mid", "hard", "open"]  # a prompt without a rate stays
    assert (stats["too_easy"], stats["too_hard"], stats["no_rate"]) == (1, 1, 1)
    assert stats["histogram"] == {"0": 1, "(0, 0.25]": 1, "(0.25, 0.5]": 0, "(0.5, 0.75]": 1, "(0.75, 1)": 0,
                                  "1": 1, "no rate": 1}  # fmt: skip
    everything, _ = by_difficulty(rows, rates, 0.0, 1.0)
    assert everything == rows


def test_filter_then_select_commands(tmp_path) -> None:
    from tests.conftest import read_rows, run_cli, write_jsonl

    rows = []
    for p in range(6):
        for s in range(4):
            good = s != 3
            rows.append(
                trace(
                    id=f"p{p}",
                    sample=s,
                    problem=f"What is {p} + {p}? Box it.",
                    answer=str(2 * p),
                    content=f"It is \\boxed{{{2 * p if good else 2 * p + 1}}}." + (" Sure." if s == 2 else ""),
                )
            )
    rows[5]["finish_reason"] = "length"
    rows.append("{broken json")
    write_jsonl(tmp_path / "traces.jsonl", rows)
    r = run_cli(
        "filter",
        "--input",
        str(tmp_path / "traces.jsonl"),
        "--preset",
        "filters/r1.yaml",
        "--out",
        str(tmp_path / "verdicts"),
        "--no-progress",
        "--workers",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "kept 17 of 24 traces" in r.stderr and "wrong_answer" in r.stderr and "truncated" in r.stderr
    verdict_rows = read_rows(tmp_path / "verdicts")
    assert len(verdict_rows) == 24 and sum(v["keep"] for v in verdict_rows) == 17
    inspect = run_cli("inspect", str(tmp_path / "verdicts"))
    assert "funnel by reject_reason" in inspect.stdout and "wrong_answer" in inspect.stdout
    assert "funnel by domain (preset r1)" in inspect.stdout and "math" in inspect.stdout
    r = run_cli(
        "select",
        "--input",
        str(tmp_path / "verdicts"),
        "--out",
        str(tmp_path / "kept"),
        "--per-prompt",
        "2",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    kept = read_rows(tmp_path / "kept")
    assert all(v["keep"] for v in kept)
    by_prompt = {}
    for v in kept:
        by_prompt.setdefault(v["id"], []).append(v["sample"])
    assert len(by_prompt) == 6 and all(len(s) <= 2 for s in by_prompt.values())
    # samples 0 and 1 of a prompt are the same text: at most one of them is chosen
    assert all(not {0, 1} <= set(s) for s in by_prompt.values())
    # difficulty: the teacher solves p1 2 of 3 verified times (its sample 1 is cut: unverified), the others 3 of 4
    rates = {}
    for v in verdict_rows:
        if v["correct"] is not None:
            rates.setdefault(v["id"], []).append(v["correct"])
    assert sorted(sum(c) / len(c) for c in rates.values()) == [2 / 3] + [0.75] * 5
    r = run_cli("select", "--input", str(tmp_path / "verdicts"), "--out", str(tmp_path / "hard"), "--per-prompt", "2",
                "--max-pass-rate", "0.7", "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {v["id"] for v in read_rows(tmp_path / "hard")} == {p for p, c in rates.items() if sum(c) / len(c) <= 0.7}
    assert "(0.5, 0.75] 6" in r.stderr and "dropped 5 too easy, 0 too hard" in r.stderr
    card = run_cli("card", str(tmp_path / "hard"))
    assert card.returncode == 0, card.stderr
    text = (tmp_path / "hard" / "README.md").read_text()
    assert "only prompts in [0.0, 0.7] kept: 5 dropped as too easy" in text and "| (0.5, 0.75] | 6 |" in text
    bad = run_cli("select", "--input", str(tmp_path / "verdicts"), "--out", str(tmp_path / "x"), "--per-prompt", "2",
                  "--min-pass-rate", "0.8", "--max-pass-rate", "0.5")  # fmt: skip
    assert bad.returncode == 2 and "min_pass_rate 0.8 is above max_pass_rate 0.5" in bad.stderr


def test_shipped_presets_are_valid() -> None:
    from distill.filters.stage import load_preset

    for path in sorted((REPO / "filters").glob("*.yaml")):
        assert load_preset(path).name == path.stem  # a judge's teacher YAML is found and can judge


def test_pipeline_filter_and_select_steps(tmp_path) -> None:
    from tests.conftest import read_rows, run_cli, write_jsonl

    rows = [
        trace(id=f"p{p}", sample=s, content="It is \\boxed{\\frac{1}{2}}." + " ok" * s)
        for p in range(3)
        for s in range(3)
    ]
    rows[0]["content"] = "It is \\boxed{7}."
    write_jsonl(tmp_path / "traces.jsonl", rows)
    (tmp_path / "p.yaml").write_text(
        "name: t\nsteps:\n"
        "  - {name: verdicts, stage: filter, input: traces.jsonl, options: {preset: "
        + str(REPO / "filters/r1.yaml")
        + "}}\n"
        "  - {name: kept, stage: select, input: verdicts, options: {per_prompt: 2, seed: 3}}\n"
    )
    r = run_cli("run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(read_rows(tmp_path / "run" / "verdicts")) == 9
    kept = read_rows(tmp_path / "run" / "kept")
    assert len(kept) == 6 and (rows[0]["id"], 0) not in {(k["id"], k["sample"]) for k in kept}
    (tmp_path / "p.yaml").write_text((tmp_path / "p.yaml").read_text().replace("per_prompt: 2", "per_promt: 2"))
    r = run_cli("run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "run2"))
    assert r.returncode == 2 and "steps[1].options: per_promt: unknown key; did you mean 'per_prompt'?" in r.stderr
