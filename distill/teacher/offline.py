"""Backends that run the model in this process: `synthetic`, `transformers` (small models, CPU or one
GPU) and `vllm` (vLLM's offline `LLM`, for a GPU node that holds the whole teacher or a student).

Each takes a batch of requests and returns one result row per request, in order. The work runs in a
thread so the stage's event loop keeps writing results and drawing progress meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from distill.errors import UserError
from distill.teacher import synthetic
from distill.teacher.config import TeacherConfig
from distill.teacher.parse import split_output
from distill.teacher.prompting import THINK_OPEN, Request, completion_prompt, messages


class _Offline:
    workers = 1

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.stats = None

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    async def close(self) -> None:
        return None

    def load(self) -> None:
        return None

    async def generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        rows = await asyncio.to_thread(self.generate_sync, batch)
        latency = round((time.perf_counter() - started) / max(1, len(batch)), 4)
        for row in rows:
            row.setdefault("latency_s", latency)
        return rows

    def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
        raise NotImplementedError


class SyntheticBackend(_Offline):
    def load(self) -> None:
        from distill.tokenizer import count_tokens, load_tokenizer

        tok = load_tokenizer(None)
        self._count = lambda texts: count_tokens(tok, texts)

    def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
        # The synthetic teacher is instant; its latency is reported as 0 so reruns give identical rows.
        return [{**synthetic.generate(r, self.cfg, self._count), "latency_s": 0.0} for r in batch]


def _prompt_text(req: Request, cfg: TeacherConfig, tokenizer: Any) -> str:
    if cfg.api == "completion":
        return completion_prompt(req, cfg)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"teacher model {cfg.model!r}: its tokenizer has no chat template; use api: completion")
    return tokenizer.apply_chat_template(messages(req, cfg), tokenize=False, add_generation_prompt=True)


class TransformersBackend(_Offline):
    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.model)
            dtype = getattr(torch, self.cfg.transformers.dtype)
            model = AutoModelForCausalLM.from_pretrained(self.cfg.model, dtype=dtype)
        except OSError as e:
            raise UserError(f"teacher model {self.cfg.model!r}: cannot be loaded ({str(e).splitlines()[0]})") from None
        self.model = model.to(self.cfg.transformers.device).eval()
        self.tokenizer.padding_side = "left"  # generation continues each row from its own last token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
        import torch

        texts = [_prompt_text(r, self.cfg, self.tokenizer) for r in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        seed = batch[0].seed if batch[0].seed is not None else 0
        torch.manual_seed(seed)  # one seed per batch: the same batch always samples the same tokens
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                do_sample=self.cfg.temperature > 0,
                temperature=self.cfg.temperature if self.cfg.temperature > 0 else None,
                top_p=self.cfg.top_p if self.cfg.temperature > 0 else None,
                max_new_tokens=self.cfg.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        rows = []
        width = enc["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        for i, text in enumerate(texts):
            new = out[i, width:].tolist()
            if eos in new:
                new, finish = new[: new.index(eos)], "stop"
            else:
                finish = "length" if len(new) >= self.cfg.max_tokens else "stop"
            completion = self.tokenizer.decode(new, skip_special_tokens=False)
            reasoning, content = split_output(completion, think_forced=text.endswith(THINK_OPEN))
            rows.append(
                {
                    "reasoning": reasoning,
                    "content": content,
                    "finish_reason": finish,
                    "prompt_tokens": int(enc["attention_mask"][i].sum()),
                    "completion_tokens": len(new),
                }
            )
        return rows


class VLLMBackend(_Offline):
    def load(self) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend 'vllm' needs vLLM: pip install 'distill[vllm]' on the GPU node") from None
        v = self.cfg.vllm
        self.llm = LLM(
            model=self.cfg.model,
            tensor_parallel_size=v.tensor_parallel_size,
            pipeline_parallel_size=v.pipeline_parallel_size,
            gpu_memory_utilization=v.gpu_memory_utilization,
            max_model_len=v.max_model_len,
            dtype=v.dtype,
            **v.engine_args,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
        from vllm import SamplingParams

        cfg = self.cfg
        params = [
            SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=r.seed)
            for r in batch
        ]
        texts = [_prompt_text(r, cfg, self.tokenizer) for r in batch]
        # Token ids, not text: the rendered template already holds any BOS, and vLLM would add another.
        prompts = [{"prompt_token_ids": self.tokenizer.encode(t, add_special_tokens=False)} for t in texts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = []
        for text, out in zip(texts, outputs, strict=True):
            gen = out.outputs[0]
            reasoning, content = split_output(gen.text, think_forced=text.endswith(THINK_OPEN))
            rows.append(
                {
                    "reasoning": reasoning,
                    "content": content,
                    "finish_reason": gen.finish_reason,
                    "prompt_tokens": len(out.prompt_token_ids or []),
                    "completion_tokens": len(gen.token_ids),
                }
            )
        return rows
