"""`distill prompts`: ingest adapters, dedup (exact + near), decontamination, provenance of every removal."""

from __future__ import annotations

import csv
import json
import random
import signal
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.errors import UserError
from distill.prompts.config import DedupConfig, PromptsConfig
from distill.sources.mapping import SourceMapping
from distill.store import read_manifest
from tests.conftest import curate, read_rejects, read_rows, read_side, run_cli, write_jsonl

BASE = (
    "A bag holds {a} red marbles and {b} blue marbles. Two marbles are drawn at random without replacement. "
    "What is the probability that both marbles have the same color? Express the answer as a common fraction."
)
LATEX = r"Let $f(x) = \dfrac{{{a}x^2 + {b}}}{{x - 1}}$. Compute $\left( f({a}) \right)^2$ and simplify it fully."


def _removed(out: Path) -> list[dict]:
    return read_side(out, "removed")


def _run(tmp_path: Path, rows: list, cfg: PromptsConfig | None = None, bench: list | None = None) -> Path:
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    benchmarks = [str(write_jsonl(tmp_path / "aime.jsonl", bench))] if bench else None
    out = tmp_path / "out"
    curate([str(inp)], out, cfg or PromptsConfig(), benchmarks=benchmarks, workers=1, show_progress=False)
    return out


def _templated(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"problem": BASE.format(a=rng.randint(2, 999), b=rng.randint(2, 999)), "domain": "math"} for _ in range(n)]


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (lambda p: p.replace(" ", "   ").replace(". ", ".\n\n"), "exact_duplicate"),  # re-spaced
        (lambda p: p.upper(), "exact_duplicate"),  # re-cased
        (lambda p: "Please solve: " + p.replace("What is", "Find").replace("at random", "randomly"), "near_duplicate"),
        (lambda p: p.replace("holds", "contains").replace("common fraction", "reduced fraction"), "near_duplicate"),
    ],
    ids=["re-spaced", "re-cased", "reworded", "reworded-2"],
)
def test_duplicates_are_caught_and_the_first_occurrence_stays(tmp_path: Path, variant, reason: str) -> None:
    rows = _templated(50)
    original = rows[10]["problem"]
    rows.append({"problem": variant(original), "domain": "math"})
    out = _run(tmp_path, rows)
    kept = read_rows(out)
    assert [r["problem"] for r in kept] == [r["problem"] for r in rows[:50]]  # the first occurrence stays
    [gone] = _removed(out)
    assert gone["problem"] == variant(original)  # the stored text is never normalized
    assert gone["reason"] == reason
    assert gone["matched_id"] == kept[10]["id"] and gone["matched_source"] == "in"
    assert (gone["similarity"] == 1.0) if reason == "exact_duplicate" else (0.65 <= gone["similarity"] < 1.0)


def test_latex_respaced_duplicates_are_exact(tmp_path: Path) -> None:
    a = LATEX.format(a=7, b=3)
    b = r"Let $f(x)=\frac{7x^{2}+3}{x-1}$ .  Compute $(f(7))^2$ and simplify it fully."
    c = r"Let $ f ( x ) = \tfrac{7 x^2 + 3}{ x - 1 } $. Compute $\big( f(7) \big) ^ 2$ and simplify it fully."
    out = _run(tmp_path, [{"problem": a}, {"problem": b}, {"problem": c}])
    assert len(read_rows(out)) == 1 or [r["reason"] for r in _removed(out)] == ["exact_duplicate", "exact_duplicate"]
    removed = _removed(out)
    assert {r["problem"] for r in removed} == {b, c} or {r["problem"] for r in removed} == {c}


def test_same_template_other_numbers_are_distinct_problems(tmp_path: Path) -> None:
    rows = _templated(300, seed=1) + [{"problem": LATEX.format(a=a, b=a + 1)} for a in range(2, 100)]
    out = _run(tmp_path, rows)
    assert len(read_rows(out)) == len({r["problem"] for r in rows})
    assert _removed(out) == []


def test_without_the_numbers_rule_templates_collapse(tmp_path: Path) -> None:
    """The rule is what keeps them: switched off, long templates with one other number are near duplicates."""
    rows = [{"problem": BASE.format(a=5, b=b)} for b in range(10, 20)]
    out = _run(tmp_path, rows, PromptsConfig(dedup=DedupConfig(same_numbers=False)))
    assert len(read_rows(out)) < len(rows)


