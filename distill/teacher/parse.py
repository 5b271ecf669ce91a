"""A teacher's raw output -> `reasoning` (inside `<think>`) and `content` (after `</think>`).

Servers differ: vLLM / SGLang with the deepseek_r1 reasoning parser return the thinking in
`reasoning_content` (newer vLLM: `reasoning`); without it the thinking is inline. R1's template forces
the opening `<think>\\n` into the prompt, so inline output usually has only the closing tag.

An output whose think block never closed (cut off by max_tokens, or a broken sample) keeps all its
text in `content`, starting with `<think>`, and `reasoning` is null: the readability filter then sees
exactly what the teacher wrote and rejects it as `truncated` or `unclosed_think`.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_output(text: str, *, think_forced: bool) -> tuple[str | None, str]:
    """(reasoning, content) of inline output. `think_forced`: the prompt ended with `<think>\\n`."""
    head, sep, tail = text.partition(THINK_CLOSE)
    if sep:
        reasoning = head.lstrip()
        if reasoning.startswith(THINK_OPEN):
            reasoning = reasoning[len(THINK_OPEN) :]
        return reasoning.strip("\n"), tail.lstrip("\n")
    if think_forced and not text.lstrip().startswith(THINK_OPEN):
        return None, f"{THINK_OPEN}\n{text}"
    return None, text


def from_message(message: dict, *, think_forced: bool) -> tuple[str | None, str]:
    """(reasoning, content) of a chat completion's `message` (or the accumulated deltas of a stream)."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    content = message.get("content") or ""
    if reasoning:
        return reasoning.strip("\n"), content.lstrip("\n")
    return split_output(content, think_forced=think_forced)
