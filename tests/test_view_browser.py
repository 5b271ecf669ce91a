"""`distill view` in a real browser: headless Chromium (Debian's `chromium`, driven through its `chromedriver` by
Selenium) loads the page over the demo's datasets and real R1-distill traces, and reads what it shows.

`make test` installs chromium and chromium-driver where it can (root with apt-get, as in CI); elsewhere these tests
skip, saying so. Screenshots of each view are saved under build/test-artifacts/view/.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from benchmarks.common import headless_chromium
from tests.conftest import REPO, read_rows, run_cli, write_jsonl

ARTIFACTS = REPO / "build" / "test-artifacts" / "view"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail("make test installs chromium and chromium-driver here (root, apt-get); they are missing")
        pytest.skip("no chromium + chromedriver on this machine (Debian: apt-get install chromium chromium-driver)")
    driver = headless_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver, painted: str, url_has: str = "", timeout: float = 30) -> None:
    """Until the page says it has drawn the view (body[data-painted]) at a URL holding `url_has`."""
    deadline = time.monotonic() + timeout
    drawn = "return document.body.dataset.painted === arguments[0] && document.body.dataset.route === location.hash"
    while not driver.execute_script(drawn, painted) or url_has not in driver.current_url:
        error = driver.execute_script("return (document.getElementById('error') || {}).textContent")
        assert not error, error
        assert time.monotonic() < deadline, f"{driver.current_url}: not drawn ({painted})"
        time.sleep(0.05)


def show(driver, url: str, painted: str, shot: str | None = None):
    """Open a view and wait until it is drawn."""
    driver.get(url)
    wait(driver, painted)
    if shot:
        driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe  # no script error, no blocked or missing asset
    return driver


def js(driver, script: str):
    return driver.execute_script(script)


def test_the_first_page_is_the_pipeline_in_order_with_each_steps_counts(browser, viewer: str, view_runs: Path) -> None:
    show(browser, f"{viewer}/#/", "home", "home")
    steps = js(browser, "return [...document.querySelectorAll('#pipeline li.step')].map(s => ({key: s.dataset.key, "
                        "rows: +s.dataset.rows, link: s.querySelector('h2 a').getAttribute('href'), "
                        "bars: Object.fromEntries([...s.querySelectorAll('.bar-row')].map(r => [r.dataset.reason, "
                        "+r.dataset.count]))}))")  # fmt: skip
    pipeline = ["demo/prompts", "demo/traces", "demo/verdicts", "demo/kept", "demo/sft"]
    demo = [s for s in steps if s["key"] in pipeline]  # (the fixture adds verdicts of real traces beside them)
    assert [s["key"] for s in demo] == pipeline
    for s in demo:  # each step's count is its manifest's, and its heading links to its dataset
        manifest = json.loads((view_runs / s["key"].split("/", 1)[1] / "_manifest.json").read_text())
        assert s["rows"] == manifest["rows"] and s["link"] == "#/ds/" + s["key"].replace("/", "%2F"), s
    by_key = {s["key"]: s for s in demo}
    counted = json.loads((view_runs / "verdicts" / "_manifest.json").read_text())["stats"]["funnel"]["by_reason"]
    assert by_key["demo/verdicts"]["bars"] == counted  # the filter's funnel on the first page
    removed = by_key["demo/prompts"]["bars"]
    assert removed["out"] == 600 and removed["contaminated"] == 1 and removed["bad row: malformed_json"] == 1
    text = js(browser, "return document.getElementById('pipeline').innerText")
    assert "2,400 in → 2,400 rows" not in text and "608 in → 600 rows" in text  # rows in shown where they differ


def test_the_demos_verdicts_load_with_the_funnel_the_stage_counted(browser, viewer: str, view_runs: Path) -> None:
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts", "stats", "overview-verdicts")
    shown = js(browser, "return Object.fromEntries([...document.querySelectorAll('#funnel .bar-row')]"
                        ".map(r => [r.dataset.reason, +r.dataset.count]))")  # fmt: skip
    counted = json.loads((view_runs / "verdicts" / "_manifest.json").read_text())["stats"]["funnel"]["by_reason"]
    assert shown == counted
    text = js(browser, "return document.getElementById('funnel').innerText")
    for reason, n in counted.items():
        assert reason in text and f"{n:,}" in text
    assert js(browser, "return document.querySelectorAll('svg.hist rect').length") > 0  # the length histogram


def test_filtering_by_a_reason_lists_exactly_those_rows(browser, viewer: str, view_runs: Path) -> None:
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts", "stats")
    browser.find_element("css selector", "#funnel .bar-row[data-reason='repetition']").click()  # a bar is a link
    wait(browser, "rows")
    assert "reason=repetition" in browser.current_url
    rows = read_rows(view_runs / "verdicts")
    expected = [i for i, r in enumerate(rows) if r["reject_reason"] == "repetition"]
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts/rows?reason=repetition&limit=200", "rows", "rows-repetition")
    listed = js(
        browser, "return [...document.querySelectorAll('#rows tbody tr')].map(r => [+r.dataset.i, r.dataset.reason])"
    )
    assert [i for i, _ in listed] == expected and {why for _, why in listed} == {"repetition"}
    assert f"of {len(expected)} rows" in js(browser, "return document.getElementById('count').textContent")
    # a row opened from the list steps through that list: the link beside it, or the → key
    browser.find_element("css selector", "#rows tbody tr a").click()
    wait(browser, "row")
    assert js(browser, "return document.getElementById('position').textContent") == f"1 of {len(expected)} in this list"
    from selenium.webdriver.common.keys import Keys

    browser.find_element("css selector", "body").send_keys(Keys.ARROW_RIGHT)
    wait(browser, "row", f"/row/{expected[1]}?")
    assert js(browser, "return document.getElementById('position').textContent").startswith("2 of")
    # the filter form drives the same: choose another reason
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts/rows?limit=200", "rows")
    js(browser, "const s = document.querySelector('select[name=reason]'); s.value = 'code_block';"
                "s.dispatchEvent(new Event('change', {bubbles: true}))")  # fmt: skip
    wait(browser, "rows", "reason=code_block")
    reasons = js(browser, "return [...document.querySelectorAll('#rows tbody tr')].map(r => r.dataset.reason)")
    assert reasons == ["code_block"] * sum(r["reject_reason"] == "code_block" for r in rows)


def test_a_rows_latex_renders_and_its_verdict_is_marked_in_the_text(browser, viewer: str, real: Path) -> None:
    show(browser, f"{viewer}/#/ds/demo%2Freal-verdicts/rows?limit=40", "rows")
    first = js(browser, "return +document.querySelector('#rows tbody tr').dataset.i")
    show(browser, f"{viewer}/#/ds/demo%2Freal-verdicts/row/{first}", "row", "row-real-latex")
    raw_text = js(browser, "return document.querySelector('#verdict details pre').textContent")
    assert "\\frac" in raw_text  # the stored row has LaTeX ...
    for field in ("problem", "reasoning", "answer"):
        shown = js(browser, f"return document.querySelector('section[data-field={field}] .body').innerText")
        assert "\\frac" not in shown and "\\boxed" not in shown, field  # ... and none of it is left raw on the page
    assert js(browser, "return document.querySelectorAll('section[data-field=reasoning] .katex').length") > 10
    assert js(browser, "return document.querySelectorAll('.katex-error, .tex-error').length") == 0
    # the extracted answer is highlighted where it stands, with the verdict's words beside it
    marked = js(
        browser, "return [...document.querySelectorAll('section[data-field=answer] mark.mk-answer')].map(m => m.title)"
    )
    assert len(marked) == 1 and marked[0].startswith("final answer")
    # "raw" shows the text exactly as stored, with the same mark
    browser.find_element("css selector", "section[data-field=reasoning] button[data-mode=raw]").click()
    assert "\\frac" in js(browser, "return document.querySelector('section[data-field=reasoning] .body').innerText")


def test_a_repetition_and_a_language_mix_are_marked_where_they_are(browser, viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    loop = next(i for i, r in enumerate(rows) if r["reject_reason"] == "repetition")
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts/row/{loop}", "row", "row-repetition")
    repeated = js(
        browser,
        "return [...document.querySelectorAll('section[data-field=reasoning] mark.mk-repeat')].map(m => m.innerText)",
    )
    assert len(repeated) > 5 and len(set(repeated)) == 1  # the one line the trace keeps repeating
    mixed = next(i for i, r in enumerate(rows) if r["reject_reason"] == "language_mix")
    show(browser, f"{viewer}/#/ds/demo%2Fverdicts/row/{mixed}", "row", "row-language-mix")
    foreign = js(browser, "return [...document.querySelectorAll('mark.mk-foreign')].map(m => m.innerText).join('')")
    reasoning = rows[mixed]["reasoning"]
    chinese = "".join(c for c in reasoning if "\u4e00" <= c <= "\u9fff")
    assert chinese and "".join(c for c in foreign if "\u4e00" <= c <= "\u9fff") == chinese
    # links between stages: the verdict's trace
    browser.find_element("css selector", "#links a[href*='demo%2Ftraces']").click()
    wait(browser, "row", "traces")
    assert js(browser, "return document.querySelector('#verdict').innerText").count(rows[mixed]["id"]) >= 1


def test_the_prompt_view_shows_its_k_samples_side_by_side(browser, viewer: str, view_runs: Path) -> None:
    rows = read_rows(view_runs / "verdicts")
    rid = next(r["id"] for r in rows if r["reject_reason"] == "language_mix")
    mine = [r for r in rows if r["id"] == rid]
    show(browser, f"{viewer}/#/prompt/{rid}", "prompt", "prompt-samples")
    cards = js(browser, "return [...document.querySelectorAll('section.group[data-ds=\"demo/verdicts\"] .sample-card')]"
                        ".map(c => [+c.dataset.sample, c.dataset.reason, c.getBoundingClientRect().top])")  # fmt: skip
    assert [c[0] for c in cards] == [r["sample"] for r in mine] and len(cards) == 4
    assert [c[1] for c in cards] == [r["reject_reason"] or "kept" for r in mine]
    assert len({round(c[2]) for c in cards}) == 1  # side by side: one row of cards


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """A trace that tries to run script in the reader's browser, served on its own."""
    from distill.view.server import make_server

    ws = tmp_path_factory.mktemp("hostile")
    payload = ('<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> '
               '[click](javascript:window.__pwned=3) $\\href{javascript:window.__pwned=4}{x}$')  # fmt: skip
    write_jsonl(ws / "t.jsonl", [{"problem": f"What is 1+1? {payload}", "answer": "2", "domain": "math",
                                  "language": "en", "sample": 0,
                                  "content": f"<think>\nhmm {payload}\n</think>\n\\boxed{{2}} {payload}"}])  # fmt: skip
    r = run_cli("filter", "--input", str(ws / "t.jsonl"), "--out", str(ws / "v"), "--preset",
                str(REPO / "filters" / "r1.yaml"), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    server = make_server([ws / "v"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_script_inside_a_trace_is_shown_as_text_and_never_runs(browser, hostile: str) -> None:
    browser.get(f"{hostile}/#/ds/v/row/0")
    wait(browser, "row")
    for link in browser.find_elements("css selector", "#fields a"):
        assert not (link.get_attribute("href") or "").startswith("javascript:")
    time.sleep(0.3)
    assert js(browser, "return window.__pwned") is None
    assert "<script>window.__pwned = 1</script>" in js(browser, "return document.querySelector('#fields').innerText")
    assert js(browser, "return document.querySelectorAll('#fields script, #fields img').length") == 0
