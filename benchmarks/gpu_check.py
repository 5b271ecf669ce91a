"""The GPU check: what only a GPU can show, in one run of a few minutes (`benchmarks/gpu_check.sh`).

1. `sft`: bf16 SFT of a Qwen2-shaped model of 0.49B parameters (Qwen2.5-0.5B's shapes, tied embeddings, built
   from a config with random weights and the project's tokenizer: no hub) through `distill train`, with
   packing, FlashAttention-2 where installed (else sdpa per packed row) and Liger where installed: training
   tokens/s and MFU = 6 x parameters x tokens / seconds / the GPU's dense bf16 peak.
2. `fsdp2-tied`: the same model and data under `accelerate launch` with configs/accelerate/fsdp2.yaml in one
   process (FSDP2 over gloo fails on tied embeddings; this is the NCCL path): does it train, shard and save.
3. `vllm`: `distill generate` with the offline vLLM backend on the tiny model: generated tokens/s.

Without a GPU it stops at once with one line (exit 2). `--self-test` runs the same steps at tiny sizes on this
machine's CPU (the GPU-only steps are reported as skipped), so the script is known to work before a lease.
Each step's figures go to OUT/gpu_check.md (RESULTS.md's table format) and OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Dense bf16 peak TFLOP/s by GPU name (the MFU denominator); GPU_PEAK_TFLOPS overrides.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}
# The distill modules the check imports, and the packages they need: missing ones are named at start.
NEEDS = ["torch", "transformers", "trl", "datasets", "accelerate", "pydantic", "yaml", "pyarrow", "typer", "rich",
         "orjson", "xxhash", "aiohttp", "jinja2"]  # fmt: skip
SHAPES = {  # Qwen2.5-0.5B's config.json, and a tiny stand-in for the self-test
    "gpu": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936),
    "cpu": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=4096),
}  # fmt: skip


def log(msg: str) -> None:
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def build_model(folder: Path, shape: dict[str, int], gpu: bool) -> int:
    """A Qwen2 model from a config (random weights, tied embeddings) with the project's tokenizer; its parameters."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from distill.tokenizer import tiny_tokenizer_path
    from distill.train.templates import TEMPLATES

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_path())
    tok.chat_template = TEMPLATES["r1-qwen"].jinja
    vocab = max(shape["vocab_size"], len(tok))
    config = Qwen2Config(**{**shape, "vocab_size": vocab}, tie_word_embeddings=True, max_position_embeddings=8192,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda" if gpu else "cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16 if gpu else torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def write_rows(path: Path, rows: int, words: tuple[int, int]) -> None:
    """SFT rows with reasoning of a spread of lengths (so packing has work to do)."""
    rng = random.Random(0)
    vocab = ["add", "carry", "the", "digit", "then", "sum", "so", "we", "get", "check", "again", "total", "is"]
    with open(path, "w") as f:
        for i in range(rows):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            reasoning = " ".join(rng.choice(vocab) for _ in range(rng.randint(*words)))
            answer = f"<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{a + b}}}$."
            messages = [{"role": "user", "content": f"Compute {a} + {b}."}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"id": f"r{i}", "messages": messages}) + "\n")


def recipe(path: Path, model: Path, max_length: int, gpu: bool) -> None:
    import yaml

    path.write_text(yaml.safe_dump({
        "name": "gpu-check-0.5b", "base_model": str(model), "template": "r1-qwen", "max_length": max_length,
        "packing": True, "epochs": 1, "learning_rate": 1e-5, "per_device_batch_size": 1,
        "gradient_accumulation_steps": 1, "gradient_checkpointing": gpu, "bf16": gpu, "save_steps": 100_000,
        "report_to": ["none"], "accelerate_config": "configs/accelerate/fsdp2.yaml", "num_processes": 1,
    }))  # fmt: skip


def peak_tflops(gpu: bool) -> float | None:
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"])
    if not gpu:
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def step_sft(work: Path, gpu: bool) -> dict[str, Any]:
    from distill.config import load_config
    from distill.train.config import StudentConfig
    from distill.train.sft import kernels, train

    params = build_model(work / "model", SHAPES["gpu" if gpu else "cpu"], gpu)
    write_rows(work / "rows.jsonl", 2_000 if gpu else 40, (300, 3_000) if gpu else (20, 200))
    recipe(work / "recipe.yaml", work / "model", 4_096 if gpu else 512, gpu)
    cfg = load_config(work / "recipe.yaml", StudentConfig)
    attention, liger = kernels(cfg, gpu)
    summary = train(cfg, str(work / "rows.jsonl"), work / "sft")
    tokens = summary["plan"]["tokens"] * summary["plan"]["epochs"]
    rate = tokens / summary["seconds"]
    peak = peak_tflops(gpu)
    mfu = 6 * params * rate / (peak * 1e12) if peak else None
    return {"params": params, "tokens": tokens, "seconds": summary["seconds"], "tokens_per_s": round(rate),
            "mfu": round(mfu, 4) if mfu is not None else None, "attention": attention or "sdpa (segment_sdpa)",
            "liger": liger, "final_loss": summary["loss_history"][-1] if summary["loss_history"] else None}  # fmt: skip


