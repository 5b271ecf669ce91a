"""The teacher YAML (`distill generate --teacher TEACHER.yaml`): which backend, which model, how to sample.

Only the keys that change what the teacher writes (backend, model, API, template, sampling) go into
the output's fingerprint. Where the servers are, how many requests are in flight and how patiently
they are retried can change between runs of one dataset: a job moved to other nodes resumes.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.config import StrictModel
from distill.stages import Stage, register

R1_MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


class Prices(StrictModel):
    """USD per million tokens, for the cost line of the summary."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


LATE_FAULTS = ("loop", "drift")  # added 2026-12: absent from a fingerprint while 0


class SyntheticFaults(StrictModel):
    """Share of samples given each fault; at most one fault per sample, so the shares add up to <= 1."""

    wrong_answer: float = Field(default=0.0, ge=0, le=1, description="a slip in the last step: wrong final answer")
    no_boxed: float = Field(default=0.0, ge=0, le=1, description="the answer stated without \\boxed{}")
    truncated: float = Field(default=0.0, ge=0, le=1, description="cut off mid-reasoning, finish_reason=length")
    unclosed_think: float = Field(default=0.0, ge=0, le=1, description="<think> never closed, finish_reason=stop")
    repetition: float = Field(default=0.0, ge=0, le=1, description="one line repeated in a loop")
    language_mix: float = Field(default=0.0, ge=0, le=1, description="a passage in Chinese inside the reasoning")
    code_block: float = Field(default=0.0, ge=0, le=1, description="a ```python block in the reasoning")
    long_paragraph: float = Field(default=0.0, ge=0, le=1, description="one runaway paragraph of 6,000+ chars")
    loop: float = Field(default=0.0, ge=0, le=1, description="after reasoning, one line over and over to max_tokens")
    drift: float = Field(default=0.0, ge=0, le=1, description="after reasoning, Chinese until max_tokens")

    @model_validator(mode="after")
    def _at_most_one(self) -> SyntheticFaults:
        total = sum(self.model_dump().values())
        if total > 1 + 1e-9:
            raise ValueError(f"fault shares add up to {total:.3f}; at most one fault per sample, so keep them <= 1")
        return self


class SyntheticPassRate(StrictModel):
    """Easy and hard prompts: each prompt's pass rate is drawn from Beta(alpha, beta), seeded by its problem text
    (so the fault server and the backend agree), and each sample is right with that probability. A strong
    teacher on a curated set looks like Beta(2, 1): most prompts easy, a tail of hard ones."""

    alpha: float = Field(gt=0)
    beta: float = Field(gt=0)


class SyntheticLengths(StrictModel):
    """Reasoning padded to about this many tokens (log-normal, sigma 0.25): R1's wrong traces run longer than its
    right ones, as it keeps re-checking a result that does not come out."""

    right_tokens: int = Field(ge=1)
    wrong_tokens: int = Field(ge=1)


class SyntheticConfig(StrictModel):
    faults: SyntheticFaults = Field(default_factory=SyntheticFaults)
    seed: int = 0
    pass_rate: SyntheticPassRate | None = Field(
        default=None, description="per-prompt pass rates (replaces faults.wrong_answer); default: one rate for all"
    )
    lengths: SyntheticLengths | None = Field(default=None, description="reasoning lengths of right / wrong traces")


