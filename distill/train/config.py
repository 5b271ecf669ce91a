"""The student YAML (`distill train students/NAME.yaml`): base model, template, lengths, optimisation,
sharding and the hardware the plan estimates GPU-hours for. A recipe is data: every number in the
shipped recipes says where it came from under `sources`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.config import StrictModel
from distill.train.memory import Architecture

TINY = "distill:tiny-qwen2"  # `base_model` of the tiny student: built here, no hub needed


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

    @field_validator("base_model", "data", "output_dir")
    @classmethod
    def _expand_home(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v and v.startswith("~") else v

    @model_validator(mode="after")
    def _processes_fill_nodes(self) -> StudentConfig:
        if self.num_processes % self.nodes:
            raise ValueError(f"num_processes {self.num_processes} is not a multiple of nodes {self.nodes}")
        return self
