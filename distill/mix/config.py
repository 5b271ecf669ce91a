"""The options of the SFT mix (`distill mix --config MIX.yaml`, `stage: mix`) and its declaration; the stage is
`distill/mix/stage.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.config import StrictModel
from distill.stages import Stage, register


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


STAGE = register(
    Stage(
        name="mix",
        help="""Build the SFT set: rows from each source by quota, as chat messages with token counts, shuffled.

    Paths in the YAML are relative to it. A source with fewer rows than its quota gives all it has (and
    says so); only `upsample: true` repeats rows. Same config and inputs give byte-identical shards.

    Example:

      distill mix --config configs/mix/demo.yaml --out runs/sft-demo
    """,
        options=MixConfig,
        run="distill.mix.stage:run",
        plan="distill.mix.stage:plan",
        details="distill.mix.stage:details",
        takes_input=False,
        reads=lambda cfg: [s.path for s in cfg.sources],
        config_flag=True,
        config_help="Mix YAML: seed, sources with quota or share, total, tokenizer (paths in it are relative to it).",
        out_help="Output dataset directory of SFT rows.",
    )
)
