"""`distill view`'s server, through HTTP: what it counts, filters, finds and marks, checked against the rows read
straight from the Parquet shards; and what it refuses (paths out of the given directories, any write).

The page itself, in a real browser, is tested in tests/test_view_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from distill.view import table as table_mod
from distill.view.server import make_server
from tests.conftest import DISTILL, REPO, read_rows, read_side, run_cli
from tests.test_sandbox import as_unprivileged


def get(base: str, path: str, headers: dict[str, str] | None = None, method: str = "GET", **params) -> tuple[int, dict]:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
            return r.status, json.loads(body) if body and r.headers.get_content_type() == "application/json" else {}
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body else {}


def every_page(base: str, ds: str, **params) -> list[dict]:
    rows, offset = [], 0
    while True:
        status, page = get(base, "/api/rows", ds=ds, offset=offset, limit=200, **params)
        assert status == 200, page
        if not page["done"] and len(page["rows"]) < 200:
            continue  # a search still going: the same page again, as the page does
        rows += page["rows"]
        offset += 200
        if page["done"] and offset >= page["total"]:
            return rows


# --- what it shows --------------------------------------------------------------------------------------


def test_the_datasets_are_found_in_pipeline_order_and_linked(viewer: str) -> None:
    _, cat = get(viewer, "/api/datasets")
    keys = [d["key"] for d in cat["datasets"]]
    demo = [k for k in keys if k in ("demo/prompts", "demo/traces", "demo/verdicts", "demo/kept", "demo/sft")]
    assert demo == ["demo/prompts", "demo/traces", "demo/verdicts", "demo/kept", "demo/sft"]
    by_key = {d["key"]: d for d in cat["datasets"]}
    assert by_key["demo/verdicts"]["inputs"] == ["demo/traces"] and "demo/kept" in by_key["demo/verdicts"]["readers"]
    assert by_key["demo/sft"]["inputs"] == ["demo/kept"]


def test_the_funnel_counts_what_the_filter_and_prompts_stages_recorded(viewer: str, view_runs: Path) -> None:
    _, stats = get(viewer, "/api/stats", ds="demo/verdicts")
    manifest = json.loads((view_runs / "verdicts" / "_manifest.json").read_text())
    assert stats["funnel"] == manifest["stats"]["funnel"]["by_reason"]
    assert stats["by_domain"] == manifest["stats"]["funnel"]["by_domain"]
    # prompts: kept rows, the removed by reason (_removed/), the unreadable input rows by code (_rejects/)
    _, stats = get(viewer, "/api/stats", ds="demo/prompts")
    report = json.loads((view_runs / "prompts" / "_manifest.json").read_text())["stats"]
    expected = {"kept": report["rows_out"], **report["report"]["removed"], **report["rejects_by_code"]}
    assert stats["funnel"] == {k: v for k, v in expected.items() if v}
    assert stats["by_part"] == {"data": report["rows_out"], "removed": sum(report["report"]["removed"].values()),
                                "rejects": report["rejected"]}  # fmt: skip
    lengths = stats["lengths"]
    assert sum(lengths["kept"]) + sum(lengths["other"]) == sum(stats["by_part"].values())


@pytest.mark.parametrize("reason", ["repetition", "language_mix", "wrong_answer", "kept"])
def test_filtering_by_a_reason_lists_exactly_those_rows(viewer: str, view_runs: Path, reason: str) -> None:
    rows = read_rows(view_runs / "verdicts")
    expected = [i for i, r in enumerate(rows) if (r["reject_reason"] or "kept") == reason]
    shown = every_page(viewer, "demo/verdicts", reason=reason)
    assert [r["i"] for r in shown] == expected and expected
    assert {r["reason"] for r in shown} == {reason}
    assert [r["id"] for r in shown] == [rows[i]["id"] for i in expected]


def test_filters_combine_and_removed_rows_are_rows(viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    got = every_page(viewer, "demo/verdicts", keep="0")
    assert [r["i"] for r in got] == [i for i, r in enumerate(rows) if not r["keep"]] and got
    removed = read_side(view_runs / "prompts", "removed")
    dup = every_page(viewer, "demo/prompts", reason="exact_duplicate")
    assert [r["id"] for r in dup] == [r["id"] for r in removed if r["reason"] == "exact_duplicate"]
    assert {r["part"] for r in dup} == {"removed"} and "matches" in dup[0]["detail"]
    bad = every_page(viewer, "demo/prompts", part="rejects")
    assert len(bad) == len(read_side(view_runs / "prompts", "rejects")) and all(r["where"] for r in bad)


def test_search_finds_every_row_with_the_text_and_answers_a_page_at_a_time(
    viewer: str, view_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_rows(view_runs / "verdicts")
    word = "让我们"  # the synthetic teacher's Chinese passages
    expected = [i for i, r in enumerate(rows) if any(word in (r[c] or "") for c in ("problem", "reasoning", "content"))]
    assert expected
    assert [r["i"] for r in every_page(viewer, "demo/verdicts", q=word)] == expected
    # a search over a large directory answers with what it found within its time budget, and goes on
    monkeypatch.setattr(table_mod, "SEARCH_BUDGET_S", 0.0)
    status, first = get(viewer, "/api/rows", ds="demo/verdicts", q="WAIT, LET ME", limit=5)
    assert status == 200 and not first["done"] and first["searched"] < 1
    found = every_page(viewer, "demo/verdicts", q="WAIT, LET ME")  # case-insensitive
    assert [r["i"] for r in found] == [i for i, r in enumerate(rows) if "wait, let me" in (r["reasoning"] or "").lower()
                                       or "wait, let me" in (r["content"] or "").lower()]  # fmt: skip


def test_sorting_by_length(viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    longest = every_page(viewer, "demo/verdicts", sort="length", order="desc", reason="kept")
    lengths = [r["length"] for r in longest]
    assert lengths == sorted((r["completion_tokens"] for r in rows if r["keep"]), reverse=True)
    _, page = get(viewer, "/api/rows", ds="demo/verdicts", sort="length", limit=1)
    assert page["rows"][0]["length"] == min(r["completion_tokens"] for r in rows)


def _first(viewer: str, ds: str, reason: str) -> dict:
    _, page = get(viewer, "/api/rows", ds=ds, reason=reason, limit=1)
    _, row = get(viewer, "/api/row", ds=ds, i=page["rows"][0]["i"])
    return row


def _marked(row: dict, kind: str) -> list[str]:
    fields = row["view"]["fields"]
    return [fields[m["field"]][m["start"] : m["end"]] for m in row["view"]["marks"] if m["kind"] == kind]


def test_a_row_shows_its_parts_apart_and_marks_what_its_verdict_is_about(viewer: str) -> None:
    row = _first(viewer, "demo/verdicts", "repetition")
    repeated = _marked(row, "repeat")
    reasoning = row["view"]["fields"]["reasoning"]
    assert len(repeated) > 5 and all(reasoning.count(line) > 5 for line in repeated)  # preset: max_line_repeats 5
    assert "</think>" not in reasoning and row["view"]["notes"]["reasoning"] == ["repetition"]

    row = _first(viewer, "demo/verdicts", "language_mix")
    foreign = _marked(row, "foreign")
    assert foreign and all(re.search(r"[\u4e00-\u9fff]", f) for f in foreign)
    assert not re.search(
        r"[\u4e00-\u9fff]", re.sub("|".join(map(re.escape, foreign)), "", row["view"]["fields"]["reasoning"])
    )

    row = _first(viewer, "demo/verdicts", "wrong_answer")
    (answer,) = _marked(row, "answer")
    assert answer.startswith("\\boxed{") and row["row"]["reject_detail"] in row["view"]["notes"]["answer"][0]

    row = _first(viewer, "demo/verdicts", "code_block")
    assert all(c.startswith("```") for c in _marked(row, "code")) and _marked(row, "code")

    row = _first(viewer, "demo/verdicts", "unclosed_think")
    assert row["view"]["fields"]["reasoning"] and not row["view"]["fields"]["answer"]
    assert _marked(row, "cut")

    row = _first(viewer, "demo/prompts", "contaminated")
    in_prompt, in_benchmark = sorted(row["view"]["marks"], key=lambda m: m["field"] != "problem")
    shown = row["view"]["fields"]
    assert in_prompt["field"] == "problem" and in_benchmark["field"] == "matched_text"
    for mark in (in_prompt, in_benchmark):  # the words of the shared span, found in each original text
        text = shown[mark["field"]][mark["start"] : mark["end"]]
        assert re.findall(r"[^\W_]+", text.lower()) == row["row"]["matched_span"].split(), text
    assert shown["problem"][in_prompt["start"] :].startswith("Find the number of ordered pairs")


def test_a_row_links_to_the_same_prompt_and_sample_in_the_other_stages(viewer: str, view_runs: Path) -> None:
    row = _first(viewer, "demo/verdicts", "kept")
    rid, sample = row["row"]["id"], row["row"]["sample"]
    where = {(link["ds"], link["i"]) for link in row["links"]}
    traces, prompts = read_rows(view_runs / "traces"), read_rows(view_runs / "prompts")
    t = next(i for i, r in enumerate(traces) if r["id"] == rid and r["sample"] == sample)
    p = next(i for i, r in enumerate(prompts) if r["id"] == rid)
    assert ("demo/traces", t) in where and ("demo/prompts", p) in where
    for ds, i in where:  # every link leads to the same prompt and, where there are samples, the same one
        _, linked = get(viewer, "/api/row", ds=ds, i=i)
        assert linked["row"]["id"] in (rid, f"{rid}:{sample}")
        assert linked["row"].get("sample", sample) == sample


def test_the_prompt_view_holds_all_k_samples_with_their_verdicts(viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    rid = next(r["id"] for r in rows if r["reject_reason"] == "language_mix")
    _, p = get(viewer, "/api/prompt", id=rid)
    group = next(g for g in p["groups"] if g["ds"] == "demo/verdicts")
    mine = [r for r in rows if r["id"] == rid]
    assert [it["sample"] for it in group["items"]] == [r["sample"] for r in mine] and len(mine) == 4
    assert [it["reason"] for it in group["items"]] == [r["reject_reason"] for r in mine]
    assert [g["ds"] for g in p["groups"]][:3] == ["demo/prompts", "demo/traces", "demo/verdicts"]
    assert get(viewer, "/api/prompt", id="no-such-id")[0] == 404


def test_real_r1_traces_split_and_mark_their_answers(viewer: str, real: Path) -> None:
    _, page = get(viewer, "/api/rows", ds="demo/real-verdicts", limit=40)
    assert page["total"] == 40 and {r["part"] for r in page["rows"]} == {"data"}
    for preview in page["rows"][:6]:
        _, row = get(viewer, "/api/row", ds="demo/real-verdicts", i=preview["i"])
        fields = row["view"]["fields"]
        assert "\\frac" in fields["reasoning"] + fields["answer"] or "\\" in fields["reasoning"]
        (answer,) = _marked(row, "answer")
        assert answer.startswith("\\boxed") and preview["answer"] in answer


def test_a_row_reached_from_a_list_steps_through_that_list(viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    loops = [i for i, r in enumerate(rows) if r["reject_reason"] == "repetition"]
    _, row = get(viewer, "/api/row", ds="demo/verdicts", i=loops[1], reason="repetition")
    assert row["among"] == {"position": 1, "total": len(loops), "done": True, "prev": loops[0], "next": loops[2]}
    longest = sorted(loops, key=lambda i: -rows[i]["completion_tokens"])
    _, row = get(viewer, "/api/row", ds="demo/verdicts", i=longest[0], reason="repetition", sort="length", order="desc")
    assert row["among"]["prev"] is None and row["among"]["next"] == longest[1]
    _, row = get(viewer, "/api/row", ds="demo/verdicts", i=loops[0], reason="kept")  # not in that list
    assert row["among"] is None
    _, row = get(viewer, "/api/row", ds="demo/verdicts", i=loops[0])  # no list: the directory's order
    assert row["among"] is None


def test_an_unfinished_directory_shows_its_finished_shards_and_follows_the_stage(tmp_path: Path, view_runs: Path):
    served = tmp_path / "running"
    shutil.copytree(view_runs / "verdicts", served / "verdicts")
    manifest = served / "verdicts" / "_manifest.json"
    whole = json.loads(manifest.read_text())
    partial = {**whole, "complete": False, "shards": whole["shards"][:2]}
    manifest.write_text(json.dumps(partial))
    server = make_server([served], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _, cat = get(base, "/api/datasets")
        assert cat["datasets"][0]["complete"] is False
        _, page = get(base, "/api/rows", ds="running/verdicts", limit=1)
        assert page["total"] == sum(s["rows"] for s in partial["shards"])
        manifest.write_text(json.dumps(whole))  # the stage finished its other shards
        os.utime(manifest, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        _, page = get(base, "/api/rows", ds="running/verdicts", limit=1)
        assert page["total"] == whole["rows"]
        _, stats = get(base, "/api/stats", ds="running/verdicts")
        assert stats["funnel"] == whole["stats"]["funnel"]["by_reason"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_multiple_choice_answer_is_the_letter_the_checker_read(viewer: str, real: Path) -> None:
    _, page = get(viewer, "/api/rows", ds="demo/real-mcq-verdicts", limit=20)
    assert page["total"] == 20 and {r["part"] for r in page["rows"]} == {"data"}
    for preview in page["rows"][:8]:
        _, row = get(viewer, "/api/row", ds="demo/real-mcq-verdicts", i=preview["i"])
        marked = _marked(row, "answer")
        if preview["reason"] == "no_answer":
            assert not marked and preview["answer"] is None
            continue
        (letter,) = marked
        assert re.fullmatch(r"[A-Z]", preview["answer"]) and f"({preview['answer']})" in letter, (letter, preview)
        assert (preview["reason"] == "kept") == (preview["answer"] == row["row"]["answer"])


def test_the_overview_carries_the_data_card_and_an_evals_metrics(viewer: str, view_runs: Path, tmp_path: Path) -> None:
    _, o = get(viewer, "/api/overview", ds="demo/sft")
    assert o["card"] == (view_runs / "sft" / "README.md").read_text() and o["eval"] is None
    assert get(viewer, "/api/overview", ds="demo/verdicts")[1]["card"] is None
    # eval's scored samples beside its results.json
    run = tmp_path / "eval"
    shutil.copytree(view_runs / "verdicts", run / "scored")
    (run / "results.json").write_text(json.dumps({"metrics": {"pass@1": 22.5}, "model": {"name": "student"}}))
    server = make_server([run], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, o = get(f"http://127.0.0.1:{server.server_address[1]}", "/api/overview", ds="eval/scored")
        assert o["eval"]["metrics"] == {"pass@1": 22.5} and o["eval"]["model"]["name"] == "student"
    finally:
        server.shutdown()
        server.server_close()
    # given the scored directory alone, its parent's results.json is outside what was given: not read
    server = make_server([run / "scored"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, o = get(f"http://127.0.0.1:{server.server_address[1]}", "/api/overview", ds="scored")
        assert o["eval"] is None
    finally:
        server.shutdown()
        server.server_close()


def test_a_broken_shard_fails_its_answers_with_one_line_and_the_server_goes_on(tmp_path: Path, view_runs: Path):
    served = tmp_path / "runs"
    for name in ("prompts", "verdicts"):
        shutil.copytree(view_runs / name, served / name)
    first = json.loads((served / "verdicts" / "_manifest.json").read_text())["shards"][0]["file"]
    (served / "verdicts" / first).write_bytes(b"not parquet at all")
    server = make_server([served], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = get(base, "/api/rows", ds="runs/verdicts")
        assert status == 500 and body["error"].startswith("runs/verdicts: ") and "\n" not in body["error"]
        assert get(base, "/api/rows", ds="runs/prompts")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_traces_that_disagree_with_their_publisher_are_a_filter(tmp_path: Path, real: Path) -> None:
    """A labelled public file (the real MMLU traces, three labels flipped): the filter lists exactly those three."""
    rows = [json.loads(line) for line in (real / "traces_r1distill_qwen14b_mmlu_cued.jsonl").read_text().splitlines()]
    rows = rows[:30]
    for k in (2, 11, 17):
        rows[k]["correct"] = not rows[k]["correct"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli("filter", "--input", str(tmp_path / "in.jsonl"), "--preset", "filters/correct-only.yaml", "--out",
                str(tmp_path / "runs" / "v"), "--no-progress")  # fmt: skip
    assert r.returncode == 0 and "3 disagree" in r.stderr, r.stderr
    server = make_server([tmp_path / "runs"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        found = every_page(base, "runs/v", disagree="1")
        # a plain dump has no sample column: a trace's sample is its row's number in the file
        assert sorted(x["sample"] for x in found) == [2, 11, 17]
        assert len(every_page(base, "runs/v")) == 30
    finally:
        server.shutdown()
        server.server_close()


# --- what it refuses ------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture
def fenced(tmp_path: Path, view_runs: Path):
    """A served folder with a dataset, a symlink to a dataset outside it, a shard that is a symlink out, and
    a manifest whose shard names climb out; plus a secret next to it."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(view_runs / "kept", served / "kept")
    outside = tmp_path / "outside"
    shutil.copytree(view_runs / "verdicts", outside / "verdicts")
    (tmp_path / "secret.txt").write_text("the-secret-content")
    os.symlink(outside / "verdicts", served / "linked")
    sneaky = served / "sneaky"
    shutil.copytree(view_runs / "kept", sneaky)
    first = json.loads((sneaky / "_manifest.json").read_text())["shards"][0]["file"]
    (sneaky / first).unlink()
    os.symlink(outside / "verdicts" / first, sneaky / first)
    climbing = served / "climbing"
    shutil.copytree(view_runs / "kept", climbing)
    m = json.loads((climbing / "_manifest.json").read_text())
    m["shards"][0]["file"] = "../../outside/verdicts/" + m["shards"][0]["file"]
    (climbing / "_manifest.json").write_text(json.dumps(m))
    server = make_server([served], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_paths_outside_the_given_directories_are_refused(fenced) -> None:
    base, _ = fenced
    _, cat = get(base, "/api/datasets")
    assert {d["key"] for d in cat["datasets"]} == {"served/kept", "served/sneaky", "served/climbing"}  # no link out
    assert get(base, "/api/rows", ds="served/kept")[0] == 200
    for ds in ("served/../outside/verdicts", "served/linked", "/etc", "served//etc", "outside/verdicts",
               "served/kept/../../outside/verdicts", "served/kept/_rejects"):  # fmt: skip
        status, body = get(base, "/api/rows", ds=ds)
        assert status == 403 and body["error"].startswith("refused"), (ds, status, body)
    for ds in ("served/sneaky", "served/climbing"):  # shards that lead out are never opened
        status, body = get(base, "/api/rows", ds=ds)
        assert status == 403 and ("outside" in body["error"] or "not a path" in body["error"]), (ds, body)
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2f..%2fsecret.txt",
                 "/static//etc/passwd", "/static/vendor/../../catalog.py"):  # fmt: skip
        raw = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        raw.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        raw.close()
        assert (
            answer.split(b" ")[1] in (b"403", b"404")
            and b"the-secret-content" not in answer
            and b"import" not in answer
        ), path


