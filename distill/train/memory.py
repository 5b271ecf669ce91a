"""Memory before money: what one GPU holds when a recipe trains, estimated before a job is queued.

Per GPU, for the recipe's sharding (read from its accelerate config) over its `num_processes` GPUs:

- **model states**, bytes per trainable parameter:
  FSDP2 with bf16 mixed precision: fp32 weights (accelerate upcasts trainable parameters), fp32 gradients,
  AdamW's two fp32 moments = 4 + 4 + 8 = 16, sharded over the GPUs; DeepSpeed ZeRO-3: bf16 weights and
  gradients, fp32 master weights and moments = 2 + 2 + 12 = 16, sharded; ZeRO-2 shards gradients and optimizer
  only; DDP: the bf16 model, its gradients, DDP's gradient buckets and bf16 AdamW moments = 2 + 2 + 2 + 4 = 10,
  on every GPU. Offload moves the sharded states to CPU RAM (counted per node instead). A LoRA student's
  frozen base is 2 bytes a parameter (0.5 in 4-bit), its adapters as above.
- **gathered layers** (FSDP, ZeRO-3): the bf16 weights of the unit being computed and the one prefetched,
  and one unit's fp32 gradient before its reduce-scatter: 8 bytes x the largest unit (a decoder layer, or
  the embedding).
- **activations** of one micro-batch (`per_device_batch_size` x `max_length` tokens, the packed worst case):
  2 bytes x (15 h + 3 kv + 4 i) per token and layer (h hidden, kv the key/value width, i the MLP width: what
  autograd keeps for a Llama/Qwen2 block in eager PyTorch with memory-efficient attention, RMSNorm in fp32).
  With gradient checkpointing: every layer's input (2 h per token and layer) plus one layer recomputed.
- **logits and loss**: tokens x vocabulary x 10 bytes (the bf16 logits, their fp32 copy for the loss and the
  fp32 log-softmax kept for the backward); with Liger's fused linear cross-entropy, which never builds them,
  tokens x h x 8 bytes for its chunks.
- **3 GiB** for the CUDA context, communication buffers and what the allocator holds back.

A recipe fits when the sum leaves 10% of the GPU free (fragmentation). These are estimates from the shapes,
not measurements; `benchmarks/gpu_check.sh` measures a real step where a GPU is lent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from distill.train.config import TINY, Architecture, StudentConfig

GIB = 1024**3
OVERHEAD_GIB = 3.0
HEADROOM = 0.9  # the share of a GPU a run may plan to fill
# What torch.cuda reports as total memory (GiB) for the GPUs recipes name; `hardware.memory_gib` overrides.
GPU_MEMORY_GIB = {"H100": 79.6, "H200": 139.8, "A100": 79.2, "A100-40GB": 39.4, "L40S": 44.4, "B200": 178.4}


@dataclass(frozen=True)
class Sharding:
    kind: Literal["ddp", "fsdp", "zero2", "zero3"]
    offload: bool = False  # weights, gradients and optimizer states in CPU RAM

    @property
    def label(self) -> str:
        name = {"ddp": "DDP", "fsdp": "FSDP2", "zero2": "ZeRO-2", "zero3": "ZeRO-3"}[self.kind]
        return name + " + CPU offload" * self.offload


def read_sharding(accelerate_config: Path) -> Sharding:
    """The sharding an accelerate config asks for."""
    cfg = yaml.safe_load(accelerate_config.read_text()) or {}
    kind = cfg.get("distributed_type", "NO")
    if kind == "FSDP":
        return Sharding("fsdp", bool((cfg.get("fsdp_config") or {}).get("fsdp_offload_params")))
    if kind == "DEEPSPEED":
        ds = cfg.get("deepspeed_config") or {}
        devices = (ds.get("offload_param_device"), ds.get("offload_optimizer_device"))
        offload = any(d not in ("none", None) for d in devices)
        return Sharding("zero3" if int(ds.get("zero_stage", 3)) == 3 else "zero2", offload)
    return Sharding("ddp")


@dataclass(frozen=True)
class Setup:
    """What the estimate depends on; `changed` makes the variants that a suggestion tries."""

    arch: Architecture
    sharding: Sharding
    gpus: int
    nodes: int
    tokens: int  # per micro-batch
    checkpointing: bool
    liger: bool
    lora_params: int | None  # trainable adapter parameters of a LoRA student; None: full fine-tuning
    four_bit: bool
    gpu: str
    memory_gib: float | None

    def changed(self, **kw: object) -> Setup:
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class Estimate:
    setup: Setup
    weights: float  # GiB per GPU
    gradients: float
    optimizer: float
    gathered: float
    activations: float
    activations_other: float  # the activations with the other checkpointing setting
    logits: float
    cpu_per_node: float  # GiB of CPU RAM per node for offloaded states

    @property
    def total(self) -> float:
        parts = (self.weights, self.gradients, self.optimizer, self.gathered, self.activations, self.logits)
        return sum(parts) + OVERHEAD_GIB

    @property
    def fits(self) -> bool | None:
        return None if self.setup.memory_gib is None else self.total <= HEADROOM * self.setup.memory_gib


def lora_params(arch: Architecture, r: int, target_modules: str | list[str]) -> int:
    """Adapter parameters: r x (inputs + outputs) of each adapted linear layer."""
    h, kv, i = arch.hidden_size, arch.kv_width, arch.intermediate_size
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip
    names = shapes if target_modules == "all-linear" else [m for m in target_modules if m in shapes]
    return arch.num_hidden_layers * sum(r * sum(shapes[n]) for n in names)


def estimate(s: Setup) -> Estimate:
    a, n = s.arch, s.gpus
    full = s.lora_params is None
    trainable = a.params() if full else s.lora_params or 0
    shard = {"ddp": 1, "zero2": n, "fsdp": n, "zero3": n}[s.sharding.kind]
    if s.sharding.kind == "ddp":
        w, g, o = 2.0, 4.0, 4.0  # bf16 weights; gradients + DDP's buckets; bf16 AdamW moments
    elif s.sharding.kind == "fsdp":
        w, g, o = 4.0, 4.0, 8.0
    else:
        w, g, o = 2.0, 2.0, 12.0
    weights = trainable * w / (n if s.sharding.kind in ("fsdp", "zero3") else 1)
    gradients = trainable * g / shard
    optimizer = trainable * o / shard
    if not full:  # the frozen base: bf16 (4-bit), sharded like the weights
        base = a.params() * (0.5 if s.four_bit else 2.0)
        weights += base / (n if s.sharding.kind in ("fsdp", "zero3") else 1)
    cpu = 0.0
    if s.sharding.offload:
        cpu = (weights + gradients + optimizer) * (n // s.nodes)
        weights = gradients = optimizer = 0.0
    gathered = 8.0 * max(a.layer_params(), a.embedding_params()) if s.sharding.kind in ("fsdp", "zero3") else 0.0
    h, per_layer = a.hidden_size, 2 * (15 * a.hidden_size + 3 * a.kv_width + 4 * a.intermediate_size)
    full_acts = s.tokens * a.num_hidden_layers * per_layer
    checkpointed = s.tokens * a.num_hidden_layers * 2 * h + s.tokens * per_layer
    acts, other = (checkpointed, full_acts) if s.checkpointing else (full_acts, checkpointed)
    logits = s.tokens * h * 8.0 if s.liger else s.tokens * a.vocab_size * 10.0
    return Estimate(s, weights / GIB, gradients / GIB, optimizer / GIB, gathered / GIB, acts / GIB, other / GIB,
                    logits / GIB, cpu / GIB)  # fmt: skip


# The changes a suggestion tries, least intrusive first: (what to write in the recipe, the changed setup).
def _changes(s: Setup, per_device_batch: int) -> list[tuple[str, Setup]]:
    out: list[tuple[str, Setup]] = []
    if not s.checkpointing:
        out.append(("gradient_checkpointing: true", s.changed(checkpointing=True)))
    if not s.liger:
        out.append(("use_liger_kernel: true", s.changed(liger=True)))
    batch = per_device_batch
    while batch > 1:
        batch //= 2
        out.append((f"per_device_batch_size: {batch} (raise gradient_accumulation_steps to keep the batch)",
                    s.changed(tokens=s.tokens // per_device_batch * batch)))  # fmt: skip
    if s.sharding.kind in ("ddp", "zero2"):
        out.append(("accelerate_config: configs/accelerate/fsdp2.yaml (shard the states)",
                    s.changed(sharding=Sharding("fsdp"))))  # fmt: skip
    if not s.sharding.offload:  # the same GPUs, slower steps: before more GPUs
        offload = "fsdp2-offload-multinode.yaml" if s.nodes > 1 else "fsdp2-offload.yaml"
        out.append((f"accelerate_config: configs/accelerate/{offload} (states in CPU RAM)",
                    s.changed(sharding=Sharding("fsdp", offload=True))))  # fmt: skip
    for factor in (2, 4, 8):
        out.append((f"nodes: {s.nodes * factor}, num_processes: {s.gpus * factor}",
                    s.changed(gpus=s.gpus * factor, nodes=s.nodes * factor)))  # fmt: skip
    return out


def suggestion(s: Setup, per_device_batch: int) -> str | None:
    """The smallest change that makes the recipe fit: the first single change that does, else the first few
    together; None when nothing tried fits."""
    changes = _changes(s, per_device_batch)
    for what, changed in changes:
        if estimate(changed).fits:
            return f"{what} (-> {estimate(changed).total:.1f} GiB)"
    # Escalate: each change on top of those before (a later one of the same knob, such as more nodes,
    # replaces the earlier); then drop every change the fit does not need.
    applied: dict[tuple[str, ...], tuple[str, Setup]] = {}
    for what, changed in changes:
        fields = tuple(f.name for f in dataclasses.fields(s) if getattr(changed, f.name) != getattr(s, f.name))
        applied = {k: v for k, v in applied.items() if not set(k) & set(fields)} | {fields: (what, changed)}
        if estimate(_apply(s, applied)).fits:
            for key in list(applied):
                fewer = {k: v for k, v in applied.items() if k != key}
                if estimate(_apply(s, fewer)).fits:
                    applied = fewer
            return " and ".join(w for w, _ in applied.values()) + f" (-> {estimate(_apply(s, applied)).total:.1f} GiB)"
    return None


def _apply(s: Setup, changes: dict[tuple[str, ...], tuple[str, Setup]]) -> Setup:
    for fields, (_, changed) in changes.items():
        s = s.changed(**{f: getattr(changed, f) for f in fields})
    return s


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def report(e: Estimate, per_device_batch: int) -> list[str]:
    s = e.setup
    gpu = f"{s.gpu}, {s.memory_gib:.1f} GiB" if s.memory_gib else f"{s.gpu}, memory unknown (set hardware.memory_gib)"
    what = "LoRA adapters" if s.lora_params is not None else "full fine-tuning"
    lines = [
        f"memory per GPU ({gpu}): {s.sharding.label} over {s.gpus} GPUs, {_count(s.arch.params())} params, "
        f"{what}, {s.tokens:,} tokens per micro-batch",
        f"  weights {e.weights:.1f} + gradients {e.gradients:.1f} + optimizer {e.optimizer:.1f} GiB"
        + (f" (in CPU RAM: {e.cpu_per_node:.0f} GiB per node)" if s.sharding.offload else "")
        + (f"; gathered layers {e.gathered:.1f} GiB" if e.gathered else ""),
        f"  activations {e.activations:.1f} GiB with gradient checkpointing {'on' if s.checkpointing else 'off'} "
        f"({e.activations_other:.1f} GiB {'off' if s.checkpointing else 'on'}); logits and loss {e.logits:.1f} GiB "
        + ("(Liger's fused cross-entropy)" if s.liger else "(no Liger kernel)"),
    ]
    total = f"  + {OVERHEAD_GIB:.0f} GiB CUDA context and buffers = {e.total:.1f} GiB"
    if e.fits is None:
        lines.append(total)
    elif e.fits:
        lines.append(f"{total}: fits ({e.total / s.memory_gib:.0%} of the GPU)")
    else:
        fix = suggestion(s, per_device_batch)
        lines.append(f"{total}: DOES NOT FIT in {HEADROOM:.0%} of {s.memory_gib:.1f} GiB")
        lines.append(f"  smallest change that fits: {fix}" if fix else "  no change tried makes it fit")
    return lines


def architecture_of(cfg: StudentConfig) -> Architecture | str:
    """The recipe's `architecture`, else the base model's config where this machine has it; else why not."""
    if cfg.architecture is not None:
        return cfg.architecture

    path = cfg.base_model
    if path == TINY:
        from distill.train.tiny import tiny_model_path

        path = str(tiny_model_path())
    from transformers import AutoConfig

    from distill.hub_offline import load_kwargs, reason

    try:
        config = AutoConfig.from_pretrained(path, **load_kwargs(path))
    except (OSError, ValueError) as e:
        return f"{cfg.base_model}'s config.json: {reason(path, e)}"
    for key, value in cfg.config_overrides.items():
        setattr(config, key, value)
    return Architecture.from_hf(config)


def for_recipe(cfg: StudentConfig) -> list[str]:
    """The memory lines of `distill train --dry-run` (and of a training run's start)."""
    arch = architecture_of(cfg)
    if isinstance(arch, str):
        return [f"memory per GPU: not estimated: {arch}; give the recipe an `architecture:` block"]
    path = Path(cfg.accelerate_config)
    if not path.is_file():
        return [f"memory per GPU: not estimated: accelerate_config {path} not found (run from the project root)"]
    lora = cfg.lora
    setup = Setup(
        arch=arch, sharding=read_sharding(path), gpus=cfg.num_processes, nodes=cfg.nodes,
        tokens=cfg.per_device_batch_size * cfg.max_length, checkpointing=cfg.gradient_checkpointing,
        liger=bool(cfg.use_liger_kernel), lora_params=lora_params(arch, lora.r, lora.target_modules) if lora else None,
        four_bit=bool(lora and lora.load_in_4bit), gpu=cfg.hardware.gpu,
        memory_gib=cfg.hardware.memory_gib or GPU_MEMORY_GIB.get(cfg.hardware.gpu),
    )  # fmt: skip
    return report(estimate(setup), cfg.per_device_batch_size)