def step_fsdp2_tied(work: Path, gpu: bool) -> dict[str, Any]:
    if not gpu:
        return {"skipped": "needs a GPU (FSDP2 over gloo fails on tied embeddings: the NCCL path is the check)"}
    out = work / "fsdp2"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp2.yaml",
           "--num_processes", "1", "--num_machines", "1", "-m", "distill.cli", "train", str(work / "recipe.yaml"),
           "--data", str(work / "rows.jsonl"), "--out", str(out), "--max-steps", "10"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    summary = json.loads((out / "distill_train.json").read_text())
    return {"seconds": round(time.perf_counter() - started, 1), "distributed": summary.get("distributed"),
            "saved": (out / "model.safetensors").exists(), "final_loss": summary["loss_history"][-1]}  # fmt: skip


def step_vllm(work: Path, gpu: bool) -> dict[str, Any]:
    if not gpu:
        return {"skipped": "needs a GPU"}
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed here (its wheel is larger than a device call can carry)"}
    from distill.stages import invoke
    from distill.teacher.config import TeacherConfig
    from distill.train.tiny import tiny_model_path

    prompts = work / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i in range(256):
            row = {"problem": f"Compute {i} + {i + 1}.", "answer": str(2 * i + 1), "domain": "math"}
            f.write(json.dumps(row) + "\n")
    cfg = TeacherConfig(backend="vllm", model=str(tiny_model_path()), samples=4, max_tokens=512, batch_size=1024,
                        vllm={"gpu_memory_utilization": 0.5, "max_model_len": 2048})  # fmt: skip
    result = invoke("generate", [str(prompts)], work / "traces", settings=cfg, show_progress=False)
    run = result.manifest.stats["generate"]["this_run"]
    return {"requests": run["requests"], "seconds": run["seconds"], "tokens_per_s": run["tokens_per_s"]}


def table(results: dict[str, dict[str, Any]], gpu_name: str) -> str:
    rows = []
    sft = results["sft"]
    if "error" in sft:
        rows.append(f"| bf16 SFT, 0.49B Qwen2 shape | failed: {sft['error']} | | |")
    else:
        mfu = f"{sft['mfu']:.1%}" if sft.get("mfu") is not None else "n/a (no peak for this device)"
        rows.append(f"| SFT tokens/s ({sft['params'] / 1e6:,.1f}M params, {sft['attention']}, Liger {sft['liger']}) "
                    f"| {sft['tokens_per_s']:,} | MFU {mfu} | 6 x params x tokens / s / bf16 peak |")  # fmt: skip
    for name, label in (("fsdp2-tied", "FSDP2, tied embeddings, 1 GPU"), ("vllm", "offline vLLM, tiny model")):
        r = results[name]
        if "skipped" in r or "failed" in r or "error" in r:
            what = f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r.get('failed') or r.get('error')}"
            rows.append(f"| {label} | {what} | | |")
        elif name == "vllm":
            rows.append(f"| {label} | {r['tokens_per_s']:,.0f} generated tokens/s | {r['requests']:,} requests | |")
        else:
            rows.append(f"| {label} | trains and saves in {r['seconds']} s | {r['distributed']} | |")
    head = f"Machine: {gpu_name}; Python {platform.python_version()}. Date: {time.strftime('%Y-%m-%d')}.\n\n"
    return head + "| check | figure | beside it | baseline |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self-test", action="store_true", help="tiny sizes on this machine's CPU")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")))
    args = ap.parse_args()
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        log(f"missing Python packages: {', '.join(missing)}; carry them as wheels (benchmarks/gpu_wheels.sh)")
        return 2
    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.self_test:
        log("no CUDA GPU here (torch.cuda.is_available() is False); run it where a GPU is, or --self-test on CPU")
        return 2
    gpu_name = torch.cuda.get_device_name() if gpu else f"CPU self-test ({os.cpu_count()} cores)"
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name, step in (("sft", step_sft), ("fsdp2-tied", step_fsdp2_tied), ("vllm", step_vllm)):
        log(f"{name} ...")
        started = time.perf_counter()
        try:
            results[name] = step(work, gpu)
        except Exception as e:  # one failed check must not hide the others' figures
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        log(f"{name}: {results[name]} ({time.perf_counter() - started:.0f}s)")
    (work / "gpu_check.json").write_text(json.dumps({"device": gpu_name, "results": results}, indent=2))
    md = table(results, gpu_name)
    (work / "gpu_check.md").write_text(md)
    print(md)
    return 1 if any("error" in r or "failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
