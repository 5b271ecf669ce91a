"""`make efficacy` (pipelines/efficacy.yaml) at a smaller size: both arms built from the same traces with the
same row count, a student per arm and seed, and the comparison table computed from their results. Who wins
needs the full run (README, "Does filtering help?"); here the comparison's arithmetic is checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distill.compare import compare, render
from distill.errors import UserError
from tests.conftest import REPO, read_rows, run_cli


def small_efficacy(tmp_path: Path, out: str = "run") -> Path:
    prompts = (REPO / "data" / "efficacy" / "prompts.jsonl").read_text().splitlines()[:120]
    heldout = (REPO / "data" / "efficacy" / "heldout.jsonl").read_text().splitlines()[:4]
    (tmp_path / "prompts.jsonl").write_text("\n".join(prompts) + "\n")
    (tmp_path / "heldout.jsonl").write_text("\n".join(heldout) + "\n")
    doc = yaml.safe_load((REPO / "pipelines" / "efficacy.yaml").read_text())
    doc["out"] = str(tmp_path / out)
    keep = {"s0", "s1"}  # two seeds are enough to pair them
    doc["steps"] = [s for s in doc["steps"] if not s["name"].endswith("-s2")]
    for step in doc["steps"]:
        opts = step["options"]
        if step["stage"] == "prompts":
            step["input"] = str(tmp_path / "prompts.jsonl")
            opts["decontaminate"]["benchmarks"] = [str(tmp_path / "heldout.jsonl")]
        if step["stage"] == "generate":
            opts["teacher"] = str(REPO / "configs" / "teacher" / "synthetic-noisy.yaml")
        if step["stage"] == "filter":
            opts["preset"] = str(REPO / opts["preset"].removeprefix("../"))
        if step["stage"] == "mix":
            opts["sources"][0]["quota"] = 80
        if step["stage"] == "train":
            opts.update(student=str(REPO / "students" / "tiny.yaml"), max_steps=8)
        if step["stage"] == "eval":
            opts.update(benchmark=str(tmp_path / "heldout.jsonl"), samples=2, max_tokens=16)
        if step["stage"] == "compare":
            step["input"] = [i for i in step["input"] if i.rsplit("-", 1)[1] in keep]
            opts["arms"] = {arm: [n for n in ns if n.rsplit("-", 1)[1] in keep] for arm, ns in opts["arms"].items()}
    path = tmp_path / f"efficacy-{out}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_efficacy_arms_differ_only_in_the_filter_and_are_compared(tmp_path: Path) -> None:
    r = run_cli("run", str(small_efficacy(tmp_path)), "--no-progress", timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    run = tmp_path / "run"
    filtered, unfiltered = read_rows(run / "sft-filtered"), read_rows(run / "sft-unfiltered")
    assert len(filtered) == len(unfiltered) == 80
    keep = {f"{v['id']}:{v['sample']}": v["keep"] for v in read_rows(run / "verdicts-r1")}  # SFT ids: id:sample
    # the control arm holds traces the R1 filter rejects (about half of this teacher's), the filtered arm none
    assert all(keep[f["id"]] for f in filtered)
    assert 0 < sum(not keep[u["id"]] for u in unfiltered) < 80
    for arm in (filtered, unfiltered):  # one trace per prompt
        assert len({m["id"].split(":")[0] for m in arm}) == 80
    seeds = {json.loads((run / f"{arm}-s{i}" / "distill_train.json").read_text())["student"]["seed"]
             for arm in ("filtered", "unfiltered") for i in (0, 1)}  # fmt: skip
    assert seeds == {0, 1}
    doc = json.loads((run / "compare" / "comparison.json").read_text())
    for arm in ("filtered", "unfiltered"):
        results = [json.loads((run / f"eval-{arm}-s{i}" / "results.json").read_text()) for i in (0, 1)]
        for metric in ("pass@1", "boxed_pct", "closed_think_pct"):
            values = [r["metrics"][metric] for r in results]
            assert doc["table"][arm][metric]["values"] == values
            assert doc["table"][arm][metric]["mean"] == round(sum(values) / 2, 2)
    md = (run / "compare" / "comparison.md").read_text()
    assert md.startswith("| arm (2 seeds) |") and "filtered leads on the mean:" in r.stderr
    gap = doc["paired"]["against"]["unfiltered"]
    assert "filtered - unfiltered pass@1:" in md and (gap["seeds"], gap["problems"]) == (2, 4)
    means = [doc["table"][arm]["pass@1"]["mean"] for arm in ("filtered", "unfiltered")]
    assert abs(gap["gap"] - (means[0] - means[1])) < 0.02  # the paired mean is the difference of pass@1

    # The same pipeline again, from scratch: the same weights, samples and numbers (deterministic training,
    # fixed threads, seeded sampling).
    again = run_cli("run", str(small_efficacy(tmp_path, "again")), "--no-progress", timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    for step in ("filtered-s0", "unfiltered-s1"):
        assert (run / step / "model.safetensors").read_bytes() == (tmp_path / "again" / step /
                                                                  "model.safetensors").read_bytes()  # fmt: skip
    doc2 = json.loads((tmp_path / "again" / "compare" / "comparison.json").read_text())
    assert doc2["table"] == doc["table"] and doc2["paired"] == doc["paired"]


def _results(**metrics: float) -> dict:
    return {"metrics": metrics, "model": {"path": "x"}}


def test_comparison_by_hand() -> None:
    doc = compare(
        {
            "a": [_results(acc=70.0, boxed=100.0), _results(acc=60.0, boxed=90.0), _results(acc=80.0, boxed=95.0)],
            "b": [_results(acc=50.0, boxed=80.0), _results(acc=65.0, boxed=85.0), _results(acc=55.0, boxed=99.0)],
        },
        ["acc", "boxed"],
        expect_better="a",
    )
    assert doc["table"]["a"]["acc"] == {"mean": 70.0, "std": 10.0, "min": 70.0 - 10, "max": 80.0,
                                        "values": [70.0, 60.0, 80.0]}  # fmt: skip
    assert doc["leads"] == {"acc": {"on_mean": True, "seeds_won": 2}, "boxed": {"on_mean": True, "seeds_won": 2}}
    assert doc["holds"] is True
    assert render(doc)[2] == "| a | 70.0 ± 10.0 (60.0-80.0) | 95.0 ± 5.0 (90.0-100.0) |"
    lower = compare({"a": [_results(truncation_rate=0.2)], "b": [_results(truncation_rate=0.1)]},
                    ["truncation_rate"], expect_better="a")  # fmt: skip
    assert lower["holds"] is False and lower["leads"]["truncation_rate"]["seeds_won"] == 0
    with pytest.raises(UserError, match="no 'nope'"):
        compare({"a": [_results(acc=1.0)], "b": [_results(acc=2.0)]}, ["nope"])


def test_unpaired_arms_are_refused_in_one_line(tmp_path: Path) -> None:
    path = small_efficacy(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["steps"][-1]["options"]["arms"]["unfiltered"].pop()
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = run_cli("run", str(path), "--dry-run")
    assert r.returncode == 2 and "same number of eval steps" in r.stderr and "Traceback" not in r.stderr


def test_paired_gap_by_hand() -> None:
    from distill.compare import paired_gap, sign_test

    # 2 seeds x 3 problems. Differences (points): seed 0: +100, 0, -50; seed 1: +50, 0, -50 -> mean +8.33.
    ours = [{"a": 1.0, "b": 0.5, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 0.5}]
    theirs = [{"a": 0.0, "b": 0.5, "c": 0.5}, {"a": 0.5, "b": 1.0, "c": 1.0}]
    g = paired_gap(ours, theirs)
    assert g["gap"] == 8.33 and (g["seeds"], g["problems"]) == (2, 3)
    assert g["sign_test"] == {"better": 1, "worse": 1, "ties": 1, "p": 1.0}
    assert g["ci95"][0] < g["gap"] < g["ci95"][1] and g["ci95"] == paired_gap(ours, theirs)["ci95"]  # seeded
    # the exact binomial: 9 of 10 problems better -> p = 2 * 11 / 1024
    assert sign_test(9, 1) == 2 * 11 / 1024 and sign_test(0, 0) == 1.0
    # every problem better on every seed: the interval excludes 0
    assert paired_gap([{"a": 1.0, "b": 1.0}], [{"a": 0.0, "b": 0.5}])["ci95"][0] > 0
