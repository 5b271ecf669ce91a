"""The LLM judge: answers the rule checks cannot decide, judged by a model against the gold answer.

R1 "expanded the dataset ... using a generative reward model by feeding the ground-truth and model
predictions into DeepSeek-V3 for judgment"; open-r1's OpenR1-Math-220k rescued answers math-verify could
not parse the same way. A preset's `judge:` block (distill/config.py `JudgeConfig`) says which rows go to
the judge: every row of `domains` that has a gold answer, and, with `on_unverifiable`, rows whose rule check
said `unverifiable` or `verify_timeout`.

Requests go through the teacher's own OpenAI-compatible client (retries, many endpoints, one line for a
wrong key or URL). Each distinct rendered prompt (problem, gold, answer) is asked once: the reply is kept in
a SQLite file shared by the filter's worker processes and by later runs, and the verdict is the
`correct_pattern` applied to the stored reply, so a changed pattern needs no new requests. A judge that does
not answer stops the run with one line: a row is never marked for want of a judge.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from distill.config import load_config
from distill.errors import UserError
from distill.filters.config import JudgeConfig
from distill.teacher.config import TeacherConfig
from distill.tokenizer import cache_dir

_FIELD = re.compile(r"\{(problem|gold|answer|content)\}")
REPLY_CHARS = 2_000  # of the reply kept in reject_detail: the verdict line is at its end


@dataclass(frozen=True)
class JudgeItem:
    problem: str
    gold: str
    answer: str  # the final answer as the rule checks extract it (the content when there is none)
    content: str  # everything after </think>


@dataclass(frozen=True)
class Judgement:
    correct: bool | None  # None: the judge refused this request (a later run asks again)
    reply: str


def check_teacher(path: str, where: str) -> TeacherConfig:
    """The judge's teacher YAML, or one line saying why it cannot judge."""
    cfg = _teacher(path)
    if cfg.backend != "openai":
        raise UserError(f"{where}: backend {cfg.backend!r}; the judge is asked through the OpenAI-compatible client: "
                        "serve the model (vllm serve, sglang) and use backend: openai")  # fmt: skip
    if cfg.requests_per_minute or cfg.tokens_per_minute:
        raise UserError(f"{where}: requests_per_minute / tokens_per_minute are not applied to a judge (each filter "
                        "worker would take the whole quota); leave them out and lower concurrency")  # fmt: skip
    return cfg


@cache
def _teacher(path: str) -> TeacherConfig:
    return load_config(path, TeacherConfig)


def cache_path(cfg: JudgeConfig) -> Path:
    return Path(cfg.cache).expanduser() if cfg.cache else cache_dir() / "judge.sqlite"


