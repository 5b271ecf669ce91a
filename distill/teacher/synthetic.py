"""An offline teacher for the demo and the tests: step-by-step traces for arithmetic problems, with the
faults real teachers show injected at the rates its YAML sets.

It solves what it recognizes (`a + b`, `a - b`, `a * b` with integers, the demo's problem families)
column by column, the way a worked solution reads, so a tiny student can learn the procedure. Other
problems get a short generic trace that ends in the prompt's `answer`. Every choice is seeded by
(seed, prompt id, sample): the same request always gets the same text, as a seeded server would give.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable
from typing import Any

from distill.teacher.config import SyntheticConfig, SyntheticFaults, TeacherConfig
from distill.teacher.parse import split_output
from distill.teacher.prompting import Request

_EXPR = re.compile(r"(-?\d{1,12})\s*([+\-*×x])\s*(-?\d{1,12})")
# Chinese in English reasoning: the R1-Zero failure that R1's language-consistency reward targeted.
CHARS_PER_TOKEN = 2.0  # of the padding, under the tokenizer the synthetic backend counts with (measured: 2.0)
_CHINESE = "让我们再仔细检查一下这个计算过程，确认每一步的进位和借位都是正确的，然后再写出最后的答案。"


def rng_for(cfg: SyntheticConfig, req: Request) -> random.Random:
    digest = hashlib.sha256(f"synthetic:{cfg.seed}:{req.id}:{req.sample}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def prompt_pass_rate(cfg: SyntheticConfig, problem: str) -> float | None:
    """The prompt's own pass rate under `pass_rate` (a Beta draw seeded by the problem text), else None."""
    if cfg.pass_rate is None:
        return None
    digest = hashlib.sha256(f"pass-rate:{cfg.seed}:{problem}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).betavariate(cfg.pass_rate.alpha, cfg.pass_rate.beta)


def _fault(cfg: SyntheticConfig, req: Request, rng: random.Random) -> str | None:
    rate = prompt_pass_rate(cfg, req.problem)
    if rate is None:
        return pick_fault(cfg.faults, rng)
    if rng.random() >= rate:  # this prompt's share of wrong samples, instead of one share for all
        return "wrong_answer"
    return pick_fault(cfg.faults.model_copy(update={"wrong_answer": 0.0}), rng)


def _padding(cfg: SyntheticConfig, wrong: bool, rng: random.Random) -> list[str]:
    """Paragraphs of re-checking that bring the reasoning to about its drawn length (`lengths`)."""
    if cfg.lengths is None:
        return []
    mean = cfg.lengths.wrong_tokens if wrong else cfg.lengths.right_tokens
    target_chars = int(mean * math.exp(rng.gauss(0.0, 0.25) - 0.25**2 / 2) * CHARS_PER_TOKEN)
    lines: list[str] = []
    size = 0
    while size < target_chars:  # distinct numbers in every line: padding must not read as a loop
        a, b = rng.randrange(10, 10_000), rng.randrange(10, 10_000)
        lines.append(f"Check {len(lines) + 1}: {a} and {b} make {a + b}, which fits what came before.")
        size += len(lines[-1]) + 1
    paragraphs = [" ".join(lines[k : k + 4]) for k in range(0, len(lines), 4)]
    return paragraphs


def pick_fault(faults: SyntheticFaults, rng: random.Random) -> str | None:
    u = rng.random()
    for name, share in faults.model_dump().items():
        if u < share:
            return name
        u -= share
    return None


# --- solving --------------------------------------------------------------------------------------


def _add_steps(a: int, b: int) -> list[str]:
    da, db = str(a)[::-1], str(b)[::-1]
    carry, steps = 0, []
    for k in range(max(len(da), len(db))):
        x = int(da[k]) if k < len(da) else 0
        y = int(db[k]) if k < len(db) else 0
        s = x + y + carry
        place = ["ones", "tens", "hundreds", "thousands"][k] if k < 4 else f"10^{k}"
        note = f" plus carry {carry}" if carry else ""
        steps.append(f"{place}: {x} + {y}{note} = {s}, write {s % 10}" + (f", carry {s // 10}." if s >= 10 else "."))
        carry = s // 10
    if carry:
        steps.append(f"The final carry {carry} becomes the leading digit.")
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    if a < b:
        return [f"Since {a} < {b}, compute {b} - {a} and make it negative.", *_sub_steps(b, a)]
    da, db = str(a)[::-1], str(b)[::-1]
    borrow, steps = 0, []
    for k in range(len(da)):
        x = int(da[k]) - borrow
        y = int(db[k]) if k < len(db) else 0
        borrow = 1 if x < y else 0
        top = x + 10 * borrow
        tail = ", borrow 1." if borrow else "."
        steps.append(f"digit {k + 1}: {top} - {y} = {top - y}{tail}")
    return steps


def _mul_steps(a: int, b: int) -> list[str]:
    sign = -1 if (a < 0) != (b < 0) else 1
    a, b = abs(a), abs(b)
    steps, total = [], 0
    for k, d in enumerate(str(b)[::-1]):
        part = a * int(d) * 10**k
        total += part
        steps.append(f"{a} x {d} x {10**k} = {part}; running total {total}.")
    if sign < 0:
        steps.append("One factor is negative, so the product is negative.")
    return steps


def solve(problem: str) -> tuple[list[str], str] | None:
    """(steps, answer) for a problem this teacher recognizes, else None."""
    m = _EXPR.search(problem)
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "+":
        steps = _add_steps(a, b) if a >= 0 and b >= 0 else []
        return [f"We need {a} + {b}.", *steps], str(a + b)
    if op == "-":
        steps = _sub_steps(a, b) if a >= 0 and b >= 0 else []
        return [f"We need {a} - {b}.", *steps], str(a - b)
    return [f"We need {a} * {b}. Multiply by each digit of {abs(b)}.", *_mul_steps(a, b)], str(a * b)


# --- writing a trace --------------------------------------------------------------------------------


def _wrong(answer: str, rng: random.Random) -> str:
    try:
        return str(int(answer) + rng.choice([-10, -2, -1, 1, 2, 10]))
    except ValueError:
        return answer + "1"


def _late_failure(fault: str, max_tokens: int, rng: random.Random) -> list[str]:
    """What R1's costliest failures add after reasoning normally, until max_tokens cuts them: one line over and
    over (`loop`), or short paragraphs of Chinese (`drift`), about 4 characters per token of max_tokens."""
    budget, out = max_tokens * 4, []
    while budget > 0:
        if fault == "loop":
            out.append("Wait, let me recompute that last step once more to be sure.")
        else:
            a, b = rng.randrange(10, 1000), rng.randrange(10, 1000)
            out.append(f"第{len(out) + 1}步：{a}加{b}等于{a + b}，我们继续检查这个结果是否正确。")
        budget -= len(out[-1]) + 2
    return ["\n".join(out)] if fault == "loop" else out


def raw_output(req: Request, cfg: TeacherConfig, max_tokens: int | None = None) -> tuple[str, str]:
    """(text as a server without a reasoning parser returns it, finish_reason), faults included; `max_tokens`
    (default the teacher's) is where a late loop or drift ends."""
    rng = rng_for(cfg.synthetic, req)
    fault = _fault(cfg.synthetic, req, rng)
    solved = solve(req.problem)
    if solved is not None:
        steps, answer = solved
    else:
        steps = ["Let me restate the problem and work through it.", "Checking the conditions one at a time."]
        answer = (req.answer or "").strip() or "unknown"
    # Samples of one prompt differ in wording, as a sampled teacher's do (and selection keeps distinct ones).
    opener = rng.choice(["", "Let me work this out carefully.", "Okay, step by step.", "Let me think."])
    check = rng.choice(
        [
            "Let me double-check: the steps agree, the result stands.",
            "Checking once more by estimating: the size of the result is right.",
            "Verifying each column again gives the same digits.",
        ]
    )
    steps = [opener, *steps] if opener else steps
    steps += _padding(cfg.synthetic, fault == "wrong_answer", rng)
    if fault == "wrong_answer":
        answer = _wrong(answer, rng)
        steps = [*steps, f"So the result is {answer}."]
    else:
        steps = [*steps, f"So the result is {answer}.", check]
    if fault == "repetition":
        steps = [*steps, *["Wait, let me recompute that last step once more to be sure."] * 12]
    if fault == "language_mix":
        steps.insert(len(steps) // 2, _CHINESE * 3)
    if fault == "code_block":
        steps.insert(len(steps) // 2, f"```python\nprint({req.problem[:60]!r})\n```")
    if fault == "long_paragraph":
        run_on = (f"then {k} more gives {k * 7 % 97} and carrying on from {k * 13 % 89}" for k in range(160))
        steps.insert(len(steps) // 2, " ".join(run_on))
    reasoning = "\n\n".join(steps)
    final = f"The answer is {answer}." if fault == "no_boxed" else f"The answer is $\\boxed{{{answer}}}$."
    if fault in ("loop", "drift"):  # cut off by max_tokens: no closing tag, no answer
        late = "\n\n".join(_late_failure(fault, max_tokens or cfg.max_tokens, rng))
        return f"{reasoning}\n\n{late}", "length"
    if fault == "truncated":
        return reasoning[: max(1, len(reasoning) // 2)], "length"
    if fault == "unclosed_think":
        return reasoning, "stop"
    return f"{reasoning}\n</think>\n\n{final}", "stop"


def generate(req: Request, cfg: TeacherConfig, count_tokens: Callable[[list[str]], list[int]]) -> dict[str, Any]:
    """One result row (the columns a backend fills) for `req`."""
    text, finish = raw_output(req, cfg)
    prompt_tokens, completion_tokens = count_tokens([req.problem, text])
    if completion_tokens > cfg.max_tokens:  # as a server would: cut at max_tokens, no closing tag
        text = text[: len(text) * cfg.max_tokens // completion_tokens].split("</think>")[0]
        completion_tokens, finish = cfg.max_tokens, "length"
    reasoning, content = split_output(text, think_forced=True)
    return {
        "reasoning": reasoning,
        "content": content,
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