class VLLMConfig(StrictModel):
    """Engine arguments of vLLM's offline `LLM` (backend: vllm)."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=1)
    dtype: str = "auto"
    engine_args: dict[str, Any] = Field(default_factory=dict, description="any other `LLM(...)` keyword")


class TransformersConfig(StrictModel):
    """`model.generate` on this machine (backend: transformers): small models, CPU or one GPU."""

    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class TeacherConfig(StrictModel):
    backend: Literal["openai", "vllm", "transformers", "synthetic", "replay"]
    model: str = Field(
        description="served model name (openai), a model path or Hub name (vllm, transformers); replay: a file of "
        "answers already written (problem, content, optional reasoning), relative to the teacher YAML",
    )  # fmt: skip
    name: str | None = Field(default=None, description="the `teacher` column; default: model")
    # --- where (openai) -----------------------------------------------------------------------------
    base_urls: list[str] = Field(default_factory=list, description="OpenAI-compatible servers, http://host:port/v1")
    api_key_env: str | None = Field(default=None, description="environment variable holding the API key")
    api: Literal["chat", "completion"] = Field(
        default="chat", description="chat: /chat/completions; completion: /completions with a rendered prompt"
    )
    chat_template: str = Field(
        default="deepseek-r1",
        description="completion API: 'deepseek-r1' (built in) or a tokenizer folder whose chat template to use",
    )
    stream: bool = Field(default=False, description="stream responses (for proxies that cut idle connections)")
    concurrency: int = Field(default=256, ge=1, description="requests in flight over all base_urls")
    request_timeout_s: float = Field(default=3600.0, gt=0, description="one request, start to last byte")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=8, ge=0, description="retries of one request after its first attempt")
    backoff_s: float = Field(default=1.0, gt=0, description="first retry's backoff; doubles, with full jitter")
    max_backoff_s: float = Field(default=60.0, gt=0)
    endpoint_cooldown_s: float = Field(default=5.0, gt=0, description="a dead endpoint rests this long, doubling")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="more request fields (top_k, min_p, ...)")
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="a hosted API's quota: requests sent in any 60 s, over all base_urls"
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="a hosted API's quota: prompt + completion tokens in any 60 s"
    )
    expected_completion_tokens: int | None = Field(
        default=None, ge=1, description="what a completion counts against tokens_per_minute until its usage is "
        "back; default max_tokens (what providers hold at send time)",
    )  # fmt: skip
    # --- what -----------------------------------------------------------------------------------------
    samples: int = Field(default=1, ge=1, description="samples per prompt")
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=32768, ge=1)
    seed: int | None = Field(default=0, description="per-request seeds derive from it, the prompt id and sample")
    system_prompt: str | None = Field(
        default=None, description="a system message for the teacher (not part of the user turn the student sees)"
    )
    math_suffix: str = Field(default=R1_MATH_SUFFIX, description="appended to math problems ('' for none)")
    science_suffix: str = Field(default="", description="appended to multiple-choice problems (eval sets one)")
    code_suffix: str = Field(default="", description="appended to code problems (eval sets one)")
    # --- offline backends ---------------------------------------------------------------------------
    batch_size: int = Field(
        default=64, ge=1, description="transformers, synthetic: requests per generate call; vllm: requests kept in "
        "its engine at once (above max_num_seqs, so it never waits for the next)",
    )  # fmt: skip
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    transformers: TransformersConfig = Field(default_factory=TransformersConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    prices: Prices | None = None

    @field_validator("model", "chat_template")
    @classmethod
    def _expand_home(cls, v: str) -> str:
        return os.path.expanduser(v) if v.startswith("~") else v

    @model_validator(mode="after")
    def _urls_for_openai(self) -> TeacherConfig:
        if self.backend == "openai" and not self.base_urls:
            raise ValueError("backend 'openai' needs base_urls (e.g. [http://localhost:8000/v1])")
        limits = [k for k in ("requests_per_minute", "tokens_per_minute") if getattr(self, k) is not None]
        if limits and self.backend != "openai":
            raise ValueError(f"{limits[0]} paces requests to a server: it needs backend 'openai'")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_urls: {url!r} is not an http(s) URL; write http://host:port/v1")
        return self

    @property
    def teacher_name(self) -> str:
        return self.name or self.model

    def params(self) -> dict[str, Any]:
        """The sampling parameters, as recorded in every row's `params`."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            **self.extra_body,
        }

    def fingerprint_fields(self) -> dict[str, Any]:
        """What the output depends on (see the module's docstring)."""
        keys = ["backend", "model", "name", "api", "chat_template", "samples", "math_suffix", "science_suffix",
                "code_suffix"]  # fmt: skip
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["params"] = self.params()
        if self.backend == "synthetic":
            synthetic = self.synthetic.model_dump(exclude_none=True)  # what is unset is absent: old fingerprints hold
            synthetic["faults"] = {k: v for k, v in synthetic["faults"].items() if v or k not in LATE_FAULTS}
            out["synthetic"] = synthetic
        if self.system_prompt is not None:  # absent otherwise: earlier outputs keep their fingerprint
            out["system_prompt"] = self.system_prompt
        return out

    def request_seed(self, prompt_id: str, sample: int) -> int | None:
        """A seed per (prompt, sample): a retried or resumed request asks for the same sample."""
        if self.seed is None:
            return None
        digest = hashlib.sha256(f"{self.seed}:{prompt_id}:{sample}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class GenerateOptions(StrictModel):
    """The options of `distill generate` and of a pipeline step with `stage: generate`."""

    teacher: str = Field(description="Teacher YAML (configs/teacher/*.yaml): backend, model, sampling")
    shard: str | None = Field(
        default=None,
        description="i/n: this process takes the i-th of n disjoint parts of the prompts (0-based); `slurm`: i and "
        "n from SLURM_PROCID and SLURM_NTASKS. The last part to finish merges all n into --out",
    )
    base_url: list[str] | None = Field(
        default=None, description="Server base URL(s) for this process, replacing the YAML's base_urls"
    )
    preset: str | None = Field(
        default=None,
        description="Judge each trace as it arrives with this filter preset (filters/*.yaml) and stop a prompt once "
        "--keep of its samples pass; without it, every prompt gets the teacher's `samples`",
    )
    keep: int | None = Field(default=None, ge=1, description="With --preset: passing samples a prompt needs")
    max_samples: int | None = Field(
        default=None, ge=1, description="With --preset: the most samples one prompt may cost (default: `samples`)"
    )
    speculate: int = Field(
        default=0, ge=0, description="With --preset: in the run's tail (no prompt left to start, few open), samples "
        "a prompt may have in flight beyond those it surely needs, to finish sooner (cancelled once it is decided; "
        "those that come back cost tokens). 0: never more than the sequential rule draws",
    )  # fmt: skip

    @model_validator(mode="after")
    def _adaptive(self) -> GenerateOptions:
        if self.preset is None and (self.keep is not None or self.max_samples is not None):
            raise ValueError("--keep and --max-samples judge traces as they arrive: give --preset too")
        if self.preset is not None and self.keep is None:
            raise ValueError("--preset judges traces as they arrive: give --keep (passing samples a prompt needs)")
        if self.keep is not None and self.max_samples is not None and self.keep > self.max_samples:
            raise ValueError(f"--keep {self.keep} is more than --max-samples {self.max_samples}")
        return self


STAGE = register(
    Stage(
        name="generate",
        help="""Sample the teacher: `samples` traces per prompt, exactly one row per (`id`, `sample`).

    Each row has the prompt's columns, `sample`, `reasoning` (inside <think>), `content` (after
    </think>), `finish_reason`, token counts, `teacher`, `params` and `latency_s`. Killed and rerun,
    it asks only for the samples not yet written; samples that failed every retry are in
    `OUT/_rejects/` and are asked for again by the next run of the same command.

    Example:

      distill generate --input runs/demo/prompts --teacher configs/teacher/synthetic.yaml --out runs/traces

    With the full R1 behind vLLM: `--teacher configs/teacher/r1-vllm.yaml` (its `base_urls`); one client of
    16, each beside its own server: `--shard 3/16 --base-url http://localhost:8000/v1` (README, "Teacher
    traces").

    Paying only for what is kept: `--preset filters/r1.yaml --keep 2 --max-samples 8` judges each trace as
    it arrives and stops a prompt once 2 pass (README, "The teacher's bill").
    """,
        options=GenerateOptions,
        load="distill.teacher.stage:load",
        run="distill.teacher.stage:run",
        plan="distill.teacher.stage:plan",
        details="distill.teacher.stage:details",
        rows_per_shard=1_000,
        rows_help="Prompts per shard (a shard is written once all its samples are in): the unit of resume.",
        parallel=False,  # one process of many concurrent requests; more processes: --shard
        input_help="Prompts: the --out of `distill prompts`, or any prompt file.",
        out_help="Output dataset directory of traces.",
    )
)
