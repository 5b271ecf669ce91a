"""The options of the judging steps, each declared here: `distill filter` (its preset: which checks a trace
must pass, every threshold), `distill select` and `distill difficulty`. Their stages are filters/stage.py,
filters/select.py and filters/difficulty.py."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config import DOMAINS, StrictModel
from distill.sources.mapping import TraceMapping
from distill.stages import Flag, Stage, register
from distill.train.config import TINY


class ReadabilityConfig(StrictModel):
    enabled: bool = True
    require_think: bool = Field(
        default=True, description="exactly one closed <think> block with reasoning in it (false: none is needed, "
        "but one that is opened must close)",
    )  # fmt: skip
    min_answer_chars: int = Field(default=1, ge=0, description="the answer after </think> (`empty` below this)")
    max_tokens: int | None = Field(default=32_768, ge=1, description="completion tokens (`too_long`)")
    max_paragraph_chars: int | None = Field(default=5_000, ge=1, description="`long_paragraph` above this")
    allow_code_blocks: bool = Field(default=False, description="fenced code in the reasoning of non-code problems")
    max_line_repeats: int = Field(default=5, ge=1, description="the same substantial line more often: `repetition`")
    min_repeated_line_chars: int = Field(default=20, ge=1)
    repetition_ngram: int = Field(default=20, ge=2, le=256, description="word n-grams for the repeated share")
    max_repeated_ngram_share: float = Field(default=0.3, gt=0, le=1)


class LanguageCheckConfig(StrictModel):
    enabled: bool = True
    max_foreign_share: float = Field(
        default=0.02, ge=0, le=1, description="letters of another script than the target's (`language_mix`)"
    )
    max_foreign_windows: float = Field(
        default=0.25, ge=0, le=1, description="share of windows identified as another language (`language_mix`)"
    )
    windows: int = Field(default=8, ge=1, description="windows spread over the text for language ID")
    window_chars: int = Field(default=1_000, ge=50)
    min_chars: int = Field(default=40, ge=1, description="shorter prose is not judged")
    min_foreign_words: int = Field(
        default=3, ge=1, description="fewer words in another script are never mixing (a name, one borrowed word)"
    )
    min_window_letters: int = Field(
        default=40, ge=1, description="a window with fewer letters of real words (math and variables aside) is not read"
    )
    min_confidence: float = Field(
        default=0.8, ge=0, le=1, description="language ID guesses below this confidence do not count"
    )


class CodeCheckConfig(StrictModel):
    sandbox: Literal["bwrap", "unsafe-rlimits-only"] = Field(
        default="bwrap",
        description="bwrap: namespaces, no root needed (code checks stop where it cannot run); "
        "unsafe-rlimits-only: no isolation but rlimits, accepted explicitly (distill/filters/sandbox.py)",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="wall clock for one answer's test suite")
    cpu_s: int = Field(default=10, ge=1)
    memory_mb: int = Field(default=1_024, ge=64)
    file_mb: int = Field(default=16, ge=1)
    processes: int = Field(default=32, ge=1)


class CorrectnessConfig(StrictModel):
    enabled: bool = True
    math_timeout_s: float = Field(default=5.0, gt=0, description="wall clock for one (gold, answer) comparison")
    code: CodeCheckConfig = Field(default_factory=CodeCheckConfig)
    require_gold: bool = Field(
        default=True, description="math/science/code rows without an answer or tests are rejected (`unverifiable`)"
    )


JUDGE_FIELDS = ("problem", "gold", "answer", "content")
JUDGE_PROMPT = """You are checking a solution's final answer against the reference answer of a problem.
Decide only whether the final answer is equivalent to the reference answer: ignore how it was reached,
and accept equivalent forms (1/2 and 0.5, reordered lists, units written differently).

Problem:
{problem}

Reference answer:
{gold}

Final answer to check:
{answer}

