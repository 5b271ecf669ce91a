"""`distill train STUDENT.yaml`: SFT of one student with TRL's `SFTTrainer`, sharded by accelerate.

Run it directly (one process) or through `accelerate launch --config_file configs/accelerate/...`
(what `make distill-qwen-7b` does): the trainer takes its sharding (DDP, FSDP2, DeepSpeed ZeRO-3)
from the launcher. The rows are tokenized once with the student's template, checked (preflight) and
planned before the model is loaded, so a broken template or data set fails in seconds, not after
an hour of GPU time. A run killed at any point resumes from its last checkpoint when run again.

The output folder is a servable checkpoint: weights, tokenizer with the chat template and EOS, and
a generation config with the R1 sampling (temperature 0.6, top-p 0.95), so `vllm serve OUT` needs
no extra flags; `distill_train.json` records the config, the plan, the data and the final loss.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.hub_offline import from_pretrained, load_kwargs
from distill.store import atomic_write_bytes, fingerprint
from distill.train.config import TINY, StudentConfig
from distill.train.data import load_rows, make_plan, preflight, prepare_tokenizer, tokenize
from distill.train.templates import get_template


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _log(msg: str) -> None:
    if _main_process():
        print(msg, file=sys.stderr, flush=True)


def _model_path(cfg: StudentConfig) -> str:
    if cfg.base_model == TINY:
        from distill.train.tiny import tiny_model_path

        return str(tiny_model_path())
    return cfg.base_model


def data_fingerprint(data: str) -> str:
    """What the data is: a dataset directory's content fingerprint, a file's SHA-256, or its files' (a folder,
    a glob, `hf:NAME`)."""
    from distill.store import is_dataset_dir, read_manifest, sha256_file

    path = Path(data)
    if is_dataset_dir(path) and (manifest := read_manifest(path)) is not None:
        return manifest.fingerprint
    if path.is_file():
        return sha256_file(path)
    from distill.sources import inputs
    from distill.store import inputs_fingerprint

    # a plain folder of files, a glob, hf:NAME: the files it stands for, each by its content
    return inputs_fingerprint([f.describe() for f in inputs.resolve([data], 1 << 30, what="--data")])


def count_params(path: str) -> int | None:
    """Parameters of the model at `path` from its config alone (no weights read), or None offline."""
    try:
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, **load_kwargs(path))
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        return sum(p.numel() for p in model.parameters())
    except (OSError, ValueError):
        return None


def last_checkpoint(out: Path) -> str | None:
    """The newest whole checkpoint in `out`: a kill during a save leaves a folder without its
    `trainer_state.json` (the Trainer writes it last), which must not be resumed from."""
    whole = [
        p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return str(max(whole, key=lambda p: int(p.name.split("-")[-1]))) if whole else None


STARTED = "distill_train.started.json"  # the fingerprints of the run whose checkpoints `out` holds


def _same_run_or_afresh(out: Path, student_fp: str, data_fp: str, overwrite: bool) -> None:
    """Checkpoints in `out` are resumed only by the recipe and data that wrote them; anything else is refused
    (or, with --overwrite, the old checkpoints are removed), as a dataset directory refuses another run."""
    started = out / STARTED
    began = json.loads(started.read_text()) if started.exists() else {}
    ours = {"student_fingerprint": student_fp, "data_fingerprint": data_fp}
    theirs = {k: began.get(k) for k in ours}
    if last_checkpoint(out) and theirs != ours:
        if not overwrite:
            what = "another recipe" if theirs["student_fingerprint"] != student_fp else "other data"
            raise UserError(
                f"{out}: holds checkpoints of {what}; pass --overwrite to start afresh or choose another --out"
            )
        if _main_process():
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
            (out / "distill_train.json").unlink(missing_ok=True)
    if _main_process():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(started, json.dumps(ours).encode())


def prepare(cfg: StudentConfig, data: str, processes: int) -> tuple[Any, Any, Any, list[str]]:
    """(tokenizer, dataset, plan, notes): everything decided before a model is loaded."""
    from transformers import AutoTokenizer

    template = get_template(cfg.template)
    path = _model_path(cfg)
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, path, "base_model")
    added = prepare_tokenizer(tokenizer, template)
    notes = [f"added the template's markers to the tokenizer: {added}"] if added else []
    ds = tokenize(load_rows(data), tokenizer)
    too_long = [i for i, n in enumerate(ds["length"]) if n > cfg.max_length]
    if too_long and cfg.long_rows == "error":
        raise UserError(
            f"{len(too_long):,} rows are longer than max_length {cfg.max_length} (row {too_long[0]}, "
            f"{ds[too_long[0]]['length']:,} tokens); raise max_length or set long_rows: drop"
        )
    if too_long:
        keep = sorted(set(range(len(ds))) - set(too_long))
        ds = ds.select(keep)
        notes.append(f"dropped {len(too_long):,} rows longer than max_length {cfg.max_length} (long_rows: drop)")
    if len(ds) == 0:
        raise UserError(f"--data {data}: no rows left to train on")
    notes += preflight(ds, tokenizer, template)
    params = cfg.architecture.params() if cfg.architecture else count_params(path)
    plan = make_plan(ds, cfg, processes, params, len(too_long))
    return tokenizer, ds, plan, notes


# SFTConfig fields the recipe sets through its own keys (sft_args may not set them a second way).
RECIPE_KEYS = {
    "output_dir": "--out / output_dir", "max_length": "max_length", "packing": "packing", "padding_free": "packing",
    "num_train_epochs": "epochs", "max_steps": "max_steps", "learning_rate": "learning_rate",
    "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
    "per_device_train_batch_size": "per_device_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing", "bf16": "bf16", "seed": "seed", "data_seed": "seed",
    "save_steps": "save_steps", "save_total_limit": "save_total_limit", "logging_steps": "logging_steps",
    "report_to": "report_to", "use_cpu": "(the machine)", "assistant_only_loss": "(the template's loss mask)",
    "use_liger_kernel": "use_liger_kernel",
}  # fmt: skip


def kernels(cfg: StudentConfig, gpu: bool) -> tuple[str | None, bool]:
    """The attention implementation and whether Liger's kernels run: what the recipe asks for, checked
    here (one line when missing) rather than as an import error inside the model; by default the best
    this machine has."""
    from transformers.utils import import_utils as iu

    have = {"flash_attention_2": iu.is_flash_attn_2_available(), "flash_attention_3": iu.is_flash_attn_3_available()}
    wanted = cfg.attn_implementation
    if wanted in have and not have[wanted]:
        package = "flash-attn" if wanted == "flash_attention_2" else "flash-attn-3 (built from flash-attention/hopper)"
        raise UserError(f"student {cfg.name!r}: attn_implementation {wanted} needs a GPU with {package} installed; "
                        "install it or set attn_implementation: sdpa")  # fmt: skip
    attention = wanted or ("flash_attention_2" if have["flash_attention_2"] else None)
    if cfg.use_liger_kernel and not (gpu and iu.is_liger_kernel_available()):
        raise UserError(f"student {cfg.name!r}: use_liger_kernel is true but "
                        + ("there is no GPU" if not gpu else "liger-kernel is not installed (pip install liger-kernel)")
                        + "; install it or set use_liger_kernel: false")  # fmt: skip
    liger = cfg.use_liger_kernel if cfg.use_liger_kernel is not None else gpu and iu.is_liger_kernel_available()
    return attention, liger


def _sft_args(cfg: StudentConfig, steps: int) -> dict[str, Any]:
    """The recipe's `sft_args`, with a warmup_stable_decay decay no longer than the run: transformers takes the
    decay in steps, and a shorter run (a test's max_steps, a small data set) would otherwise start decayed."""
    args = dict(cfg.sft_args)
    if cfg.lr_scheduler == "warmup_stable_decay":
        kwargs = dict(args.get("lr_scheduler_kwargs") or {})
        room = max(1, steps - math.ceil(cfg.warmup_ratio * steps))
        kwargs["num_decay_steps"] = min(kwargs.get("num_decay_steps", room), room)
        args["lr_scheduler_kwargs"] = kwargs
    return args


def check_sft_args(cfg: StudentConfig) -> None:
    """Every `sft_args` key is a field of TRL's SFTConfig that the recipe does not already set: a typo is one
    line before any data is read, not a TypeError after the model is loaded."""
    if not cfg.sft_args:
        return
    import dataclasses
    import difflib

    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    for key in cfg.sft_args:
        if key in RECIPE_KEYS:
            raise UserError(f"student {cfg.name!r}: sft_args.{key}: the recipe sets it ({RECIPE_KEYS[key]}); "
                            "set it there instead")  # fmt: skip
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see TRL's SFTConfig for its fields"
            raise UserError(f"student {cfg.name!r}: sft_args.{key}: not a field of TRL's SFTConfig; {hint}")


def student_fingerprint(cfg: StudentConfig) -> str:
    recipe = cfg.model_dump(mode="json")
    del recipe["architecture"]  # read by the memory estimate only
    # keys added since recipes were first trained, at their defaults: left out, so those recipes keep their
    # fingerprint (and their checkpoints resume)
    for key in ("sft_args", "use_liger_kernel", "attn_implementation"):
        if not recipe[key]:
            del recipe[key]
    if recipe["hardware"]["memory_gib"] is None:
        del recipe["hardware"]["memory_gib"]
    return fingerprint(recipe)


def already_trained(cfg: StudentConfig, data: str, out: Path) -> dict[str, Any] | None:
    """The summary of `out` when it holds this recipe trained on this data (then there is nothing to do)."""
    finished = Path(out) / "distill_train.json"
    if not finished.exists():
        return None
    previous = json.loads(finished.read_text())
    ours = (student_fingerprint(cfg), data_fingerprint(data))
    same = (previous.get("student_fingerprint"), previous.get("data_fingerprint")) == ours
    return {**previous, "skipped": True} if same else None


def _dry_run(cfg: StudentConfig, data: str | None, processes: int) -> dict[str, Any]:
    """The plan of a job before it is queued: the memory per GPU from the recipe alone (no GPU, no weights),
    then the data plan where the data and the base model's tokenizer are on this machine."""
    from distill.train.memory import for_recipe

    memory = for_recipe(cfg)
    _log(f"train {cfg.name}: {cfg.base_model}, {cfg.num_processes} x {cfg.hardware.gpu}")
    for line in memory:
        _log(f"  {line}")
    try:
        if not data:
            raise UserError("no data (pass --data DIR or set `data` in the YAML)")
        _, _, plan, notes = prepare(cfg, data, processes)
    except UserError as e:  # the memory lines still say whether the job fits
        _log(f"  data plan: not made: {e}")
        return {"memory": memory}
    for line in notes + plan.lines():
        _log(f"  {line}")
    return {"plan": plan.to_json(), "notes": notes, "memory": memory}


def train(
    cfg: StudentConfig,
    data: str | None,
    out: Path | None,
    *,
    max_steps: int | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    import torch

    check_sft_args(cfg)
    gpu = torch.cuda.is_available()
    data = data or cfg.data
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    if dry_run:
        return _dry_run(cfg, data, processes)
    attention, liger = kernels(cfg, gpu)  # a kernel the recipe requires and this machine lacks stops here, first
    if not data:
        raise UserError(f"student {cfg.name!r}: no data; pass --data DIR or set `data` in the YAML")
    out = cfg.checkpoints(out)
    student_fp, data_fp = student_fingerprint(cfg), data_fingerprint(data)
    if (previous := already_trained(cfg, data, out)) is not None:
        _log(f"train {cfg.name}: {out} already holds this recipe trained on this data; skipped")
        return previous
    _same_run_or_afresh(out, student_fp, data_fp, overwrite)
    tokenizer, ds, plan, notes = prepare(cfg, data, processes)
    _log(f"train {cfg.name}: {cfg.base_model} on {data} -> {out}")
    for line in notes + plan.lines():
        _log(f"  {line}")

    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    if not verbose:  # the loading, labelling, packing, shard-writing bars flash by and clutter the log
        import datasets

        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()

    dtype = torch.bfloat16 if (cfg.bf16 and gpu) else torch.float32
    model_kwargs: dict[str, Any] = {"dtype": dtype}
    if attention is not None and attention != "sdpa":
        model_kwargs["attn_implementation"] = attention
    elif cfg.packing:  # sdpa alone would let packed rows attend to each other: see distill/train/attention.py
        from distill.train.attention import register

        model_kwargs["attn_implementation"] = register()
    if cfg.lora and cfg.lora.load_in_4bit:
        if not gpu:
            raise UserError("lora.load_in_4bit (QLoRA) needs a GPU (bitsandbytes)")
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    if cfg.config_overrides:
        from transformers import AutoConfig

        config = from_pretrained(AutoConfig.from_pretrained, _model_path(cfg), "base_model")
        for key, value in cfg.config_overrides.items():
            if not hasattr(config, key):
                raise UserError(f"config_overrides.{key}: the base model's config has no such key")
            setattr(config, key, value)
        model_kwargs["config"] = config
    model = from_pretrained(AutoModelForCausalLM.from_pretrained, _model_path(cfg), "base_model", **model_kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.95, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip

    args = SFTConfig(
        output_dir=str(out),
        max_length=cfg.max_length,
        packing=cfg.packing,
        padding_free=cfg.packing,  # packed rows keep their own position ids (BFD packing needs it anyway)
        assistant_only_loss=False,  # the rows come tokenized with their assistant_masks, which TRL applies
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        activation_checkpointing=cfg.gradient_checkpointing,
        bf16=cfg.bf16 and gpu,
        use_cpu=not gpu,
        use_liger_kernel=liger,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=[r for r in cfg.report_to if r != "none"],
        dataset_num_proc=None,
        **_sft_args(cfg, plan.steps),
    )
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
        )  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds.remove_columns(["id", "messages", "length"]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    _fsdp_on_cpu(trainer)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from distill.train.progress import TrainProgress

    for raw in (ProgressCallback, PrinterCallback):  # one readable line per log instead of the raw dicts
        trainer.remove_callback(raw)
    trainer.add_callback(TrainProgress(verbose))
    resume = last_checkpoint(out)
    if resume:
        _log(f"  resuming from {resume}")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out))  # gathers a full state dict under FSDP / ZeRO-3
    summary = {
        "student": cfg.model_dump(),
        "student_fingerprint": student_fp,
        "data": data,
        "data_fingerprint": data_fp,
        "plan": plan.to_json(),
        "notes": notes,
        "resumed_from": resume,
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "seconds": round(seconds, 2),
        "loss_history": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "learning_rate_history": [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h],
        "sharding": sharding_report(trainer),
    }
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(out))
        model.generation_config.save_pretrained(str(out))
        (out / "distill_train.json").write_text(json.dumps(summary, indent=1, default=str))
    _log(f"train {cfg.name}: {result.global_step} steps, loss {result.training_loss:.4f}, {seconds:.1f}s -> {out}")
    return summary


