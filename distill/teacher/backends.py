"""The teacher backends behind one interface: `generate` a batch of requests, one result per request.

`openai` (any OpenAI-compatible server: vLLM, SGLang, a hosted API; distill/teacher/openai_client.py)
runs many concurrent one-request calls; the offline backends (`synthetic`, `transformers`, `vllm`;
distill/teacher/offline.py) run one batch at a time in a thread. The stage's scheduler only sees `Backend`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from distill.teacher.config import TeacherConfig
from distill.teacher.prompting import Request


class BackendStats(Protocol):
    errors: Counter[str]  # transient failures by kind, retried or not
    retries: int

    @property
    def rate_wait_s(self) -> float: ...  # time sending was held back by the teacher's requests/tokens per minute


class Backend(Protocol):
    workers: int  # concurrent `generate` calls the scheduler keeps going
    batch_size: int  # requests per call
    stats: BackendStats | None  # a network client's transient errors; None for an offline backend

    async def start(self) -> None: ...  # load the model or open the connection pool

    async def close(self) -> None: ...

    async def generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        """One result per request, in order: the RESULT_COLUMNS of distill/teacher/chunks.py, or
        {"error": "code: detail"} for a request that failed every retry."""
        ...


def make_backend(cfg: TeacherConfig, work: Path | None = None) -> Backend:
    """`work`: the output's work folder (what a backend keeps across a restart: the rate limit's window)."""
    from distill.teacher import offline

    if cfg.backend == "openai":
        from distill.teacher.openai_client import OpenAIBackend

        return OpenAIBackend(cfg, work)
    return {
        "synthetic": offline.SyntheticBackend,
        "transformers": offline.TransformersBackend,
        "vllm": offline.VLLMBackend,
        "replay": offline.ReplayBackend,
    }[cfg.backend](cfg)
