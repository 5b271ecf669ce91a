"""The non-reasoning recipe: the CoT rule, self-cognition templates, answers replayed offline, the pipeline's
dry run, and an offline run through to the mix with its quotas met."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from distill.nonreasoning import route, self_cognition
from distill.records import RECORDS
from tests.conftest import REPO, read_rows, run_cli, write_jsonl

RULE = {"cot_tasks": ["writing", "factual_qa"], "trivial_max_chars": 24,
        "trivial_patterns": [r"(?i)^\W*(hi|hello|hey|thanks|thank you|good (morning|evening|night))\b"]}  # fmt: skip


def prompts(*rows: tuple[str, str, str | None]) -> pa.RecordBatch:
    data = [{"id": str(i), "source": "s", "domain": "general", "problem": p, "language": "en",
             "meta": json.dumps({"task": t, **({"target_language": lang} if lang else {})})}
            for i, (p, t, lang) in enumerate(rows)]  # fmt: skip
    return pa.Table.from_pylist(data, schema=RECORDS["prompt"].schema).to_batches()[0]


def test_the_rule_gives_a_chain_of_thought_only_where_it_helps() -> None:
    batch = prompts(
        ("Write a short poem about the sea at night.", "writing", None),
        ("Hello there, nice to meet you today!", "writing", None),  # a greeting, whatever its task says
        ("thanks", "factual_qa", None),  # trivial: short
        ("Who wrote the novel Pride and Prejudice?", "factual_qa", None),
        ('Translate into French: "Where is the station?"', "translation", "fr"),
    )
    cot = route(batch, want="cot", **RULE).to_pylist()
    none = route(batch, want="none", **RULE).to_pylist()
    assert [r["id"] for r in cot] == ["0", "3"] and [r["id"] for r in none] == ["1", "2", "4"]
    assert none[2]["language"] == "fr"  # a translation's answer is held to its target language


def test_self_cognition_templates_are_filled_and_checked() -> None:
    rows = [{"problem": "Who are you?", "content": "I am {name}, made by {maker}.", "language": "en"}]
    out = self_cognition(pa.Table.from_pylist(rows).to_batches()[0], name="Tiny-R1", maker="Acme").to_pylist()
    assert out[0]["content"] == "I am Tiny-R1, made by Acme." and out[0]["source"] == "self-cognition"
    bad = [{"problem": "Who are you?", "content": "I am {nmae}."}]
    with pytest.raises(ValueError, match=r"unknown placeholder \{nmae\}"):
        self_cognition(pa.Table.from_pylist(bad).to_batches()[0], name="x", maker="y")


def test_the_recipes_dry_run_costs_the_api_and_meets_the_quota() -> None:
    r = run_cli("run", "pipelines/non-reasoning.yaml", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert re.search(r"cot-prompts\s+function\s+~154,000 rows \(plan.shares.cot-prompts 70%\)", out)
    assert re.search(r"cot-answers\s+generate\s+154,000 requests .*~\$\d+ at the teacher's prices", out)
    assert re.search(r"verdicts\s+filter\s+one verdict per trace; ~209,000 kept", out)  # both routes' answers
    assert re.search(r"sft\s+mix\s+200,000 SFT rows", out) and "of hosted API" in out
    big = run_cli("run", "pipelines/r1-800k.yaml", "--dry-run")
    assert big.returncode == 0 and "non-reasoning not found: assumed to fill" in big.stdout + big.stderr


def test_offline_run_through_to_the_mix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run_cli("run", "pipelines/non-reasoning-demo.yaml", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "sft" / "_manifest.json").read_text())
    sources = manifest["stats"]["mix"]["sources"]
    assert {n: (s["taken"], s["quota"]) for n, s in sources.items()} == {
        "instructions": (70, 70), "self-cognition": (10, 10)}  # fmt: skip
    funnel = json.loads((out / "verdicts" / "_manifest.json").read_text())["stats"]["funnel"]
    assert {k: v for k, v in funnel["by_reason"].items() if k != "kept"} == {
        "repetition": 1, "unclosed_think": 1, "language_mismatch": 1}  # fmt: skip
    mismatch = [v for v in read_rows(out / "verdicts") if v["reject_reason"] == "language_mismatch"]
    assert mismatch[0]["language"] == "de" and mismatch[0]["problem"].startswith("Translate into German")

    by_user = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in read_rows(out / "sft")}
    thought = {u: a.split("</think>")[0].removeprefix("<think>").strip() for u, a in by_user.items()}
    poems = [u for u in by_user if u.startswith("Write a four-line poem")]
    greetings = [u for u in by_user if u.lower().startswith(("hello", "hi", "hey", "thanks", "good "))]
    translations = [u for u in by_user if u.startswith("Translate into")]
    assert poems and greetings and translations
    assert all(thought[u] for u in poems)  # a chain of thought where it helps
    assert not any(thought[u] for u in greetings + translations)  # none for "hello", none for a translation
    selves = [a for u, a in by_user.items() if u in ("Who are you?", "Who made you?", "你是谁？", "Who created you?",
              "What is your name?", "Are you ChatGPT?", "Are you a human?", "Introduce yourself.", "What can you do?",
              "Which company developed you?", "What model are you?", "你叫什么名字？")]  # fmt: skip
    assert len(selves) == 10 and all("distill-tiny" in a and "Distill Demo Lab" in a for a in selves)
    assert not any("{name}" in a or "{maker}" in a for a in by_user.values())


def test_replay_answers_what_it_has_and_fails_the_rest(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "answers.jsonl", [{"problem": "Say hi.", "content": "Hi!"}])
    (tmp_path / "teacher.yaml").write_text("backend: replay\nmodel: answers.jsonl\nsamples: 1\n")
    write_jsonl(tmp_path / "prompts.jsonl", [{"problem": "Say hi."}, {"problem": "Say bye."}])
    args = ("generate", "--input", str(tmp_path / "prompts.jsonl"), "--teacher", str(tmp_path / "teacher.yaml"),
            "--out", str(tmp_path / "traces"), "--no-progress")  # fmt: skip
    r = run_cli(*args)
    assert r.returncode == 0 and "(1 failed)" in r.stderr and "request_failed 1" in r.stderr, r.stderr
    both = [{"problem": "Say hi.", "content": "Hi!"}, {"problem": "Say bye.", "content": "Bye!"}]
    write_jsonl(tmp_path / "answers.jsonl", both)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert sorted(x["content"] for x in read_rows(tmp_path / "traces")) == ["Bye!", "Hi!"]
    assert (REPO / "configs" / "teacher" / "replay-demo.yaml").exists()
