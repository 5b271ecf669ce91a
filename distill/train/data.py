"""SFT rows -> token ids + loss masks, the checks that must pass before any GPU time, and the plan.

Rows are tokenized here, once, with the student's chat template (`input_ids` + `assistant_masks`),
and handed to TRL already processed: the lengths are known before training, so rows longer than
`max_length` are dropped and counted (or stop the run) instead of being cut, which would train the
student on reasoning with its answer cut off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distill.errors import UserError
from distill.train.config import StudentConfig
from distill.train.templates import ChatTemplate

PREFLIGHT_ROWS = 64  # rows whose rendering and mask are checked token by token


def load_rows(data: str) -> Any:
    """The `id` and `messages` of SFT rows, from anything the reader layer reads (`distill.sources.inputs`): a dataset
    directory, Parquet / JSONL / CSV files, a plain folder of them (a downloaded Hub dataset), a glob,
    `hf:NAME[@SPLIT]`. A row that is not an SFT row stops the run with one line naming it."""
    import datasets
    import pyarrow as pa

    from distill.records import RECORDS
    from distill.sources import inputs

    sft = RECORDS["sft"]
    files = inputs.resolve([data], 1 << 30, what="--data")
    inputs.check_columns(files, sft)
    parts = []
    for chunk in inputs.plan(files, 1 << 30):
        for batch in inputs.read_chunk(chunk, sft, 65_536):
            if batch.rejects:
                bad = batch.rejects[0]
                raise UserError(f"--data {chunk.file.path}: row {bad.row}: {bad.error}; fix or remove the row")
            parts.append(
                batch.table.select(["id", "messages"]).cast(
                    pa.schema([sft.column("id").field, sft.column("messages").field])
                )
            )
    if not parts:
        raise UserError(f"--data {data}: no rows")
    return datasets.Dataset(pa.concat_tables(parts))


def prepare_tokenizer(tokenizer: Any, template: ChatTemplate, *, add_missing: bool = True) -> list[str]:
    """Install the template and its end-of-turn token as EOS; returns the marker tokens it had to add."""
    tokenizer.chat_template = template.jinja
    missing = [s for s in template.specials if s not in tokenizer.get_vocab()]
    if missing:
        if not add_missing:
            raise UserError(f"tokenizer lacks the {template.name} markers {missing}; they must be single tokens")
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    for marker in template.specials:  # a marker split into pieces would make the model learn it piecewise
        if len(tokenizer.encode(marker, add_special_tokens=False)) != 1:
            raise UserError(f"tokenizer: {marker!r} is not one token; add it as a special token")
    tokenizer.eos_token = template.eos
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A pad distinct from EOS: with padding, EOS positions must stay in the loss.
        vocab = tokenizer.get_vocab()
        pads = [t for t in ("<|endoftext|>", "<|finetune_right_pad_id|>") if t in vocab and t != template.eos]
        tokenizer.pad_token = pads[0] if pads else tokenizer.eos_token
    return missing


def tokenize(ds: Any, tokenizer: Any, num_proc: int | None = None) -> Any:
    """`input_ids`, `assistant_masks` and `length` of every row (the rendered conversation, no truncation)."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = tokenizer.apply_chat_template(
            batch["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return {
            "input_ids": out["input_ids"],
            "assistant_masks": out["assistant_masks"],
            "length": [len(x) for x in out["input_ids"]],
        }

    return ds.map(encode, batched=True, batch_size=256, num_proc=num_proc, desc="tokenizing")


def preflight(ds: Any, tokenizer: Any, template: ChatTemplate) -> list[str]:
    """Fail loudly, naming the row, if the rendering or the loss mask is not what training needs."""
    eos_id = tokenizer.convert_tokens_to_ids(template.eos)
    notes = []
    for i in range(min(PREFLIGHT_ROWS, len(ds))):
        row = ds[i]
        ids, mask = row["input_ids"], row["assistant_masks"]
        where = f"row {i} (id {row['id']})"
        if not any(mask):
            raise UserError(f"preflight: {where}: the loss mask is empty (no assistant turn to learn?)")
        last = max(k for k, m in enumerate(mask) if m)
        if ids[last] != eos_id:
            raise UserError(f"preflight: {where}: the learned span does not end with {template.eos}")
        first = mask.index(1)
        if any(mask[first : last + 1]) and not all(mask[first : last + 1]):
            raise UserError(f"preflight: {where}: the learned span has holes; the template marks it wrongly")
        learned = tokenizer.decode(ids[first : last + 1])
        final = row["messages"][-1]
        if final["role"] != "assistant":
            raise UserError(f"preflight: {where}: the last message is not the assistant's")
        if "</think>" not in learned:
            raise UserError(f"preflight: {where}: the learned span has no </think>: is the reasoning there?")
        answer = final["content"].split("</think>")[-1].strip()
        if answer and answer[-20:] not in learned:
            raise UserError(f"preflight: {where}: the learned span does not hold the answer's end")
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        if users and users[-1][:40] not in tokenizer.decode(ids[:first]):
            raise UserError(f"preflight: {where}: the prompt is not before the learned span (it would be learned)")
    notes.append(f"preflight passed on {min(PREFLIGHT_ROWS, len(ds))} rows: template renders, <think> block in the "
                 f"learned span, mask = assistant turn ending with {template.eos}")  # fmt: skip
    return notes


