"""The options of `distill eval` (and of a pipeline step with `stage: eval`) and its declaration; the step runs
`distill/eval/run.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.config import StrictModel
from distill.stages import Stage, register


class EvalOptions(StrictModel):
    """What is evaluated: a checkpoint (a pipeline's train step, or `model`), a server, or a teacher YAML."""

    benchmark: str = Field(description="Benchmark .jsonl/.parquet/.csv (problem, answer|tests, domain)")
    model: str | None = Field(
        default=None, description="A checkpoint folder, the base URL of an OpenAI-compatible server, or "
        "distill:tiny-qwen2 (in a pipeline: instead of an input, e.g. the untrained student to compare with)",
    )  # fmt: skip
    teacher: str | None = Field(default=None, description="Teacher YAML: any backend with its settings, instead")
    samples: int = Field(default=4, ge=1, description="Samples per problem (k); R1 used 64 for AIME")
    max_tokens: int = Field(default=32_768, ge=1, description="Generated tokens per sample")
    temperature: float | None = Field(default=None, ge=0, description="Default: the checkpoint's, else 0.6")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Default: the checkpoint's, else 0.95")
    seed: int = Field(default=0, description="Seeds every sample (per problem and sample index)")
    backend: Literal["transformers", "vllm"] = Field(
        default="transformers", description="For a checkpoint folder: transformers (CPU / one GPU) or vllm"
    )
    served_model_name: str | None = Field(default=None, description="With a URL: the model (default: the first)")
    concurrency: int = Field(default=64, ge=1, description="With a URL: requests in flight")
    batch_size: int = Field(default=16, ge=1, description="Offline backends: prompts per batch")
    compare: bool = Field(default=False, description="Print the result beside the published R1-Distill scores")


register(
    Stage(
        name="eval",
        help="""Evaluate a model: k samples per problem, scored by the filters' verifiers; pass@1, maj@k, and more.

    Sampling follows the R1 protocol (temperature 0.6, top-p 0.95, up to 32,768 tokens, no system
    prompt; math asks for \\boxed{}). Killed and rerun, it continues where it stopped. Writes
    OUT/results.json (metrics, fingerprints of model, data and parameters, seed) and per-sample rows
    in OUT/scored/. In a pipeline its input is a train step (its checkpoint), or `model` names one.

    Example:

      distill eval --model runs/students/tiny --benchmark data/demo/heldout.jsonl --samples 4 --out runs/eval/tiny

      distill eval --teacher configs/teacher/synthetic.yaml --benchmark data/demo/heldout.jsonl --out runs/eval/syn

    A served model: `--model http://localhost:8000/v1`; beside the published R1-Distill scores: `--compare`.
    """,
        options=EvalOptions,
        load="distill.downstream:load_eval",
        run="distill.downstream:evaluate",
        details="distill.downstream:eval_details",
        plan="distill.downstream:plan_eval",
        rows_per_shard=None,
        parallel=False,
        input_optional=True,
        input_flag=None,  # on the command line --model, --teacher name what is evaluated
        out_help="Output folder: samples/, scored/, results.json.",
    )
)
