"""Backends that run the model in this process: `synthetic`, `transformers` (small models, CPU or one
GPU) and `vllm` (vLLM's engine, for a GPU node that holds the whole teacher or a student).

Each returns one result row per request, in order. `synthetic` and `transformers` take a batch at a time
in a thread; `vllm` keeps its engine full in a thread of its own and hands back each request as it
finishes. Either way the stage's event loop keeps writing results and drawing progress meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from dataclasses import dataclass
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


class ReplayBackend(_Offline):
    """Answers already written: R1 reused DeepSeek-V3's SFT data for most non-reasoning rows. `model` names a
    file (any input format) of `problem`, `content` and optional `reasoning`; each request gets the answer
    to its problem (matched as prompt ids are: normalized text). A problem the file does not answer fails
    as a request would, and is retried on the next run."""

    def load(self) -> None:
        from distill.records import stable_id
        from distill.sources import inputs

        files = inputs.resolve([self.cfg.model], 1 << 30)
        self.answers: dict[str, tuple[str | None, str]] = {}
        for chunk in inputs.plan(files, 1 << 62):
            for batch in inputs.read_chunk(chunk, None, 65_536):
                cols = batch.table.column_names
                if "problem" not in cols or "content" not in cols:
                    raise UserError(f"teacher replay file {chunk.file.path}: needs `problem` and `content` columns "
                                    f"(it has {', '.join(cols)})")  # fmt: skip
                reasoning = batch.table.column("reasoning").to_pylist() if "reasoning" in cols else None
                for k, (problem, content) in enumerate(
                    zip(
                        batch.table.column("problem").to_pylist(),
                        batch.table.column("content").to_pylist(),
                        strict=True,
                    )
                ):
                    self.answers.setdefault(stable_id(problem), (reasoning[k] if reasoning else None, content))

    def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
        from distill.records import stable_id

        out = []
        for r in batch:
            found = self.answers.get(stable_id(r.problem))
            if found is None:
                out.append({"error": f"request_failed: {self.cfg.model} has no answer to this problem (replay)"})
                continue
            reasoning, content = found
            out.append({"reasoning": reasoning or None, "content": content, "finish_reason": "stop",
                        "prompt_tokens": None, "completion_tokens": None, "latency_s": 0.0})  # fmt: skip
        return out


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

        from distill.hub_offline import from_pretrained

        self.tokenizer = from_pretrained(AutoTokenizer.from_pretrained, self.cfg.model, "teacher model")
        dtype = getattr(torch, self.cfg.transformers.dtype)
        model = from_pretrained(AutoModelForCausalLM.from_pretrained, self.cfg.model, "teacher model", dtype=dtype)
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


class VLLMBackend:
    """vLLM's engine in this process, kept full the whole run: no batch tails.

    Handing vLLM a batch and waiting for all of it wastes the GPU at the end of every batch, while a few of
    its longest traces decode alone (R1's run from a few hundred to 32,768 tokens). Here one thread owns
    vLLM's `LLMEngine` and steps it continuously; each request is added the moment the scheduler has one
    and each result is handed back the moment it finishes, so the stage journals it at once (the same
    resume after `kill -9` as the server path) and the next request takes its place. `batch_size` is the
    number of requests kept in the engine: above vLLM's `max_num_seqs`, so its scheduler always has work.
    Per-request seeds as before: a resumed run asks for the same samples.
    """

    batch_size = 1  # the scheduler hands over one request at a time

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.workers = cfg.batch_size
        self.stats = None
        self._inbox: queue.SimpleQueue[tuple[str, Any, Any, asyncio.Future[Any]] | _Abort | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._ids = itertools.count()
        self.aborted = 0  # requests the engine was told to abort

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

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        self._thread = threading.Thread(target=self._run, args=(asyncio.get_running_loop(),), daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def sampling_params(self, req: Request) -> Any:
        from vllm import SamplingParams

        cfg = self.cfg
        return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=req.seed)

    async def generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        if self._failed is not None:
            raise self._failed
        loop = asyncio.get_running_loop()
        waits, texts, ids = [], [], []
        for req in batch:
            text = _prompt_text(req, self.cfg, self.tokenizer)
            # Token ids, not text: the rendered template already holds any BOS, and vLLM would add another.
            prompt = {"prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)}
            future: asyncio.Future[Any] = loop.create_future()
            ids.append(str(next(self._ids)))
            self._inbox.put((ids[-1], prompt, self.sampling_params(req), future))
            waits.append(future)
            texts.append(text)
        if self._failed is not None:  # the engine died while these went in: the thread failed what it found
            raise self._failed
        started = time.perf_counter()
        try:
            outputs = await asyncio.gather(*waits)
        except asyncio.CancelledError:  # `generate --preset` no longer needs them: the engine stops decoding them
            for request_id in ids:
                self._inbox.put(_Abort(request_id))
            raise
        latency = round(time.perf_counter() - started, 4)
        rows = []
        for text, out in zip(texts, outputs, strict=True):
            gen = out.outputs[0]
            reasoning, content = split_output(gen.text, think_forced=text.endswith(THINK_OPEN))
            rows.append({
                "reasoning": reasoning, "content": content, "finish_reason": gen.finish_reason,
                "prompt_tokens": len(out.prompt_token_ids or []), "completion_tokens": len(gen.token_ids),
                "latency_s": latency,
            })  # fmt: skip
        return rows

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The engine thread: add what came in, step, hand back what finished; sleep only when idle."""
        engine = self.llm.llm_engine
        waiting: dict[str, asyncio.Future[Any]] = {}
        try:
            while True:
                block = not waiting  # nothing in the engine: wait for a request (or the end)
                while True:
                    try:
                        item = self._inbox.get(block=block)
                    except queue.Empty:
                        break
                    if item is None:
                        return
                    if isinstance(item, _Abort):
                        if waiting.pop(item.request_id, None) is not None:
                            engine.abort_request([item.request_id])
                            self.aborted += 1
                        continue
                    request_id, prompt, params, future = item
                    engine.add_request(request_id, prompt, params)
                    waiting[request_id] = future
                    block = False
                if not waiting:  # all that was in it was aborted: stepping an empty engine would block for good
                    continue
                for out in engine.step():
                    if out.finished and (future := waiting.pop(out.request_id, None)) is not None:
                        loop.call_soon_threadsafe(_resolve, future, out)
        except BaseException as e:  # the engine died: every request in it or queued for it fails, loudly
            self._failed = e  # set first: a request queued after the drain below sees it (generate)
            queued = []
            with contextlib.suppress(queue.Empty):
                while True:
                    queued.append(self._inbox.get_nowait())
            for future in [*waiting.values(), *(item[3] for item in queued if item is not None)]:
                loop.call_soon_threadsafe(_fail, future, e)


@dataclass(frozen=True)
class _Abort:
    """A request the stage cancelled: the engine thread aborts it (vLLM frees its sequence at once)."""

    request_id: str


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