End your reply with one line, exactly "Verdict: correct" or "Verdict: incorrect"."""
# "incorrect" must not match: the word after the colon has to be "correct" itself
JUDGE_CORRECT = r"(?i)verdict\W{0,3}\s*[:\-]\s*\W{0,3}correct\b"


class JudgeConfig(StrictModel):
    """An LLM judge of answers the rule checks cannot decide (R1's "generative reward model")."""

    teacher: str = Field(description="teacher YAML of the judge (backend openai), relative to the preset file")
    prompt: str = Field(default=JUDGE_PROMPT, description="template with {problem}, {gold}, {answer}, {content}")
    correct_pattern: str = Field(default=JUDGE_CORRECT, description="regex: the reply says correct when it matches")
    domains: list[str] = Field(
        default_factory=list, description="domains whose rows with a gold answer the judge decides (e.g. [general])"
    )
    on_unverifiable: bool = Field(
        default=True, description="rows the rule checks call unverifiable or verify_timeout go to the judge"
    )
    cache: str | None = Field(
        default=None, description="SQLite file of replies (relative to the preset); default $DISTILL_CACHE/judge.sqlite"
    )

    @field_validator("prompt")
    @classmethod
    def _names_the_answer(cls, v: str) -> str:
        if "{answer}" not in v and "{content}" not in v:
            raise ValueError("the template must hold {answer} or {content}: the judge has to see what it judges")
        unknown = sorted(set(re.findall(r"\{(\w+)\}", v)) - set(JUDGE_FIELDS))
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; the template can use {{problem}}, {{gold}}, "
                             "{answer}, {content}")  # fmt: skip
        return v

    @field_validator("correct_pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, v: list[str]) -> list[str]:
        for d in v:
            if d not in DOMAINS:
                raise ValueError(f"unknown domain {d!r}; the domains are {', '.join(DOMAINS)}")
        return v


class FilterPreset(StrictModel):
    """Which checks a trace must pass to be kept; every threshold lives here, not in the code."""

    name: str
    description: str = ""
    correctness: CorrectnessConfig = Field(default_factory=CorrectnessConfig)
    readability: ReadabilityConfig = Field(default_factory=ReadabilityConfig)
    language: LanguageCheckConfig = Field(default_factory=LanguageCheckConfig)
    judge: JudgeConfig | None = Field(default=None, description="an LLM judge (off when absent)")


class FilterOptions(StrictModel):
    """The options of `distill filter` and of a pipeline step with `stage: filter`."""

    preset: str = Field(description="Filter preset YAML (filters/r1.yaml, ...)")
    layout: str | None = Field(
        default=None,
        description="Read every input in this trace layout (openr1-math, s1k, plain, ...) instead of detecting it",
    )
    sources: list[TraceMapping] = Field(
        default_factory=list,
        description="column mappings for trace files in no known layout (README, 'Public trace sets')",
    )

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, v: str | None) -> str | None:
        from distill.sources.trace_layouts import TRACE_LAYOUTS  # late: `distill --help` reads no layout

        if v is not None and v not in TRACE_LAYOUTS:
            raise ValueError(f"unknown trace layout {v!r}; use one of {', '.join(TRACE_LAYOUTS)}")
        return v

    @field_validator("sources")
    @classmethod
    def _known_layouts(cls, v: list[TraceMapping]) -> list[TraceMapping]:
        from distill.sources.layouts import check_names
        from distill.sources.trace_layouts import TRACE_LAYOUTS

        check_names(v, TRACE_LAYOUTS, "trace layout")
        return v


