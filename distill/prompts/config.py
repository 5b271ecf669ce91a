"""The options of prompt curation (`distill prompts`, `stage: prompts`) and its declaration; the stage itself is
`distill/prompts/stage.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from distill.config import StrictModel
from distill.sources.mapping import SourceMapping
from distill.stages import Flag, Stage, register


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
    """The options of `distill prompts` (its `--config` YAML) and of a pipeline step with `stage: prompts`."""

    sources: list[SourceMapping] = Field(default_factory=list)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)

    @field_validator("sources")
    @classmethod
    def _known_layouts(cls, v: list[SourceMapping]) -> list[SourceMapping]:
        from distill.sources.layouts import LAYOUTS, check_names  # late: `distill --help` reads no layout

        check_names(v, LAYOUTS)
        return v


STAGE = register(
    Stage(
        name="prompts",
        help="""Ingest prompts, drop exact and near duplicates and benchmark leaks; every removal is explained.

    Kept rows go to `OUT/train-*.parquet`; removed rows to `OUT/_removed/` with `reason`
    (`exact_duplicate`, `near_duplicate`, `contaminated`), `matched_id`, `matched_source` and
    `similarity`; unreadable rows to `OUT/_rejects/`. The first occurrence of a duplicate stays.

    Example:

      distill prompts --input data/demo/prompts.jsonl --out runs/prompts --decontaminate data/demo/benchmark.jsonl

      distill prompts --input 'data/demo/*.jsonl' --out runs/prompts-all --config configs/prompts/default.yaml --ngram 8
    """,
        options=PromptsConfig,
        run="distill.prompts.stage:run",
        plan="distill.prompts.stage:plan",
        details="distill.prompts.stage:details",
        inspect="distill.prompts.stage:inspect_output",
        config_flag=True,
        config_help="Prompt-curation YAML: column mappings, dedup and decontamination settings (paths in it are "
        "relative to it); flags override it.",
        flags={
            "decontaminate": Flag(
                "decontaminate.benchmarks",
                list[str],
                "Benchmark file whose problems must not be in the prompts. Repeatable.",
                append=True,
                path=True,
            ),
            "ngram": Flag("decontaminate.ngram", int, "Decontamination n-gram length (default 5; open-r1's rule: 8)."),
        },
        input_help="Prompt source: a .jsonl/.parquet/.csv file, a dataset directory, a `save_to_disk` folder, "
        "`hf:NAME[@SPLIT]`, or a glob.",
    )
)