def test_benchmark_problem_embedded_in_a_longer_prompt_is_caught(tmp_path: Path) -> None:
    leak = "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20 holds exactly."
    rows = _templated(40)
    rows.insert(7, {"problem": f"I found this in a practice set, please help me.\n\n{leak.upper()}\n\nShow all steps."})
    rows.insert(20, {"problem": "Find the number of ordered pairs of integers in the plane."})  # shares few words
    bench = [{"id": "2024-I-5", "problem": leak, "answer": "231"}, {"id": "2024-I-6", "problem": "Other item."}]
    out = _run(tmp_path, rows, bench=bench)
    [gone] = _removed(out)
    assert gone["reason"] == "contaminated"
    assert gone["matched_id"] == "2024-I-5" and gone["matched_source"] == "aime"
    assert gone["similarity"] == pytest.approx(1.0)
    assert len(read_rows(out)) == 41


def test_short_items_are_matched_whole_and_one_shared_phrase_is_not_a_copy(tmp_path: Path) -> None:
    rows = [{"problem": "Quick one: compute 17 times 23 please, then explain."}, {"problem": BASE.format(a=1, b=2)}]
    bench = [{"problem": "Compute 17 times 23."}]  # 4 words: matched whole
    out = _run(tmp_path, rows, bench=bench)
    assert [r["reason"] for r in _removed(out)] == ["contaminated"]
    # One 8-word run of a 35-word item: not a copy of it (coverage rule); open-r1's rule removes it.
    rows = [{"problem": "In a game, two marbles are drawn at random without replacement. What is the chance we win?"}]
    item = [{"problem": BASE.format(a=3, b=4)}]
    assert _removed(_run(tmp_path / "coverage", rows, bench=item)) == []
    cfg = PromptsConfig.model_validate({"decontaminate": {"rule": "open-r1"}})
    out = _run(tmp_path / "open-r1", rows, cfg, bench=item)
    assert [r["reason"] for r in _removed(out)] == ["contaminated"]


_row = st.fixed_dictionaries(
    {"problem": st.sampled_from([BASE.format(a=1, b=2), BASE.format(a=1, b=3), LATEX.format(a=2, b=3), "x"])},
    optional={"domain": st.sampled_from(["math", "science", "poetry"])},
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(_row, st.just("{broken"), st.just({"answer": 1})), min_size=1, max_size=40))
def test_kept_plus_removed_plus_rejected_equals_input(tmp_path_factory, rows: list) -> None:
    tmp = tmp_path_factory.mktemp("p")
    objects = [r for r in rows if isinstance(r, dict)][:20]
    if objects and not any("problem" in r for r in objects):  # no layout: the file stops, nothing is written
        with pytest.raises(UserError, match="match no known layout"):
            _run(tmp, rows)
        assert not (tmp / "out").exists()
        return
    # rows a prompt can be made of: a problem and a known domain (or none); a stage never ends silently with none
    usable = [r for r in rows if isinstance(r, dict) and "problem" in r and r.get("domain") != "poetry"]
    first = rows[:200]
    # the first rows' schema failures by reason (a missing problem, an unknown domain): one reason for most of
    # them stops the file before anything is written
    reasons = Counter(("missing" if "problem" not in r else "domain") for r in first
                      if isinstance(r, dict) and ("problem" not in r or r.get("domain") == "poetry"))  # fmt: skip
    if not usable or max(reasons.values(), default=0) * 2 > len(first):
        with pytest.raises(UserError, match=r"fail the prompt record|none out"):
            _run(tmp, rows)
        assert not read_manifest(tmp / "out") or not read_manifest(tmp / "out").complete
        return
    out = _run(tmp, rows)
    kept, removed, rejected = read_rows(out), _removed(out), read_rejects(out)
    assert len(kept) + len(removed) + len(rejected) == len(rows)
    assert len({r["id"] for r in kept}) == len(kept)  # no two kept rows are the same problem
    kept_ids = {r["id"] for r in kept}
    assert all(r["matched_id"] in kept_ids or r["reason"] != "exact_duplicate" for r in removed)


# --- ingest adapters -----------------------------------------------------------------------------------