class SelectOptions(StrictModel):
    """The options of `distill select` and of a pipeline step with `stage: select`."""

    per_prompt: int = Field(ge=1, description="At most this many traces per prompt")
    seed: int = Field(default=0, description="Seed of the choice among a prompt's kept traces")
    min_pass_rate: float = Field(
        default=0.0, ge=0, le=1, description="Keep only prompts whose teacher samples are correct at least this often"
    )
    max_pass_rate: float = Field(
        default=1.0, ge=0, le=1, description="Keep only prompts whose teacher samples are correct at most this often "
        "(below 1: drop what the teacher always solves)",
    )  # fmt: skip
    student_rates: str | None = Field(
        default=None, description="The --out of `distill difficulty` (a pipeline: its step's name)"
    )
    max_student_pass_rate: float = Field(
        default=1.0, ge=0, le=1, description="Keep only prompts the student solves at most this often (needs "
        "--student-rates)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ordered(self) -> SelectOptions:
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError(f"min_pass_rate {self.min_pass_rate} is above max_pass_rate {self.max_pass_rate}")
        return self


class DifficultyOptions(StrictModel):
    """The options of `distill difficulty` and of a pipeline step with `stage: difficulty`."""

    model: str = Field(
        description=f"The student before training: a checkpoint folder, a server URL, or {TINY} (the demo's)"
    )
    samples: int = Field(default=4, ge=1, description="Samples per prompt (k)")
    seed: int = Field(default=0, description="Seed of the per-sample sampling seeds")
    max_tokens: int = Field(default=4096, ge=1, description="Longest response")
    temperature: float | None = Field(default=None, ge=0, description="Default: the checkpoint's, else 0.6")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Default: the checkpoint's, else 0.95")
    backend: Literal["transformers", "vllm"] = Field(default="transformers", description="For a checkpoint folder")
    served_model_name: str | None = Field(default=None, description="For a server URL: the model it serves")


STAGE = register(
    Stage(
        name="filter",
        help="""Judge every trace: one verdict row each, with `correct`, `readable`, `language_ok`, `keep` and
    `reject_reason` (the first check that failed) plus `reject_detail`.

    Example:

      distill filter --input runs/demo/traces --preset filters/r1.yaml --out runs/verdicts
    """,
        options=FilterOptions,
        load="distill.filters.stage:load",
        config_flag=True,
        config_help="YAML of the options: `preset`, `layout`, and `sources` (trace mappings for files in no known "
        "layout); flags override it.",
        # a path typed on the command line is relative to the working directory, even beside --config
        flags={"preset": Flag("preset", str, "Filter preset YAML (filters/r1.yaml, ...).", path=True)},
        run="distill.filters.stage:run",
        plan="distill.filters.stage:plan",
        details="distill.filters.stage:details",
        report="distill.filters.stage:report",
        inspect="distill.filters.stage:inspect_output",
        rows_per_shard=2_000,
        rows_help="Traces per output shard (the unit of work and resume).",
        input_help="Traces: a dataset directory, .parquet or .jsonl file, a folder of them, a glob.",
        out_help="Output dataset directory of verdicts.",
    )
)


STAGE = register(
    Stage(
        name="select",
        help="""Keep at most K kept traces per prompt: identical traces count once, then a seeded order decides.

    Example:

      distill select --input runs/demo/verdicts --out runs/kept-4 --per-prompt 4

      distill select --input runs/demo/verdicts --out runs/kept-hard --per-prompt 2 --max-pass-rate 0.75
    """,
        options=SelectOptions,
        run="distill.filters.select:run",
        reads=lambda o: [o.student_rates] if o.student_rates else [],
        plan="distill.filters.select:plan",
        details="distill.filters.select:details",
        input_help="Verdicts: the --out of `distill filter`, or verdict rows in any input format.",
        out_help="Output dataset directory of the chosen traces.",
    )
)


STAGE = register(
    Stage(
        name="difficulty",
        help="""Each prompt's pass rate for a student: k samples through the eval's generation and verifiers.

    `distill select --student-rates DIR --max-student-pass-rate X` then drops what the student already solves.

    Example:

      distill difficulty --input data/demo/heldout.jsonl --model distill:tiny-qwen2 --max-tokens 32 --out runs/rates
    """,
        options=DifficultyOptions,
        run="distill.filters.difficulty:run",
        plan="distill.filters.difficulty:plan",
        details="distill.filters.difficulty:details",
        rows_per_shard=256,
        rows_help="Student samples per shard of _samples/ (the unit of resume).",
        input_help="Prompts: a dataset directory, .parquet or .jsonl file, a folder of them, a glob.",
        out_help="Output dataset directory: one row per prompt with the student's pass rate.",
    )
)
