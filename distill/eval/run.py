"""`distill eval`: sample a model k times per benchmark problem and score it with the filters' verifiers.

Three stages under `--out`, each a resumable dataset directory or file:
- `benchmark.jsonl`: the benchmark converted to prompt rows (`distill.eval.benchmarks`);
- `samples/`: `distill generate` with the model as the teacher (transformers or vLLM for a checkpoint
  folder, the OpenAI client for a server URL): k rows per problem, resumable after a kill;
- `scored/`: `distill filter`'s own `verdicts` with a correctness-only preset, so "correct" means the
  same in the data and in the evaluation (math-verify, option letters, the code sandbox); only the
  text after `</think>` counts, so a truncated sample has no answer;
then `results.json`: pass@1 with its standard error over problems, maj@k, pass@k, mean response length,
truncation rate, the shares of samples that close their think block and that box an answer after it,
and the fingerprints of the model, the benchmark and the parameters, with the seed.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.eval.benchmarks import published_benchmark, to_prompts
from distill.eval.metrics import final_answer, has_box, summarize
from distill.filters.config import CorrectnessConfig, FilterPreset, LanguageCheckConfig, ReadabilityConfig
from distill.filters.readability import split_think
from distill.store import DatasetReader, atomic_write_bytes, fingerprint
from distill.teacher.config import TeacherConfig

SCIENCE_SUFFIX = "Please reason step by step, and put the letter of your final answer within \\boxed{}."
CODE_SUFFIX = (
    "Please reason step by step, then give your final solution as one Python program that reads standard "
    "input and writes standard output, in a single ```python code block."
)
EVAL_PRESET = FilterPreset(
    name="eval",
    description="correctness only: the filters' verifiers, no readability or language checks",
    correctness=CorrectnessConfig(require_gold=True),
    readability=ReadabilityConfig(enabled=False),
    language=LanguageCheckConfig(enabled=False),
)


def resolve_model(model: str) -> str:
    """`distill:tiny-qwen2` (the demo's and the tests' base student, built on this machine) as its folder."""
    from distill.train.config import TINY

    if model == TINY:
        from distill.train.tiny import tiny_model_path

        return str(tiny_model_path())
    return model


def model_fingerprint(model: str) -> str:
    """SHA-256 over a checkpoint folder's files (names and bytes; checkpoint-* subfolders left out), or
    of the URL and served name for a server (which cannot vouch for its weights)."""
    path = Path(model)
    if not path.is_dir():
        return hashlib.sha256(model.encode()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(
        p for p in path.rglob("*") if p.is_file() and not p.relative_to(path).parts[0].startswith("checkpoint-")
    ):
        h.update(f.relative_to(path).as_posix().encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def served_model(url: str) -> str:
    """The first model a server lists at /v1/models."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10) as r:
            return json.loads(r.read())["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"--model {url}: cannot list its models ({e}); pass --served-model-name") from None


def teacher_for(
    model: str,
    samples: int,
    *,
    backend: str,
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    seed: int,
    served_model_name: str | None,
    concurrency: int,
    batch_size: int,
) -> TeacherConfig:
    """The model as a teacher, with the R1 evaluation protocol's sampling and prompts."""
    gen: dict[str, Any] = {}
    if model.startswith(("http://", "https://")):
        kind: dict[str, Any] = {
            "backend": "openai",
            "base_urls": [model],
            "model": served_model_name or served_model(model),
        }
    else:
        if not Path(model).is_dir():
            raise UserError(f"--model {model}: not a checkpoint folder or an http(s) URL of a server")
        kind = {"backend": backend, "model": model}
        gen_file = Path(model) / "generation_config.json"
        if gen_file.exists():  # the checkpoint's own sampling, unless given on the command line
            gen = {k: v for k, v in json.loads(gen_file.read_text()).items() if k in ("temperature", "top_p")}
    return TeacherConfig(
        **kind,
        name=Path(model).name if not model.startswith("http") else kind["model"],
        samples=samples,
        temperature=temperature if temperature is not None else gen.get("temperature", 0.6),
        top_p=top_p if top_p is not None else gen.get("top_p", 0.95),
        max_tokens=max_tokens,
        seed=seed,
        science_suffix=SCIENCE_SUFFIX,
        code_suffix=CODE_SUFFIX,
        concurrency=concurrency,
        batch_size=batch_size,
    )


def run_eval(
    model: str,
    benchmark: Path,
    samples: int,
    out: Path,
    *,
    teacher: TeacherConfig | None = None,
    backend: str = "transformers",
    max_tokens: int = 32_768,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int = 0,
    served_model_name: str | None = None,
    concurrency: int = 64,
    batch_size: int = 16,
    layout: str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    from distill.stages import invoke

    out = Path(out)
    model = resolve_model(model)
    layout, prompts = to_prompts(Path(benchmark), layout)
    if teacher is not None:
        cfg = teacher.model_copy(
            update={"samples": samples, "science_suffix": SCIENCE_SUFFIX, "code_suffix": CODE_SUFFIX}
        )
    else:
        cfg = teacher_for(model, samples, backend=backend, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          seed=seed, served_model_name=served_model_name, concurrency=concurrency,
                          batch_size=batch_size)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in prompts).encode()
    bench_file = out / "benchmark.jsonl"
    if not bench_file.exists() or bench_file.read_bytes() != blob:  # rewritten only when it changed
        atomic_write_bytes(bench_file, blob)
    common = {"overwrite": overwrite, "show_progress": show_progress}
    generated = invoke("generate", [bench_file], out / "samples", settings=cfg, rows_per_shard=max(1, 256 // samples),
                       **common)  # fmt: skip
    scored = invoke("filter", [out / "samples"], out / "scored", settings=EVAL_PRESET, workers=workers, **common)

    columns = ["id", "sample", "domain", "correct", "reasoning", "content", "finish_reason", "completion_tokens"]
    rows = []
    for batch in DatasetReader(out / "scored").iter_batches(columns=columns):
        for r in batch.to_pylist():
            # As in scoring: only an answer after a closed think block counts, also as a vote.
            reasoning, answer, closed = split_think(r.pop("reasoning"), r.pop("content"))
            closed = closed and r["finish_reason"] != "length"
            r["correct"] = bool(r["correct"])
            r["vote"] = final_answer(r["domain"], answer, closed)
            r["closed_think"] = closed and reasoning is not None
            r["boxed"] = has_box(r["domain"], answer, closed)
            rows.append(r)
    metrics = summarize(rows, samples)
    params = {**cfg.params(), "samples": samples, "suffixes": {"math": cfg.math_suffix, "science": cfg.science_suffix,
              "code": cfg.code_suffix}, "api": cfg.api}  # fmt: skip
    model_fp = model_fingerprint(model) if teacher is None else fingerprint(cfg.fingerprint_fields())
    results = {
        "benchmark": {"path": str(benchmark), "layout": layout, "problems": len(prompts),
                      "published": published_benchmark(Path(benchmark), layout),
                      "fingerprint": hashlib.sha256(blob).hexdigest()},
        "model": {"name": cfg.teacher_name, "path": model, "backend": cfg.backend, "fingerprint": model_fp},
        "params": params,
        "params_fingerprint": fingerprint(params),
        "seed": cfg.seed,
        "metrics": metrics,
        "samples_dir": str(out / "scored"),
        "reused": generated.skipped and scored.skipped,  # nothing was generated or scored again
        "distill_version": __import__("distill").__version__,
    }  # fmt: skip
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    return results


def print_results(results: dict[str, Any], name: str | None = None) -> None:
    import sys

    m = results["metrics"]
    k = m["samples_per_problem"]
    bench = Path(results["benchmark"]["path"]).name
    print(
        f"eval {results['model']['name']} on {bench} ({m['problems']} problems x {k}): "
        f"pass@1 {m['pass@1']:.1f} ± {m['pass@1_stderr']:.1f}, maj@{k} {m.get(f'maj@{k}')}, "
        f"pass@{k} {m.get(f'pass@{k}')}, mean {m['mean_response_tokens']} tokens, "
        f"truncated {100 * (m['truncation_rate'] or 0):.1f}%, think closed {m['closed_think_pct']}%, "
        f"boxed {m['boxed_pct']}%",
        file=sys.stderr,
    )
    if m["missing_samples"]:
        print(f"  {m['missing_samples']} samples failed to generate (see samples/_rejects); rerun to retry them",
              file=sys.stderr)  # fmt: skip