def test_csv_parquet_saved_dataset_and_load_dataset_inputs(tmp_path: Path) -> None:
    import datasets

    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["problem", "answer"])
        w.writeheader()
        w.writerow({"problem": 'A CSV problem, with a comma and a "quote".', "answer": "3"})
        w.writerow({"problem": "Second CSV problem\nspanning two lines.", "answer": "4"})
    pq.write_table(pa.table({"problem": ["A Parquet problem."], "answer": ["5"], "level": [3]}), tmp_path / "b.parquet")
    datasets.Dataset.from_dict({"problem": ["A saved dataset problem."]}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "hub").mkdir()
    write_jsonl(tmp_path / "hub" / "train.jsonl", [{"problem": "A problem loaded by load_dataset."}])
    specs = [str(tmp_path / "a.csv"), str(tmp_path / "b.parquet"), str(tmp_path / "saved"), f"hf:{tmp_path / 'hub'}"]
    curate(specs, tmp_path / "out", PromptsConfig(), workers=1, show_progress=False)
    kept = read_rows(tmp_path / "out")
    assert [(r["problem"], r["source"]) for r in kept] == [
        ('A CSV problem, with a comma and a "quote".', "a"),
        ("Second CSV problem\nspanning two lines.", "a"),
        ("A Parquet problem.", "b"),
        ("A saved dataset problem.", "saved"),
        ("A problem loaded by load_dataset.", "hub"),
    ]
    assert all(r["language"] == "en" for r in kept)
    assert json.loads(kept[2]["meta"]) == {"level": 3}  # a column the record does not know is kept in meta


def test_column_mapping_boxed_answers_and_multiple_choice(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "numina.jsonl",
        [
            {"question": "Compute 6 times 7.", "solution": "We have 6*7 = \\boxed{42}."},
            {
                "question": "Find x with 2x = \\frac{1}{2}.",
                "solution": "So x = \\boxed{\\frac{1}{4}} as $\\boxed{x}$ no: \\boxed{\\frac14}",
            },
            {"question": "No box here.", "solution": "It is 3."},
        ],
    )
    write_jsonl(
        tmp_path / "gpqa.jsonl",
        [
            {
                "Question": "Which particle carries the electromagnetic force?",
                "Correct": "photon",
                "W1": "gluon",
                "W2": "W boson",
                "W3": "graviton",
                "Record ID": "rec1",
            }
        ],
    )
    write_jsonl(tmp_path / "mmlu.jsonl", [{"q": "2 + 2 = ?", "options": ["3", "4", "5"], "label": 1}])
    cfg = PromptsConfig(
        sources=[
            SourceMapping(
                match="numina*",
                name="numina",
                columns={"question": "problem", "solution": "answer"},
                answer_from_boxed=True,
                domain="math",
            ),
            SourceMapping(
                match="gpqa*",
                name="gpqa",
                columns={"Question": "problem"},
                choices=["Correct", "W1", "W2", "W3"],
                correct_choice="Correct",
                shuffle_choices=True,
            ),
            SourceMapping(match="mmlu*", columns={"q": "problem", "label": "answer"}, choices="options"),
        ]
    )
    out = tmp_path / "out"
    specs = [str(tmp_path / f) for f in ("numina.jsonl", "gpqa.jsonl", "mmlu.jsonl")]
    curate(specs, out, cfg, workers=1, show_progress=False)
    kept = {r["source"] + ":" + r["problem"].split("\n")[0]: r for r in read_rows(out)}
    assert kept["numina:Compute 6 times 7."]["answer"] == "42"
    assert kept["numina:Find x with 2x = \\frac{1}{2}."]["answer"] == "\\frac14"  # the last box
    assert json.loads(kept["numina:Compute 6 times 7."]["meta"])["solution"].startswith("We have")
    gpqa = kept["gpqa:Which particle carries the electromagnetic force?"]
    letter = gpqa["answer"]
    assert f"{letter}) photon" in gpqa["problem"] and gpqa["domain"] == "science"
    assert json.loads(gpqa["meta"])["Record ID"] == "rec1"
    mmlu = kept["mmlu:2 + 2 = ?"]
    assert mmlu["answer"] == "B" and "A) 3\nB) 4\nC) 5" in mmlu["problem"]
    [rej] = read_rejects(out)
    assert rej["error"].startswith("no_answer") and rej["input"].endswith("numina.jsonl") and rej["row"] == 2


def test_shuffled_choices_are_stable_across_runs(tmp_path: Path) -> None:
    rows = [
        {"Question": f"Pick the right one ({i}).", "Correct": "right", "W1": "a", "W2": "b", "W3": "c"}
        for i in range(20)
    ]
    write_jsonl(tmp_path / "g.jsonl", rows)
    cfg = PromptsConfig(
        sources=[
            SourceMapping(
                columns={"Question": "problem"},
                choices=["Correct", "W1", "W2", "W3"],
                correct_choice="Correct",
                shuffle_choices=True,
            )
        ]
    )
    answers = []
    for k in range(2):
        curate([str(tmp_path / "g.jsonl")], tmp_path / f"o{k}", cfg, workers=1, show_progress=False)
        answers.append([r["answer"] for r in read_rows(tmp_path / f"o{k}")])
    assert answers[0] == answers[1]
    assert len(set(answers[0])) > 1  # not always the same letter


