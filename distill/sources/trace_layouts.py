"""Known layouts of public reasoning-trace sets, recognised by their columns: no config needed.

Most teams start from traces someone else generated: OpenR1-Math-220k, OpenThoughts-114k, Bespoke-Stratos-17k,
s1K, or their own dumps of a chat API. Each names its columns its own way and packs its traces differently
(a list of generations per problem, ShareGPT turns with `<|begin_of_thought|>` markers, a thinking column
beside an attempt column). Each layout here is a `TraceMapping` (the same rules a user writes in a config)
plus the test that recognises it from a file's columns and first rows, exactly as `distill/sources/layouts.py`
does for prompt files; `to_traces` turns one source row into its trace records.

What each publisher's card says (checked against the cards on the Hub; the rows the tests build follow them):
- OpenR1-Math-220k (open-r1/OpenR1-Math-220k, README `dataset_info`): `problem`, `solution`, `answer`,
  `problem_type`, `question_type`, `source`, `uuid`, `is_reasoning_complete` (list of bool), `generations`
  (list of str), `correctness_math_verify` (list of bool), `correctness_llama` (list of bool, often null),
  `finish_reasons` (list of str), `correctness_count`, `messages` (a copy of one generation as a chat).
- OpenThoughts-114k (open-thoughts/OpenThoughts-114k) and Bespoke-Stratos-17k (bespokelabs/Bespoke-Stratos-17k):
  the default config is `system` + `conversations` (ShareGPT `from`/`value`), the assistant value holding
  `<|begin_of_thought|> ... <|end_of_thought|>` then `<|begin_of_solution|> ... <|end_of_solution|>`;
  OpenThoughts' `metadata` config: `problem`, `deepseek_reasoning`, `deepseek_solution`,
  `ground_truth_solution`, `domain`, `source`, `test_cases`, `starter_code`.
- s1K (simplescaling/s1K): `solution`, `question`, `cot_type`, `source_type`, `metadata`, `cot`,
  `thinking_trajectories` (list of str), `attempt`; s1K-1.1 (simplescaling/s1K-1.1): `deepseek_thinking_trajectory`,
  `deepseek_attempt` (and gemini_* beside them), with `deepseek_grade` ("Yes"/"No") in its graded release.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

from distill.errors import RowError
from distill.records import DOMAINS, RECORDS, stable_id
from distill.sources.layouts import Layout, Layouts
from distill.sources.mapping import TraceMapping, answer_after, last_boxed

Rows = Sequence[dict[str, Any]]


TRACE = RECORDS["trace"]

PROBLEM_NAMES = ("problem", "question", "Question", "prompt", "instruction", "query", "input")
RESPONSE_NAMES = ("response", "completion", "output", "generation", "model_output", "model_response")
GOLD_NAMES = ("answer", "gold_answer", "gold", "reference_answer", "final_answer", "ground_truth", "expected_answer")
SOLUTION_NAMES = ("solution", "ground_truth_solution", "reference_solution")
TEST_NAMES = ("tests", "test_cases", "input_output")
TEACHER_NAMES = ("model", "teacher", "generator")
# A publisher's own verdict on a trace, by the names public sets give it (the first ones present are used).
LABEL_NAMES = ("correct", "is_correct", "correctness_math_verify", "correctness_llama", "deepseek_grade", "Result",
               "final_correct", "correctness", "verified")  # fmt: skip
THOUGHT_MARKERS = ("<|begin_of_thought|>", "<|end_of_thought|>")
# Columns that only our own stages write: a file that has them is a distill trace / verdict file, read as is.
OURS = ("reject_reason", "keep")


def _first(cols: frozenset[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in cols), None)


def _labels(cols: frozenset[str], *extra: str) -> list[str]:
    return [c for c in (*LABEL_NAMES, *extra) if c in cols]


def _gold(cols: frozenset[str], rows: Rows) -> dict[str, Any]:
    """The gold answer's rule: a gold column (GSM8K-style '#### n' read after the marker), else the last box of a
    worked solution."""
    gold = _first(cols, GOLD_NAMES)
    if gold is not None:
        values = [r.get(gold) for r in rows if isinstance(r.get(gold), str)]
        if values and sum("####" in v for v in values) >= len(values) / 2:
            return {"answer": gold, "answer_after": "####"}
        return {"answer": gold}
    solution = _first(cols, SOLUTION_NAMES)
    return {"answer": solution, "answer_from_solution": True} if solution else {}


def _common(cols: frozenset[str], rows: Rows, *, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The rules every flat layout shares: gold answer, tests, teacher, labels."""
    out: dict[str, Any] = {**_gold(cols - set(exclude), rows)}
    if tests := _first(cols, TEST_NAMES):
        out["tests"] = tests
    if (teacher := _first(cols, TEACHER_NAMES)) and all(isinstance(r.get(teacher), str | None) for r in rows):
        out["teacher"] = teacher
    if labels := _labels(cols):
        out["labels"] = labels
    if "sample" in cols:
        out["sample"] = "sample"
    return out