def _fsdp_on_cpu(trainer: Any) -> None:
    """Make an FSDP launch on CPU processes really shard.

    accelerate (1.15) only turns on FSDP for GPU-like devices: launched on CPU with an FSDP config it
    quietly runs plain DDP. torch's FSDP2 (`fully_shard`) itself works on CPU with gloo, so when the
    launcher asked for FSDP and there is no GPU, the accelerator's state is set to FSDP with the
    plugin the launcher configured: the CPU test then exercises the same sharded path as a GPU node.
    """
    import torch
    from accelerate.utils import DistributedType

    acc = trainer.accelerator
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not wanted or torch.cuda.is_available() or acc.distributed_type == DistributedType.FSDP:
        return
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = getattr(acc.state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()  # reads the launcher's env
    acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    trainer.is_fsdp_enabled = True

    def get_state_dict(model: Any, unwrap: bool = True) -> dict[str, Any]:
        # The accelerator decided it was not FSDP at init, so gather the full state dict here: every
        # rank takes part, rank 0 gets whole tensors (cloned: on CPU no offload copy is made).
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {k: v.detach().clone() for k, v in get_model_state_dict(model, options=options).items()}

    acc.get_state_dict = get_state_dict


def sharding_report(trainer: Any) -> dict[str, Any]:
    """How the model was really distributed: accelerate can fall back to DDP without a word."""
    acc = trainer.accelerator
    model = trainer.model_wrapped
    dtensors = 0
    try:
        from torch.distributed.tensor import DTensor

        dtensors = sum(isinstance(p, DTensor) for p in trainer.model.parameters())
    except ImportError:
        pass
    return {
        "distributed_type": str(acc.state.distributed_type),
        "num_processes": acc.num_processes,
        "wrapper": type(model).__name__,
        "dtensor_params": dtensors,
        "params": sum(1 for _ in trainer.model.parameters()),
    }
