"""Pydantic models of the YAML files, and loading that turns every mistake into one clear line.

An unknown key, a wrong type, a missing file or a YAML syntax error becomes a `UserError` naming the
file, the key (as a path such as `steps[1].rows_per_shard`) and the fix; the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import UserError
from distill.records import DOMAINS, RECORDS

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored is a wrong run days later."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- pipelines --------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Step(StrictModel):
    """One stage of a pipeline; its output is `<run dir>/<name>/`."""

    name: str = Field(description="the step's name and the name of its output directory")
    stage: str | None = Field(default=None, description="a declared stage (distill/stages.py); settings in `options`")
    function: str | None = Field(
        default=None,
        description="or a batch function: 'package.module:callable' or 'path/to/file.py:callable' "
        "(relative to the pipeline file)",
    )
    input: list[str] = Field(
        default_factory=list,
        description="earlier steps by name, or paths (dataset directories, .parquet, .jsonl, globs) "
        "relative to the pipeline file",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the stage's options (checked by its model)")
    input_record: str | None = Field(default=None, description="conform input rows to this record")
    output_record: str | None = Field(default=None, description="conform output rows to this record")
    rows_per_shard: int | None = Field(default=None, ge=1, description="rows per output shard; default: the stage's")
    batch_size: int = Field(default=1024, ge=1)
    workers: int | None = Field(default=None, ge=1, description="processes; default: all cores")

    @model_validator(mode="after")
    def _stage_or_function(self) -> Step:
        if (self.stage is None) == (self.function is None):
            raise ValueError(f"step {self.name!r}: give either `stage` (a declared stage) or `function`, not both")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.' (it names a folder)")
        return v

    @field_validator("stage")
    @classmethod
    def _declared_stage(cls, v: str | None) -> str | None:
        from distill.stages import known  # the stage modules import this one

        if v is not None and v not in known():
            raise ValueError(f"unknown stage {v!r}; the stages are {', '.join(known())}")
        return v

    @field_validator("input", mode="before")
    @classmethod
    def _one_input_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("input_record", "output_record")
    @classmethod
    def _known_record(cls, v: str | None) -> str | None:
        if v is not None and v not in RECORDS:
            raise ValueError(f"unknown record {v!r}; use one of {', '.join(RECORDS)}")
        return v


class PlanAssumptions(StrictModel):
    """What `distill run --dry-run` assumes where the inputs cannot tell (every figure is printed with it)."""

    prompts: int | None = Field(default=None, ge=1, description="prompts after curation, if inputs are not local")
    mean_prompt_tokens: float = Field(default=150, gt=0)
    mean_completion_tokens: float = Field(default=8_000, gt=0, description="R1 traces: thousands of tokens")
    teacher_tokens_per_s: float = Field(default=2_500, gt=0, description="generated tokens/s of one serving replica")
    gpus_per_teacher_replica: int = Field(default=16, ge=1, description="R1 671B: 2 nodes of 8xH100")
    keep_rate: float = Field(default=0.6, gt=0, le=1, description="share of traces the filter keeps")
    bytes_per_token: float = Field(default=4.0, gt=0, description="UTF-8 bytes per token of text")
    compression: float = Field(default=3.0, ge=1, description="text bytes / zstd Parquet bytes")
    shares: dict[str, float] = Field(
        default_factory=dict, description="function steps by name: the share of their input rows they keep (1.0)"
    )


class PipelineConfig(StrictModel):
    name: str
    out: str | None = Field(default=None, description="run directory; default runs/<name>")
    steps: list[Step] = Field(min_length=1)
    plan: PlanAssumptions = Field(default_factory=PlanAssumptions, description="assumptions of `run --dry-run`")

    @model_validator(mode="after")
    def _steps_are_ordered(self) -> PipelineConfig:
        seen: set[str] = set()
        names = [s.name for s in self.steps]
        for i, step in enumerate(self.steps):
            if step.name in seen:
                raise ValueError(f"steps[{i}]: a second step named {step.name!r}; step names must differ")
            for inp in step.input:
                if inp in names and inp not in seen:
                    raise ValueError(f"steps[{i}] ({step.name}) reads step {inp!r}, which does not come before it")
            seen.add(step.name)
        return self


# --- prompt curation (`distill prompts`) -------------------------------------------------------------


class SourceMapping(StrictModel):
    """How to read one kind of source whose columns differ from the prompt record.

    Either `layout` (a known layout by name, `distill/layouts.py`; files in a known layout need no mapping
    at all, this only picks one where the columns alone are ambiguous) or the column rules below.
    """

    match: str = Field(default="*", description="glob on the input path or file name; the first match applies")
    layout: str | None = Field(default=None, description="a known layout by name (e.g. gsm8k, math-solution)")
    name: str | None = Field(default=None, description="`source` of these rows; default: the file's name")
    columns: dict[str, str] = Field(default_factory=dict, description="source column -> prompt column")
    answer_from_boxed: bool = Field(
        default=False, description="`answer` holds a worked solution: keep its last \\boxed{} as the answer"
    )
    answer_after: str | None = Field(
        default=None, description="`answer` holds a worked solution: the answer is the text after this marker"
    )
    choices: str | list[str] | None = Field(
        default=None, description="a column holding a list of options, or the columns that each hold one"
    )
    correct_choice: str | None = Field(default=None, description="with a list of option columns: the right one")
    shuffle_choices: bool = Field(default=False, description="shuffle options (seeded by the problem)")
    messages: str | None = Field(
        default=None,
        description="a column of chat turns ({role, content} or {from, value}): the user turn is the problem",
    )
    domain: str | None = None
    language: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SourceMapping:
        if self.correct_choice is not None and (
            not isinstance(self.choices, list) or self.correct_choice not in self.choices
        ):
            raise ValueError("correct_choice must be one of the columns listed in `choices`")
        if self.answer_from_boxed and self.answer_after is not None:
            raise ValueError("give either answer_from_boxed or answer_after, not both")
        if self.layout is not None:
            from distill.layouts import LAYOUTS  # late: layouts are SourceMappings themselves

            if self.layout not in LAYOUTS:
                raise ValueError(f"unknown layout {self.layout!r}; use one of {', '.join(LAYOUTS)}")
            rules = ("columns", "answer_from_boxed", "answer_after", "choices", "correct_choice", "messages")
            if given := [k for k in rules if k in self.model_fields_set]:
                raise ValueError(f"`layout` already says how to read the columns; drop {', '.join(given)}")
        return self


class TraceMapping(StrictModel):
    """How to read one kind of trace file whose columns differ from the trace record.

    Either `layout` (a known trace layout by name, `distill/trace_layouts.py`; files in a known layout need
    no mapping at all) or the column rules below. The reply comes from exactly one of: `generations` (a list,
    one trace per element), `reasoning` + `content`, `response` (think block inline, or opened in the prompt),
    or the last assistant turn of `messages`. Columns no rule names are kept in `meta`.
    """

    match: str = Field(default="*", description="glob on the input path or file name; the first match applies")
    layout: str | None = Field(default=None, description="a known trace layout by name (e.g. openr1-math, s1k)")
    name: str | None = Field(default=None, description="`source` of these rows; default: the file's name")
    columns: dict[str, str] = Field(default_factory=dict, description="renames applied first: column -> column")
    problem: str | None = Field(default=None, description="column of the problem (default: from `messages`)")
    prompt: str | None = Field(default=None, description="column of the user turn exactly as the teacher got it")
    response: str | None = Field(default=None, description="column of the whole reply, think block inline")
    reasoning: str | None = Field(default=None, description="column of the thinking (a list is joined)")
    content: str | None = Field(default=None, description="column of the answer after the thinking")
    generations: str | None = Field(default=None, description="a list column: one trace per element")
    choices: str | None = Field(
        default=None,
        description="an OpenAI-style reply's `choices` ({message: {content, reasoning_content}, "
        "finish_reason}): one trace each",
    )
    messages: str | None = Field(
        default=None,
        description="chat turns ({role, content} or {from, value}): user -> problem, last assistant -> trace",
    )
    system: str | None = Field(default=None, description="column of a system prompt (kept in meta)")
    answer: str | None = Field(default=None, description="column of the gold answer")
    answer_from_solution: bool = Field(
        default=False, description="`answer` is a worked solution: its last \\boxed{}, or the text when it is short"
    )
    answer_after: str | None = Field(default=None, description="`answer` is worked: the answer follows this marker")
    tests: str | None = Field(default=None, description="column of code tests (JSON)")
    labels: list[str] = Field(
        default_factory=list, description="columns of the publisher's own verdict (bool, yes/no; lists per generation)"
    )
    finish_reason: str | None = Field(default=None, description="column of the finish reason (a list per generation)")
    teacher: str | None = Field(default=None, description="column naming the model that wrote the trace")
    sample: str | None = Field(default=None, description="column of the sample index (default: position, else 0)")
    aligned: list[str] = Field(
        default_factory=list, description="other list columns aligned with `generations`: element k goes to meta"
    )
    drop: list[str] = Field(default_factory=list, description="columns that only copy others (not kept in meta)")
    domain: str | None = Field(default=None, description="domain of rows that have none")
    language: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TraceMapping:
        if self.layout is not None:
            from distill.trace_layouts import TRACE_LAYOUTS  # late: layouts are TraceMappings themselves

            if self.layout not in TRACE_LAYOUTS:
                raise ValueError(f"unknown trace layout {self.layout!r}; use one of {', '.join(TRACE_LAYOUTS)}")
            rules = set(self.model_fields_set) - {"match", "layout", "name", "domain", "language"}
            if rules:
                raise ValueError(f"`layout` already says how to read the columns; drop {', '.join(sorted(rules))}")
        if self.answer_from_solution and self.answer_after is not None:
            raise ValueError("give either answer_from_solution or answer_after, not both")
        return self


class DedupConfig(StrictModel):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.65, gt=0, lt=1, description="estimated Jaccard of token shingles")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations")
    shingle_size: int = Field(
        default=2, ge=1, le=16, description="tokens per shingle (bigrams: rewordings ~0.7-0.9, other problems ~0.3)"
    )
    same_numbers: bool = Field(
        default=True, description="near duplicates must have the same numbers: a template with other numbers is kept"
    )
    seed: int = 1


class DecontaminateConfig(StrictModel):
    """How prompts are matched against benchmark problems (`distill/prompts/decontaminate.py` says why)."""

    benchmarks: list[str] = Field(default_factory=list, description="benchmark files (`--decontaminate` adds more)")
    rule: Literal["coverage", "open-r1"] = Field(
        default="coverage",
        description="coverage: the rarity-weighted share of a benchmark item's n-grams in the prompt reaches "
        "`threshold` and the item's numbers are all there; open-r1: any shared n-gram of lower-cased words",
    )
    ngram: int | None = Field(
        default=None, ge=3, le=64, description="n-gram length in words; default 5 (coverage) or 8 (open-r1)"
    )
    threshold: float = Field(default=0.5, gt=0, le=1, description="coverage rule: the score that makes a copy")
    strip_figures: bool = Field(default=True, description="coverage rule: Asymptote/TikZ code is not matched")

    @property
    def n(self) -> int:
        return self.ngram if self.ngram is not None else (8 if self.rule == "open-r1" else DEFAULT_NGRAM)


DEFAULT_NGRAM = 5


class LanguageConfig(StrictModel):
    detect: bool = Field(default=True, description="tag rows that have no `language`")


class PromptsConfig(StrictModel):
    sources: list[SourceMapping] = Field(default_factory=list)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)


# --- filter presets (`distill filter --preset filters/NAME.yaml`) -----------------------------------


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


# --- the SFT mix (`distill mix --config MIX.yaml`) ----------------------------------------------------


class MixSource(StrictModel):
    name: str = Field(description="names the source in the report and in each row's `source`")
    path: str = Field(description="dataset directory, .parquet or .jsonl (relative to the mix file)")
    quota: int | None = Field(default=None, ge=0, description="rows to take")
    share: float | None = Field(default=None, gt=0, le=1, description="or a fraction of `total`")
    upsample: bool = Field(default=False, description="repeat rows (sampled) when the source has fewer than its quota")

    @model_validator(mode="after")
    def _quota_or_share(self) -> MixSource:
        if (self.quota is None) == (self.share is None):
            raise ValueError(f"source {self.name!r}: give either `quota` (rows) or `share` (of total), not both")
        return self


class MixConfig(StrictModel):
    """An SFT mix: rows from each source by quota, rendered as chat messages, counted, shuffled."""

    seed: int = 0
    total: int | None = Field(default=None, ge=1, description="rows in the mix; needed by `share` quotas")
    sources: list[MixSource] = Field(min_length=1)
    tokenizer: str | None = Field(default=None, description="for `num_tokens`; default: the project's tiny tokenizer")
    non_reasoning: Literal["empty_think", "no_think"] = Field(
        default="empty_think",
        description="rows without reasoning: an empty <think></think> block (as R1 did) or the answer alone",
    )

    @model_validator(mode="after")
    def _quotas_make_sense(self) -> MixConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("two sources share a name; names must differ")
        if any(s.share is not None for s in self.sources) and self.total is None:
            raise ValueError("a source gives a `share`: set `total`, the row count the shares are of")
        return self

    def quota(self, source: MixSource) -> int:
        return source.quota if source.quota is not None else round(source.share * (self.total or 0))  # type: ignore[operator]


# --- loading ----------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    try:
        if not p.exists():
            raise UserError(f"{p}: no such file; check the path")
        if p.is_dir():
            raise UserError(f"{p}: is a directory; pass a YAML file")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:  # e.g. a folder this user may not enter
        raise UserError(f"{p}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{p}{where}: YAML syntax error: {problem}; fix the YAML") from None


def load_config(path: str | Path, model: type[M]) -> M:
    data = load_yaml(path)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{path}: the file is {kind}; it must be a YAML mapping of {model.__name__} keys")
    return parse(data, model, str(path))


def parse(data: dict[str, Any], model: type[M], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {describe(e, model)}") from None


def describe(error: ValidationError, model: type[BaseModel]) -> str:
    """The first error of `error` as `key.path: what is wrong; the fix` (+ how many more)."""
    # An unknown key first: a misspelt key also shows up as the "missing" key it was meant to be.
    errs = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errs[0]
    loc = _loc(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, first["loc"][:-1])
        close = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        msg = f"{loc}: unknown key; {hint}"
    elif kind == "missing":
        msg = f"{loc}: required key is missing; add it"
    else:
        got = first.get("input")
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        text = first["msg"].removeprefix("Value error, ")
        msg = f"{loc}: {text} (got {shown})" if loc else text
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more)"
    return msg


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at `loc`, walking nested models through their annotations."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    return list(getattr(current, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
