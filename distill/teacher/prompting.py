"""What is sent for one (prompt, sample): the R1 recipe's user turn, as chat messages or a rendered prompt.

R1 used no system prompt and no few-shot examples; math problems end with "Please reason step by
step, and put your final answer within \\boxed{}."; the response starts with a forced `<think>\\n`.
With the chat API the server's chat template adds that opening. With the completion API the prompt
is rendered here, and always ends with `<think>\\n`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.teacher.config import TeacherConfig

THINK_OPEN = "<think>\n"


@dataclass(frozen=True)
class Request:
    """One teacher sample to produce. `key` is what exactly-once is about: (prompt id, sample)."""

    id: str
    sample: int
    domain: str
    problem: str
    answer: str | None  # only the synthetic teacher looks at it
    seed: int | None

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.sample)


def user_turn(problem: str, domain: str, cfg: TeacherConfig) -> str:
    suffix = {"math": cfg.math_suffix, "science": cfg.science_suffix, "code": cfg.code_suffix}.get(domain, "")
    if suffix and suffix not in problem:
        return f"{problem.rstrip()}\n{suffix}"
    return problem


def messages(req: Request, cfg: TeacherConfig) -> list[dict[str, str]]:
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return [*system, {"role": "user", "content": user_turn(req.problem, req.domain, cfg)}]


def completion_prompt(req: Request, cfg: TeacherConfig) -> str:
    """The prompt of the completion API: the teacher's chat template, ending with `<think>\\n`."""
    text = _renderer(cfg.chat_template)(messages(req, cfg))
    return text if text.endswith(THINK_OPEN) else text + THINK_OPEN


@cache
def _renderer(template: str) -> Any:
    if template == "deepseek-r1":  # R1's own format: the training template r1-qwen, at inference
        from distill.train.templates import render

        return lambda msgs: render("r1-qwen", msgs, add_generation_prompt=True)[0]
    if not Path(template).is_dir():
        raise UserError(f"chat_template {template!r}: use 'deepseek-r1' or a tokenizer folder that has a chat template")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(template)
    if not tok.chat_template:
        raise UserError(f"chat_template {template!r}: the tokenizer there has no chat template; add one")
    return lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