def test_nothing_can_be_written_through_the_server(fenced, view_runs: Path) -> None:
    base, served = fenced
    before = _tree(served)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/rows", "/api/row", "/static/app.js", "/"):
            status, _ = get(base, path, method=method, ds="served/kept", i=0)
            assert status == 405, (method, path)
    for path in ("/api/rows", "/api/stats", "/api/row", "/api/prompt", "/api/overview"):  # every reader, once
        get(base, path, ds="served/kept", i=0, id="x", q="a", sort="length")
    assert _tree(served) == before  # not a byte changed, no lock or cache file left


_AS_READER = """
import json, sys, threading, urllib.request
from pathlib import Path
from distill.view.server import make_server
server = make_server([Path(sys.argv[1])], port=0)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_address[1]}"
out = {}
for path in ("/api/stats?ds=shared/verdicts", "/api/rows?ds=shared/verdicts&q=wait&limit=5",
             "/api/row?ds=shared/verdicts&i=3&reason=kept", "/api/prompt?id=" + sys.argv[2]):
    with urllib.request.urlopen(base + path) as r:
        out[path.split("?")[0]] = json.loads(r.read())
print(json.dumps({"rows": out["/api/stats"]["rows"], "found": len(out["/api/rows"]["rows"]),
                  "groups": len(out["/api/prompt"]["groups"])}))
"""


