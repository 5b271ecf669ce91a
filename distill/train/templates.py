"""Chat templates for training students: the exact text a model is trained on, and which part is learned.

Each template marks the trained span with `{% generation %}` ... `{% endgeneration %}`, which TRL's
`assistant_only_loss` turns into the loss mask: the loss covers the last assistant turn's tokens
(reasoning, answer, end-of-turn token) and never the prompt.

- `r1-qwen`, `r1-llama`: the DeepSeek-R1-Distill format: `<｜User｜>` / `<｜Assistant｜>` markers, turns
  ended by `<｜end▁of▁sentence｜>`, and a generation prompt that opens the think block,
  `<｜Assistant｜><think>\\n`. So the `<think>\\n` the student sees at inference is part of its prompt,
  in training too: the learned span starts right after it. The official template strips everything
  up to `</think>` from *every* assistant turn, which would train the student on answers with no
  reasoning; here only earlier turns are stripped (as the official one does at inference), and the
  turn being trained keeps its reasoning. The two differ only in their tokenizers (Qwen2.5's and
  Llama 3's vocabularies map the same marker strings).
- `chatml` (Qwen2.5 instruct style) and `llama3` (Llama 3.x instruct style): the usual formats; the
  trained turn keeps its `<think>` block as text, earlier turns keep only their answers.

Earlier assistant turns are context, not targets: they carry no generation markers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from distill.errors import UserError

R1_BOS = "<｜begin▁of▁sentence｜>"
R1_EOS = "<｜end▁of▁sentence｜>"

# transformers renders templates with trim_blocks: a newline right after a block tag is dropped, so
# such newlines are written as expressions ({{ '\n' }}).
# `content` of the trained turn may start with the `<think>\n` the generation prompt already holds.
_R1 = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<｜User｜>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if loop.last and not add_generation_prompt %}"
    "<｜Assistant｜><think>\n"
    "{% if content.startswith('<think>\n') %}{% set content = content[8:] %}{% endif %}"
    "{% generation %}{{ content }}<｜end▁of▁sentence｜>{% endgeneration %}"
    "{% else %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "<｜Assistant｜>{{ content }}<｜end▁of▁sentence｜>"
    "{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)

_CHATML = (
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and loop.last and not add_generation_prompt %}"
    "<|im_start|>assistant\n{% generation %}{{ content }}<|im_end|>{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1].lstrip() %}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ content }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_LLAMA3 = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and loop.last and not add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% generation %}{{ content }}<|eot_id|>{% endgeneration %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1].lstrip() %}{% endif %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ content }}<|eot_id|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    jinja: str
    eos: str  # ends an assistant turn: the token generation must stop at
    specials: tuple[str, ...]  # marker strings the tokenizer must hold as single tokens
    bos: str | None = None  # the BOS its official tokenizer has (used when rendering without one)


TEMPLATES = {
    "r1-qwen": ChatTemplate("r1-qwen", _R1, R1_EOS, ("<｜User｜>", "<｜Assistant｜>", R1_EOS), R1_BOS),
    "r1-llama": ChatTemplate("r1-llama", _R1, R1_EOS, ("<｜User｜>", "<｜Assistant｜>", R1_EOS), R1_BOS),
    "chatml": ChatTemplate("chatml", _CHATML, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
    "llama3": ChatTemplate(
        "llama3", _LLAMA3, "<|eot_id|>", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|begin_of_text|>"
    ),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        close = difflib.get_close_matches(name, TEMPLATES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(TEMPLATES)}"
        raise UserError(f"chat template {name!r} is unknown; {hint}") from None


def render(
    name: str, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False, bos_token: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """(text, trained character spans) of `messages` under template `name`.

    `bos_token` defaults to the official tokenizer's BOS; pass "" to render without one.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    template = get_template(name)
    check_messages(messages)
    bos = template.bos if bos_token is None else bos_token
    texts, spans = render_jinja_template(
        [messages],
        chat_template=template.jinja,
        add_generation_prompt=add_generation_prompt,
        return_assistant_tokens_mask=True,
        bos_token=bos or "",
        eos_token=template.eos,
    )
    return texts[0], [tuple(s) for s in spans[0]]


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise UserError("messages: must be a non-empty JSON array of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise UserError(f"messages[{i}]: must be an object with role system|user|assistant")
        if not isinstance(m.get("content"), str):
            raise UserError(f"messages[{i}].content: must be a string")
