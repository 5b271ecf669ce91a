"""The student YAML (`distill train students/NAME.yaml`): base model, template, lengths, optimisation,
sharding and the hardware the plan estimates GPU-hours for. A recipe is data: every number in the
shipped recipes says where it came from under `sources`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.config import StrictModel
from distill.stages import Argument, Stage, register

TINY = "distill:tiny-qwen2"  # `base_model` of the tiny student: built here, no hub needed


class Architecture(StrictModel):
    """The shapes the estimate needs (the base model's config.json keys of the same names)."""

    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 has biases on q, k, v

    @property
    def kv_width(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.num_key_value_heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden_size, self.kv_width, self.intermediate_size
        attention = 2 * h * h + 2 * h * kv + (h + 2 * kv if self.attention_bias else 0)
        return attention + 3 * h * i + 2 * h  # + the two RMSNorm weights

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def params(self) -> int:
        heads = 1 if self.tie_word_embeddings else 2
        return self.num_hidden_layers * self.layer_params() + heads * self.embedding_params() + self.hidden_size

    @classmethod
    def from_hf(cls, config: object) -> Architecture:
        keys = {f: getattr(config, f) for f in cls.model_fields if f != "attention_bias" and hasattr(config, f)}
        bias = getattr(config, "attention_bias", getattr(config, "model_type", "") == "qwen2")
        return cls(**keys, attention_bias=bool(bias))


class Hardware(StrictModel):
    """What the plan's GPU-hours are estimated for (6 x params x tokens at `mfu` of `peak_tflops`)."""

    gpu: str = "H100"
    peak_tflops: float = Field(default=989.0, gt=0, description="dense bf16 TFLOP/s of one GPU (H100 SXM: 989)")
    mfu: float = Field(default=0.40, gt=0, le=1, description="model FLOPs utilisation assumed for the estimate")
    memory_gib: float | None = Field(default=None, gt=0, description="memory of one GPU; default: known by `gpu`")


class LoraSettings(StrictModel):
    r: int = Field(default=64, ge=1)
    alpha: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    load_in_4bit: bool = Field(default=False, description="QLoRA: the frozen base in 4-bit (bitsandbytes, GPU)")


class StudentConfig(StrictModel):
    name: str
    base_model: str = Field(description=f"a Hub name, a local folder, or {TINY!r}")
    template: Literal["r1-qwen", "r1-llama", "chatml", "llama3"]
    data: str | None = Field(default=None, description="SFT dataset directory (or hf:NAME); --data overrides")
    output_dir: str | None = Field(default=None, description="default runs/students/<name>; --out overrides")
    # --- sequences ------------------------------------------------------------------------------------
    max_length: int = Field(ge=16, le=131_072, description="tokens per sequence (packed or not)")
    long_rows: Literal["drop", "error"] = Field(
        default="drop", description="rows longer than max_length: dropped and counted, or stop the run"
    )
    packing: bool = Field(default=True, description="BFD packing with padding-free attention (position ids)")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the base model's config (e.g. rope_theta for a longer context)"
    )
    # --- optimisation ---------------------------------------------------------------------------------
    epochs: float = Field(default=2.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps (overrides epochs)")
    learning_rate: float = Field(gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    per_device_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    gradient_checkpointing: bool = True
    use_liger_kernel: bool | None = Field(
        default=None, description="Liger's Triton kernels (fused cross-entropy: no logits in memory); true: required, "
        "checked at start; default: on when installed on a GPU",
    )  # fmt: skip
    attn_implementation: Literal["flash_attention_2", "flash_attention_3", "sdpa"] | None = Field(
        default=None, description="default: flash_attention_2 when installed on a GPU, else sdpa; packed rows stay "
        "apart either way (sdpa runs per row)",
    )  # fmt: skip
    bf16: bool = Field(default=True, description="bf16 mixed precision on GPU; CPU runs in float32")
    seed: int = 42
    lora: LoraSettings | None = None
    sft_args: dict[str, Any] = Field(
        default_factory=dict,
        description="any other field of TRL's SFTConfig, passed as is (e.g. lr_scheduler_kwargs, optim); "
        "checked against SFTConfig's fields before training",
    )
    # --- bookkeeping ----------------------------------------------------------------------------------
    save_steps: int = Field(default=500, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    logging_steps: int = Field(default=10, ge=1)
    report_to: list[Literal["tensorboard", "wandb", "trackio", "none"]] = Field(default_factory=lambda: ["tensorboard"])
    # --- where it runs --------------------------------------------------------------------------------
    accelerate_config: str = Field(description="configs/accelerate/*.yaml the Makefile target launches with")
    num_processes: int = Field(default=8, ge=1, description="GPUs in all")
    nodes: int = Field(default=1, ge=1)
    hardware: Hardware = Field(default_factory=Hardware)
    params_b: float | None = Field(default=None, gt=0, description="parameters in billions, when the config is remote")
    architecture: Architecture | None = Field(
        default=None, description="the base model's shapes (its config.json keys) for the memory estimate; default: "
        "read from the base model's config where this machine has it",
    )  # fmt: skip
    sources: dict[str, str] = Field(default_factory=dict, description="where each number came from")

    def checkpoints(self, out: str | Path | None = None) -> Path:
        """Where the run writes: `--out`, else `output_dir`, else runs/students/<name>."""
        return Path(out or self.output_dir or Path("runs") / "students" / self.name)

    @field_validator("base_model", "data", "output_dir")
    @classmethod
    def _expand_home(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v and v.startswith("~") else v

    @model_validator(mode="after")
    def _processes_fill_nodes(self) -> StudentConfig:
        if self.num_processes % self.nodes:
            raise ValueError(f"num_processes {self.num_processes} is not a multiple of nodes {self.nodes}")
        return self


class TrainOptions(StrictModel):
    """The options of `distill train` and of a pipeline step with `stage: train`."""

    student: str = Field(description="Student recipe YAML (students/*.yaml)")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after N optimizer steps")
    epochs: float | None = Field(default=None, gt=0, description="Overrides the recipe's epochs")
    seed: int | None = Field(default=None, description="Overrides the recipe's seed (data order, sampling)")
    launch: bool = Field(
        default=False, description="Run under `accelerate launch` with the recipe's accelerate_config, GPU count and "
        "nodes (the Makefile's `distill-*` targets do)",
    )  # fmt: skip
    nodes: int | None = Field(default=None, ge=1, description="With --launch: nodes (default: the recipe's)")
    num_processes: int | None = Field(
        default=None, ge=1, description="With --launch: GPUs in all (default: the recipe's)"
    )
    dry_run: bool = Field(
        default=False, description="Tokenize, check and print the plan; train nothing (with --launch: the command)"
    )
    verbose: bool = Field(default=False, description="Print the Trainer's raw log dicts too, not only a line per log")


register(
    Stage(
        name="train",
        help="""Fine-tune a student on SFT rows (TRL SFTTrainer); resumes from the last checkpoint in --out.

    Run it through `accelerate launch` for several GPUs (`--launch`; the Makefile's `distill-*` targets do).
    Before any training it tokenizes the rows with the student's template, drops rows longer than
    `max_length` (counted), checks the loss mask and prints the plan: rows, tokens, steps, GPU-hours.

    Example:

      distill train students/tiny.yaml --data runs/demo/sft --out runs/students/tiny

      distill train students/qwen-7b.yaml --launch --dry-run
    """,
        options=TrainOptions,
        argument=Argument("student", "Student recipe YAML (students/*.yaml).", "STUDENT"),
        load="distill.downstream:load_student",
        run="distill.downstream:train",
        plan="distill.downstream:plan_train",
        rows_per_shard=None,
        parallel=False,
        input_optional=True,
        input_flag="--data",
        input_help="SFT dataset directory, .parquet/.jsonl, or hf:NAME; default: the recipe's `data`.",
        out_help="Checkpoint folder; default: the recipe's output_dir.",
        out_optional=True,
    )
)