def test_an_ordinary_user_reads_a_dataset_they_cannot_write(scratch: Path, view_runs: Path) -> None:
    """A cluster account looking at a teammate's run: the files are readable, the folders not writable (no lock,
    no cache file is needed)."""
    shared = scratch / "shared"
    shutil.copytree(view_runs / "verdicts", shared / "verdicts")
    home = scratch / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, 65534, 65534)
    rid = read_rows(shared / "verdicts")[0]["id"]
    everything = [shared, *shared.rglob("*")]
    for p in everything:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)  # the reader owns none of it, and may write none of it
    try:
        before = _tree(shared)
        r = as_unprivileged([sys.executable, "-c", _AS_READER, str(shared), rid], scratch, home=home)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got == {"rows": len(read_rows(shared / "verdicts")), "found": 5, "groups": 1}
        assert _tree(shared) == before
    finally:
        for p in everything:  # writable again, so the folder can be removed
            os.chmod(p, 0o755)


def test_requests_for_another_host_name_are_refused(viewer: str) -> None:
    assert get(viewer, "/api/datasets", headers={"Host": "attacker.example:80"})[0] == 403  # DNS rebinding
    assert get(viewer, "/api/datasets", headers={"Host": "localhost:1"})[0] == 200


def test_a_script_in_a_trace_is_text_and_the_page_allows_no_inline_script(viewer: str) -> None:
    with urllib.request.urlopen(viewer + "/") as r:
        csp = r.headers["Content-Security-Policy"]
        page = r.read().decode()
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in page and "http" not in re.sub(r"<!doctype html>", "", page, flags=re.I)  # no CDN