# --- the command, resume, pipelines ----------------------------------------------------------------


def _cli_data(tmp_path: Path) -> tuple[Path, Path]:
    rows = _templated(300, seed=3)
    rows[100] = {"problem": rows[5]["problem"].upper()}
    leak = "Real numbers x and y with x, y > 1 satisfy log_x(y^x) = log_y(x^{4y}) = 10. Find xy."
    rows[150] = {"problem": rows[7]["problem"].replace("holds", "contains").replace("What is", "Find")}
    rows[200] = {"problem": "Tell me: " + leak}
    rows.append({"problem": "Quelle est la capitale de la France ? Réponds en français s'il te plaît, merci beaucoup."})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"problem": leak}])
    return inp, bench


def test_cli_prompts_killed_midway_resumes_to_the_same_output(tmp_path: Path) -> None:
    inp, bench = _cli_data(tmp_path)
    # 8 shards in each pass: kills land in pass 1 and in pass 3
    args = ["prompts", "--input", str(inp), "--decontaminate", str(bench), "--rows-per-shard", "40", "--no-progress"]
    ref = tmp_path / "ref"
    assert run_cli(*args, "--workers", "1", "--out", str(ref)).returncode == 0
    for point in ("manifest_renamed:3", "manifest_renamed:12", "file_renamed:14"):  # pass 1, 3, 3
        out = tmp_path / f"run-{point}"
        r = run_cli(*args, "--workers", "1", "--out", str(out), env={"DISTILL_CRASH_AT": point})
        assert r.returncode == -signal.SIGKILL, r.stderr
        r = run_cli(*args, "--workers", "2", "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert read_rows(out) == read_rows(ref)
        assert _removed(out) == _removed(ref)
        assert not (out / ".work").exists()


def test_cli_prompts_report_and_inspect(tmp_path: Path) -> None:
    inp, bench = _cli_data(tmp_path)
    out = tmp_path / "out"
    r = run_cli("prompts", "--input", str(inp), "--decontaminate", str(bench), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "301 rows in -> 298 out, 3 removed (contaminated 1, exact_duplicate 1, near_duplicate 1)" in r.stderr
    assert "cluster: 1 duplicates of" in r.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["stats"]["report"]["by_source"]["in"]["kept"] == 298
    french = [row for row in read_rows(out) if "capitale" in row["problem"]]
    assert french[0]["language"] == "fr"
    r = run_cli("inspect", str(out))
    assert "removed 3 rows" in r.stdout and "near_duplicate" in r.stdout
    r = run_cli("prompts", "--input", str(inp), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "config differs in benchmarks" in r.stderr


def test_pipeline_prompts_step_and_bad_options(tmp_path: Path) -> None:
    inp, bench = _cli_data(tmp_path)
    p = tmp_path / "p.yaml"
    p.write_text(
        f"name: t\nsteps:\n  - name: prompts\n    stage: prompts\n    input: {inp.name}\n"
        f"    options:\n      decontaminate: {{benchmarks: [{bench.name}]}}\n      dedup: {{threshold: 0.8}}\n"
    )
    r = run_cli("run", str(p), "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "contaminated 1" in r.stderr
    p.write_text(p.read_text().replace("threshold: 0.8", "treshold: 0.8"))
    r = run_cli("run", str(p), "--out", str(tmp_path / "run2"))
    assert r.returncode == 2 and "steps[0].options: dedup.treshold: unknown key; did you mean 'threshold'?" in r.stderr


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs" / "prompts").glob("*.yaml")))
def test_shipped_prompt_configs_are_valid(path: Path) -> None:
    from distill.config import load_config

    load_config(path, PromptsConfig)


def test_a_duplicate_among_many_template_siblings_is_still_found() -> None:
    """Rows whose signatures agree in every band but whose numbers differ (one template, other numbers)
    must not hide a real duplicate: a row is paired with the first row of its bucket, so the numbers
    are part of the bucket key."""
    import numpy as np

    from distill.prompts.dedup import NEAR, decide

    n = 50
    sig = np.tile(np.arange(128, dtype=np.uint32), (n + 1, 1))  # all alike, as template siblings can be
    numbers = np.arange(n + 1, dtype=np.uint64)
    numbers[n] = numbers[30]  # the last row: a duplicate of row 30, same numbers
    d = decide(np.arange(n + 1), sig, numbers, np.full(n + 1, -1), np.zeros(n + 1, np.float32), DedupConfig())
    assert (d.reason[:n] == 0).all()  # the siblings are all kept
    assert d.reason[n] == NEAR and d.matched[n] == 30