def _trace(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    """Our own trace / verdict records (or a file written like them): read as is, unless it carries a
    publisher's label or values the record would refuse (an unknown domain, a `source` that is not text)."""
    if not {"problem", "content", "sample"} <= cols:
        return None
    labels = [] if any(c in cols for c in OURS) else _labels(cols)
    odd = any((r.get("domain") is not None and r.get("domain") not in DOMAINS)
              or not isinstance(r.get("source"), str | None) for r in rows)  # fmt: skip
    if not labels and not odd:
        return TraceMapping()
    rules = {**_common(cols, rows, exclude=("problem",)), "labels": labels}
    return TraceMapping(problem="problem", reasoning="reasoning" if "reasoning" in cols else None, content="content",
                        **rules)  # fmt: skip


def _openr1(cols: frozenset[str], _rows: Rows) -> TraceMapping | None:
    if "generations" not in cols or "problem" not in cols:
        return None
    aligned = [c for c in ("is_reasoning_complete",) if c in cols]
    return TraceMapping(problem="problem", generations="generations", answer="answer" if "answer" in cols else None,
                        labels=_labels(cols), finish_reason="finish_reasons" if "finish_reasons" in cols else None,
                        aligned=aligned, drop=[c for c in ("messages",) if c in cols])  # fmt: skip


def _openthoughts_metadata(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    if not {"problem", "deepseek_reasoning", "deepseek_solution"} <= cols:
        return None
    copies = [c for c in ("conversations", "final_reasoning_trace") if c in cols]  # the same trace again
    return TraceMapping(problem="problem", reasoning="deepseek_reasoning", content="deepseek_solution",
                        **_common(cols, rows), drop=copies)  # fmt: skip


def _s1k_11(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    if not {"question", "deepseek_thinking_trajectory", "deepseek_attempt"} <= cols:
        return None
    return TraceMapping(problem="question", reasoning="deepseek_thinking_trajectory", content="deepseek_attempt",
                        answer="solution" if "solution" in cols else None, answer_from_solution="solution" in cols,
                        labels=[c for c in ("deepseek_grade",) if c in cols], columns=_cot_type(cols),
                        drop=[c for c in ("messages", "text") if c in cols])  # fmt: skip


def _s1k(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    if not {"question", "thinking_trajectories", "attempt"} <= cols:
        return None
    return TraceMapping(problem="question", reasoning="thinking_trajectories", content="attempt",
                        answer="solution" if "solution" in cols else None, answer_from_solution="solution" in cols,
                        labels=_labels(cols, "grade"), columns=_cot_type(cols),
                        drop=[c for c in ("messages", "text") if c in cols])  # fmt: skip


def _cot_type(cols: frozenset[str]) -> dict[str, str]:
    # s1K's `cot_type` (math, science, crossword) is its domain; what the checks do not know is inferred
    return {"cot_type": "domain"} if "cot_type" in cols and "domain" not in cols else {}


def _turns_column(cols: frozenset[str], rows: Rows) -> str | None:
    """A chat column whose sampled rows have an assistant turn (a trace), not only a user turn (a prompt)."""
    for c in ("conversations", "messages"):
        if c in cols and any(_assistant_turn(r.get(c)) is not None for r in rows):
            return c
    return None


def _sharegpt_thoughts(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    turns = _turns_column(cols, rows)
    if turns is None:
        return None
    replies = [_assistant_turn(r.get(turns)) or "" for r in rows]
    if not any(THOUGHT_MARKERS[0] in t for t in replies):
        return None
    return TraceMapping(messages=turns, system="system" if "system" in cols else None, **_common(cols, rows))


def _api_reply(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    reasoning = _first(cols, ("reasoning_content", "reasoning"))
    problem = _first(cols, PROBLEM_NAMES)
    if reasoning is None or "content" not in cols or problem is None:
        return None
    prompt = "prompt" if problem != "prompt" and "prompt" in cols else None
    return TraceMapping(problem=problem, prompt=prompt, reasoning=reasoning, content="content",
                        **_common(cols, rows, exclude=(problem,)))  # fmt: skip


def _openai_reply(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    """A chat-completion reply saved whole (`choices`, `usage`, `model`) beside its request (the problem, or the
    request's `messages`)."""
    if "choices" not in cols or not any(
        isinstance(r.get("choices"), list) and r["choices"] and isinstance(r["choices"][0], dict)
        and "message" in r["choices"][0] for r in rows
    ):  # fmt: skip
        return None
    problem = _first(cols, PROBLEM_NAMES)
    if problem is None and "messages" not in cols:
        return None
    rules = _common(cols, rows, exclude=(problem,) if problem else ())
    return TraceMapping(problem=problem, messages=None if problem else "messages", choices="choices", **rules)


def _plain(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    problem = _first(cols, PROBLEM_NAMES)
    response = _first(cols, RESPONSE_NAMES)
    if problem is None or response is None:
        return None
    prompt = "prompt" if problem != "prompt" and "prompt" in cols else None
    return TraceMapping(problem=problem, prompt=prompt, response=response, **_common(cols, rows, exclude=(problem,)))


def _chat(cols: frozenset[str], rows: Rows) -> TraceMapping | None:
    turns = _turns_column(cols, rows)
    if turns is None:
        return None
    return TraceMapping(messages=turns, system="system" if "system" in cols else None, **_common(cols, rows))


# In order: the first layout that recognises a file's columns is its layout (more specific ones first).
TRACE_LAYOUTS: dict[str, Layout[TraceMapping]] = {
    layout.name: layout
    for layout in (
        Layout("trace", "distill trace / verdict records (problem, sample, reasoning, content)", _trace),
        Layout("openr1-math", "OpenR1-Math-220k: problem + generations (one trace each) + correctness lists",
                    _openr1),
        Layout("openthoughts-metadata", "OpenThoughts metadata: problem + deepseek_reasoning + deepseek_solution",
                    _openthoughts_metadata),
        Layout("s1k-1.1", "s1K-1.1: question + deepseek_thinking_trajectory + deepseek_attempt (+ deepseek_grade)",
                    _s1k_11),
        Layout("s1k", "s1K: question + thinking_trajectories + attempt", _s1k),
        Layout("sharegpt-thoughts", "OpenThoughts-114k / Bespoke-Stratos-17k: system + conversations with "
                    "<|begin_of_thought|> markers", _sharegpt_thoughts),
        Layout("openai-reply", "a chat-completion reply saved whole: choices[].message (content, "
                    "reasoning_content) + the problem or the request's messages", _openai_reply),
        Layout("api-reply", "an API's saved reply: problem + reasoning_content (or reasoning) + content",
                    _api_reply),
        Layout("plain", "problem + response (think block inline, or opened in the prompt) + gold answer",
                    _plain),
        Layout("chat", "messages / conversations: the user turn is the problem, the last assistant turn the "
                    "trace", _chat),
    )
}  # fmt: skip


def unrecognised(cols: frozenset[str], _rows: Rows = ()) -> str:
    """The one line for a trace file no layout recognises: what it has and the mapping that would read it."""
    problem = _first(cols, PROBLEM_NAMES) or "<problem column>"
    reply = _first(cols, (*RESPONSE_NAMES, "text", "reply", "trace")) or "<reply column>"
    gold = _first(cols, (*GOLD_NAMES, *SOLUTION_NAMES))
    rules = f"problem: {problem}, response: {reply}" + (f", answer: {gold}" if gold else "")
    return (
        f"columns {', '.join(sorted(cols)) or '(none)'} match no known trace layout ({', '.join(TRACE_LAYOUTS)}); "
        f"map them in a --config: `sources: [{{match: ..., {rules}}}]` (keys: problem, response, reasoning, "
        "content, generations, messages, answer, labels; README, 'Public trace sets')"
    )


def _reads_as_is(m: TraceMapping, _columns: Sequence[str]) -> bool:
    return m.model_copy(update={"match": "*"}) == TraceMapping()


TRACES: Layouts[TraceMapping] = Layouts(
    TRACE_LAYOUTS, unrecognised, _reads_as_is, own=(frozenset({"trace", "verdict"}), "trace")
)
detect, resolve = TRACES.detect, TRACES.resolve


# --- one source row -> its traces -------------------------------------------------------------------


def _turn(t: Any) -> tuple[str | None, Any]:
    if not isinstance(t, dict):
        return None, None
    role = t.get("role", t.get("from"))
    return {"human": "user", "gpt": "assistant"}.get(role, role), t.get("content", t.get("value"))


def _assistant_turn(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return None
    replies = [c for r, c in map(_turn, turns) if r == "assistant" and isinstance(c, str)]
    return replies[-1] if replies else None


def label_value(value: Any) -> bool | None:
    """A publisher's verdict as True / False / None: booleans, 1/0, and the words sets use (Yes/No, correct...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        v = value.strip().lower().rstrip(".")
        if v in ("yes", "true", "correct", "1", "right", "pass", "passed", "y"):
            return True
        if v in ("no", "false", "incorrect", "wrong", "0", "fail", "failed", "n"):
            return False
    return None


def _element(value: Any, k: int, n: int) -> Any:
    """Element k of a list aligned with n generations; a scalar applies to all of them."""
    if isinstance(value, list):
        return value[k] if len(value) == n else None
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n\n".join(value) if value else None  # s1K: `thinking_trajectories` is a list of one string
    return value if isinstance(value, str) else None


_OPENED_THINK = re.compile(r"\s*<think>\s*$")
_OPTION = re.compile(r"^\s*\(?([A-J])[).:]\s", re.M)
_LETTER = re.compile(r"^\s*\(?\s*([A-Ja-j])\s*\)?\s*\.?\s*$")


def _choices(value: Any, column: str) -> tuple[list[tuple[str | None, str | None]], list[Any]]:
    """(reasoning, content) and finish reason of each choice of an OpenAI-style reply: the server's reasoning
    parser puts the thinking in `reasoning_content` (vLLM 0.32: `reasoning`), else it stays inline in `content`."""
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise RowError("wrong_type", f"column '{column}' must be a list of choices ({{message, finish_reason}})")
    replies, finishes = [], []
    for c in value:
        msg = c.get("message") if isinstance(c.get("message"), dict) else {}
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        replies.append((reasoning if isinstance(reasoning, str) else None, _text(msg.get("content"))))
        finishes.append(c.get("finish_reason"))
    return replies, finishes


def infer_domain(given: Any, gold: str | None, tests: str | None, problem: str, reply: str) -> str:
    """A domain the checks know, for a row whose own is absent or unknown (`mmlu_mcq`, `physics`): code when
    it has tests, multiple choice (`science`) when the gold is an option letter and the problem lists options,
    math when it has a gold answer or the reply boxes one (unverifiable without a gold), else general."""
    if isinstance(given, str) and given in DOMAINS:
        return given
    if tests:
        return "code"
    if gold and _LETTER.match(gold) and len(set(_OPTION.findall(problem))) >= 2:
        return "science"
    if gold or "\\boxed" in reply[-20_000:]:
        return "math"
    return "general"


def _gold_answer(value: Any, m: TraceMapping) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if m.answer_after is not None:
        try:
            return answer_after(value, m.answer_after)
        except RowError:
            return None
    if m.answer_from_solution:
        boxed = last_boxed(value)
        if boxed is not None:
            return boxed
        # s1K's `solution` is a bare answer for many rows ("128") and prose for others: only a short one is a gold
        short = value.strip()
        return short if len(short) <= 64 and "\n" not in short else None
    return value


def to_traces(row: dict[str, Any], m: TraceMapping, source: str, number: int | None = None) -> list[dict[str, Any]]:
    """One source row -> its trace records (many for a list of generations), or `RowError` naming what is missing.

    `sample`: the row's own `sample` column; else a generation's position in its list; else the row's number in
    its file (`number`), so that traces of one problem on many rows of a dump stay apart: one row per (id, sample).
    """
    row = dict(row)
    for src, dst in m.columns.items():
        if src in row:
            row[dst] = row.pop(src)
    used: set[str] = set(m.drop)

    def take(column: str | None) -> Any:
        if column is None:
            return None
        used.add(column)
        return row.get(column)

    problem, system, chat_reply = take(m.problem), _text(take(m.system)), None
    if m.messages is not None:
        turns = take(m.messages)
        if not isinstance(turns, list):
            raise RowError("wrong_type", f"column '{m.messages}' must be a list of chat turns")
        pairs = [_turn(t) for t in turns]
        users = [c for r, c in pairs if r == "user" and isinstance(c, str)]
        if problem is None and users:
            problem = users[0]
        system = system or next((c for r, c in pairs if r == "system" and isinstance(c, str)), None)
        chat_reply = _assistant_turn(turns)
    if not isinstance(problem, str) or not problem.strip():
        what = m.problem or f"the user turn of '{m.messages}'"
        raise RowError("missing_field", f"{what} is missing or not a string (the problem)")
    problem = _OPENED_THINK.sub("", problem)

    replies: list[tuple[str | None, str | None]]  # (reasoning, content) per trace
    finish: Any = None
    if m.generations is not None:
        gens = take(m.generations)
        if not isinstance(gens, list):
            raise RowError("wrong_type", f"column '{m.generations}' must be a list of generations")
        replies = [(None, g if isinstance(g, str) else None) for g in gens]
    elif m.choices is not None:
        replies, finish = _choices(take(m.choices), m.choices)
    elif m.reasoning is not None or m.content is not None:
        replies = [(_text(take(m.reasoning)), _text(take(m.content)))]
    elif m.response is not None:
        replies = [(None, _text(take(m.response)))]
    else:
        replies = [(None, chat_reply)]
    if not replies:
        raise RowError("missing_field", f"column '{m.generations or m.choices}' holds no reply")

    gold = _gold_answer(take(m.answer), m)
    tests = take(m.tests)
    if isinstance(tests, list | dict):
        tests = json.dumps(tests, ensure_ascii=False)
    tests = tests if isinstance(tests, str) and tests.strip() else None
    labels = {c: take(c) for c in m.labels}
    finish = take(m.finish_reason) if m.finish_reason is not None else finish
    teacher = _text(take(m.teacher))
    sample_col = take(m.sample)
    prompt = _text(take(m.prompt))
    # A raw completion prompt that opened the think block ("...Solution: <think>\n"): the opener is the assistant's
    # generation prompt, not the user's words (the chat template adds it back); the user turn is what comes before.
    prompt = _OPENED_THINK.sub("", prompt) if prompt else prompt
    aligned = {c: take(c) for c in m.aligned}
    given_domain = take("domain")
    language = take("language")
    own_source = take("source")
    own_id = take("id")

    meta: dict[str, Any] = {k: v for k, v in row.items() if k not in used and k not in TRACE.names}
    own_meta = row.get("meta")  # a file's own `meta` (an object, or JSON text as ours) is merged under the rest
    if isinstance(own_meta, str):
        with contextlib.suppress(json.JSONDecodeError):
            own_meta = json.loads(own_meta)
    if isinstance(own_meta, dict):
        meta = {**own_meta, **meta}
    elif own_meta is not None:
        meta["meta"] = own_meta
    # A file in the record's shape (with `sample`) names the prompt by `id`, as ours do; elsewhere a file's own
    # id names the row (one trace), so it goes to meta and the prompt's id is computed from the problem.
    keep_id = isinstance(own_id, str) and m.sample is not None
    if own_id is not None and not keep_id:
        meta["id"] = own_id
    if own_source is not None and not isinstance(own_source, str):
        meta["source"] = own_source
    if system:
        meta["system"] = system
    if isinstance(given_domain, str) and given_domain not in DOMAINS:
        meta["published_domain"] = given_domain

    pid = own_id if keep_id else stable_id(problem)
    n = len(replies)
    out = []
    for k, (reasoning, content) in enumerate(replies):
        if content is None and reasoning is None:
            what = m.generations or m.content or m.response or f"the assistant turn of '{m.messages}'"
            raise RowError("missing_field", f"{what} is missing or not a string (the reply)")
        votes = [label_value(_element(v, k, n)) for v in labels.values()]
        said = [c for c, v in zip(labels, votes, strict=True) if v is not None]
        verdict = None if not said else any(v for v in votes if v is not None)
        if isinstance(sample_col, int) and not isinstance(sample_col, bool):
            sample = sample_col
        else:
            sample = k if m.generations is not None or number is None else number
        trace_meta = {**meta, **{c: _element(v, k, n) for c, v in aligned.items()}}
        reply = (reasoning or "") + (content or "")
        out.append({
            "id": pid,
            "source": m.name or (own_source if isinstance(own_source, str) else source),
            "domain": infer_domain(given_domain or m.domain, gold, tests, problem, reply),
            "problem": problem,
            "answer": gold,
            "tests": tests,
            "language": language if isinstance(language, str) else m.language,
            "meta": json.dumps(trace_meta, ensure_ascii=False, sort_keys=True, default=str) if trace_meta else None,
            "sample": sample,
            "reasoning": reasoning,
            "content": content if content is not None else "",
            "finish_reason": _element(finish, k, n) if isinstance(_element(finish, k, n), str) else None,
            "teacher": teacher,
            "prompt": prompt,
            "publisher_correct": verdict,
            "publisher_label": "+".join(said) if said else None,
        })  # fmt: skip
        for c in PASSED_ON:  # record columns a file may already carry (token counts, timings)
            if out[-1].get(c) is None and row.get(c) is not None:
                out[-1][c] = row[c]
        usage = row.get("usage")
        if n == 1 and isinstance(usage, dict):  # a saved API reply's token counts (of its one choice)
            for c in ("prompt_tokens", "completion_tokens"):
                if out[-1].get(c) is None and isinstance(usage.get(c), int):
                    out[-1][c] = usage[c]
    return out


PASSED_ON = ("finish_reason", "prompt_tokens", "completion_tokens", "teacher", "params", "latency_s", "prompt")