def test_bad_requests_get_one_clear_line(viewer: str) -> None:
    for params, status in (({"ds": "demo/verdicts", "i": "x"}, 400), ({"ds": "demo/verdicts", "i": 10**9}, 404),
                           ({}, 400), ({"ds": "nope"}, 403)):  # fmt: skip
        code, body = get(viewer, "/api/row", **params)
        assert code == status and "\n" not in body["error"], (params, body)
    assert get(viewer, "/api/rows", ds="demo/verdicts", sort="size")[0] == 400
    assert get(viewer, "/api/nothing")[0] == 404


def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path, view_runs: Path) -> None:
    r = run_cli("view", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such directory" in r.stderr
    r = run_cli("view", str(tmp_path))
    assert r.returncode == 2 and "no dataset directory" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_cli("view", str(view_runs), "--port", str(busy.getsockname()[1]))
    assert r.returncode == 2 and "--port" in r.stderr and r.stderr.count("\n") == 1


def test_the_command_serves_until_interrupted(view_runs: Path) -> None:
    proc = subprocess.Popen([*DISTILL, "view", str(view_runs), "--port", "0"], cwd=REPO, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        line = proc.stderr.readline()
        url = re.search(r"http://\S+/", line).group()
        assert "datasets at" in line
        assert get(url.rstrip("/"), "/api/datasets")[0] == 200
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=20) == 0