class JudgeCache:
    """Replies by prompt key, and what each batch sent, in one SQLite file (WAL: many worker processes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=120, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT, prompt_tokens INT, "
            "completion_tokens INT, created REAL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS usage (t REAL, sent INT, cached INT, retries INT, errors TEXT, "
            "prompt_tokens INT, completion_tokens INT)"
        )

    def get(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            out.update(self.db.execute(f"SELECT key, reply FROM replies WHERE key IN ({marks})", part).fetchall())
        return out

    def put(self, rows: list[tuple[str, str, int, int]]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)", [(*r, now) for r in rows])

    def record(self, sent: int, cached: int, retries: int, errors: Counter[str], prompt: int, completion: int) -> None:
        self.db.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), sent, cached, retries, json.dumps(dict(errors)), prompt, completion),
        )

    def usage_since(self, t: float) -> dict[str, Any]:
        sent = cached = retries = prompt = completion = 0
        errors: Counter[str] = Counter()
        for s, c, r, e, p, o in self.db.execute(
            "SELECT sent, cached, retries, errors, prompt_tokens, completion_tokens FROM usage WHERE t >= ?", (t,)
        ):
            sent, cached, retries, prompt, completion = sent + s, cached + c, retries + r, prompt + p, completion + o
            errors.update(json.loads(e))
        return {"requests_sent": sent, "from_cache": cached, "retries": retries, "errors": dict(errors),
                "prompt_tokens": prompt, "completion_tokens": completion}  # fmt: skip

    def close(self) -> None:
        self.db.close()


def render(template: str, item: JudgeItem) -> str:
    """The template with its four fields filled in; other braces (LaTeX in the template) are left alone."""
    values = {"problem": item.problem, "gold": item.gold, "answer": item.answer, "content": item.content}
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def decide(items: list[JudgeItem], cfg: JudgeConfig) -> list[Judgement]:
    """One judgement per item: from the cache, else asked of the judge (each distinct prompt once)."""
    teacher = check_teacher(cfg.teacher, "judge.teacher")
    fingerprint = json.dumps(teacher.fingerprint_fields(), sort_keys=True)
    prompts = [render(cfg.prompt, it) for it in items]
    keys = [hashlib.sha256(f"{fingerprint}\x1f{p}".encode()).hexdigest() for p in prompts]
    store = JudgeCache(cache_path(cfg))
    try:
        unique = list(dict.fromkeys(keys))
        replies = store.get(unique)
        todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in replies}
        refused: dict[str, str] = {}
        if todo:
            answered, refused, stats = asyncio.run(_ask(teacher, todo))
            store.put([(k, a["reply"], a["prompt_tokens"], a["completion_tokens"]) for k, a in answered.items()])
            store.record(len(todo), len(unique) - len(todo), stats.retries, stats.errors,
                         sum(a["prompt_tokens"] for a in answered.values()),
                         sum(a["completion_tokens"] for a in answered.values()))  # fmt: skip
            replies.update({k: a["reply"] for k, a in answered.items()})
            failed = [k for k in todo if k not in answered and k not in refused]
            if failed:
                raise UserError(
                    f"judge: {teacher.model} at {', '.join(teacher.base_urls)} did not answer "
                    f"({stats.last_error}); no row was marked: start the judge or fix judge.teacher, then run the "
                    "filter again (answers already given are kept)"
                )
        else:
            store.record(0, len(unique), 0, Counter(), 0, 0)
    finally:
        store.close()
    pattern = re.compile(cfg.correct_pattern)
    out = []
    for k in keys:
        if k in refused:
            out.append(Judgement(None, refused[k]))
        else:
            reply = replies[k]
            out.append(Judgement(pattern.search(reply) is not None, reply))
    return out


@dataclass
class _AskStats:
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


async def _ask(
    teacher: TeacherConfig, todo: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str], _AskStats]:
    """Send every prompt (at most `concurrency` at once): the answered, the refused (other 4xx), and stats."""
    from distill.teacher.openai_client import OpenAIBackend
    from distill.teacher.prompting import Request

    backend = OpenAIBackend(teacher)
    await backend.start()
    gate = asyncio.Semaphore(backend.workers)
    answered: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    stats = _AskStats()

    async def one(key: str, prompt: str) -> None:
        async with gate:
            req = Request(key, 0, "judge", prompt, None, teacher.request_seed(key, 0))
            out = await backend.one(req)
        if "error" in out:
            if out["error"].startswith("request_rejected"):
                refused[key] = f"the judge refused the request: {out['error'][:300]}"
            else:
                stats.last_error = out["error"][:300]
            return
        reply = (out.get("content") or "").strip() or (out.get("reasoning") or "").strip()
        answered[key] = {"reply": reply, "prompt_tokens": out.get("prompt_tokens") or 0,
                         "completion_tokens": out.get("completion_tokens") or 0}  # fmt: skip

    try:
        await asyncio.gather(*(one(k, p) for k, p in todo.items()))
    finally:
        await backend.close()
    stats.retries, stats.errors = backend.stats.retries, backend.stats.errors
    return answered, refused, stats