@dataclass
class Plan:
    rows: int
    rows_dropped: int
    tokens: int
    learned_tokens: int
    max_row_tokens: int
    processes: int
    tokens_per_step: int  # upper bound: sequences x max_length (packed rows fill it)
    batch_rows: int  # rows per device batch
    padded_tokens: int  # token slots of padded batches (random rows, each padded to its batch's longest)
    steps_per_epoch: int
    epochs: float
    steps: int
    params_b: float | None
    gpu_hours: float | None
    hardware: str

    def lines(self) -> list[str]:
        out = [
            f"rows {self.rows:,} ({self.rows_dropped:,} longer than max_length dropped); "
            f"{self.tokens:,} tokens, {self.learned_tokens:,} in the loss; longest row {self.max_row_tokens:,}",
            f"{self.processes} processes; up to {self.tokens_per_step:,} tokens per optimizer step; "
            f"{self.steps_per_epoch:,} steps per epoch x {self.epochs:g} epochs = {self.steps:,} steps",
            f"padded batches of {self.batch_rows} would be {1 - self.tokens / max(1, self.padded_tokens):.0%} padding "
            f"({self.padded_tokens:,} token slots for {self.tokens:,} tokens); packing drops it",
        ]
        if self.gpu_hours is not None:
            out.append(
                f"~{self.gpu_hours:,.1f} GPU-hours on {self.hardware} "
                f"({self.params_b:.2f}B params, 6 x params x tokens x epochs)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def expected_padded_tokens(lengths: np.ndarray, batch: int) -> int:
    """Token slots that padded batches of `batch` random rows fill, in expectation: each batch is as long
    as its longest row. The row of rank i (ascending) is the longest of a random batch with probability
    C(i-1, batch-1) / C(n, batch)."""
    n = len(lengths)
    if n == 0:
        return 0
    b = min(batch, n)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    weights = np.ones(n)
    for j in range(1, b):  # C(i-1, b-1) as a product, in floats: exact enough for an estimate
        weights *= np.maximum(ranks - j, 0) / j
    expected_max = float(np.sort(lengths) @ weights / weights.sum())
    return round(n * expected_max)


def make_plan(ds: Any, cfg: StudentConfig, processes: int, params: int | None, dropped: int) -> Plan:
    lengths = np.asarray(ds["length"], dtype=np.int64)
    tokens = int(lengths.sum())
    learned = int(sum(sum(m) for m in ds["assistant_masks"]))
    seqs_per_step = cfg.per_device_batch_size * processes * cfg.gradient_accumulation_steps
    # BFD packs rows into max_length bins: about tokens / max_length of them
    sequences = max(1, math.ceil(tokens / cfg.max_length)) if cfg.packing else len(ds)
    steps_per_epoch = max(1, math.ceil(sequences / seqs_per_step))
    steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    gpu_hours = None
    params_b = params / 1e9 if params else cfg.params_b
    if params_b:
        flops = 6 * params_b * 1e9 * tokens * cfg.epochs
        gpu_hours = flops / (cfg.hardware.peak_tflops * 1e12 * cfg.hardware.mfu) / 3600
    return Plan(
        rows=len(ds),
        rows_dropped=dropped,
        tokens=tokens,
        learned_tokens=learned,
        max_row_tokens=int(lengths.max()) if len(lengths) else 0,
        processes=processes,
        tokens_per_step=seqs_per_step * cfg.max_length,
        batch_rows=cfg.per_device_batch_size,
        padded_tokens=expected_padded_tokens(lengths, cfg.per_device_batch_size),
        steps_per_epoch=steps_per_epoch,
        epochs=cfg.epochs,
        steps=steps,
        params_b=params_b,
        gpu_hours=gpu_hours,
        hardware=f"{cfg.hardware.gpu} at {cfg.hardware.mfu:.0%} MFU",
    )
