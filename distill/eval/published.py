"""The published R1-Distill scores (DeepSeek-R1 paper, Table 5: pass@1 over k samples at temperature
0.6, top-p 0.95, 32,768 tokens; AIME 2024 also cons@64), for `distill eval --compare`."""

from __future__ import annotations

from typing import Any

BENCHMARKS = ("aime24", "aime24_cons64", "math500", "gpqa_diamond", "livecodebench")
R1_DISTILL: dict[str, dict[str, float]] = {
    "DeepSeek-R1-Distill-Qwen-1.5B": {"aime24": 28.9, "aime24_cons64": 52.7, "math500": 83.9, "gpqa_diamond": 33.8,
                                      "livecodebench": 16.9},
    "DeepSeek-R1-Distill-Qwen-7B": {"aime24": 55.5, "aime24_cons64": 83.3, "math500": 92.8, "gpqa_diamond": 49.1,
                                    "livecodebench": 37.6},
    "DeepSeek-R1-Distill-Qwen-14B": {"aime24": 69.7, "aime24_cons64": 80.0, "math500": 93.9, "gpqa_diamond": 59.1,
                                     "livecodebench": 53.1},
    "DeepSeek-R1-Distill-Qwen-32B": {"aime24": 72.6, "aime24_cons64": 83.3, "math500": 94.3, "gpqa_diamond": 62.1,
                                     "livecodebench": 57.2},
    "DeepSeek-R1-Distill-Llama-8B": {"aime24": 50.4, "aime24_cons64": 80.0, "math500": 89.1, "gpqa_diamond": 49.0,
                                     "livecodebench": 39.6},
    "DeepSeek-R1-Distill-Llama-70B": {"aime24": 70.0, "aime24_cons64": 86.7, "math500": 94.5, "gpqa_diamond": 65.2,
                                      "livecodebench": 57.5},
}  # fmt: skip


def compare_table(name: str, results: dict[str, Any]) -> list[str]:
    """Lines of a table: this run's pass@1 (and maj@k on AIME) beside the published R1-Distill scores."""
    m = results["metrics"]
    k = m["samples_per_problem"]
    ours = f"{m['pass@1']:.1f} ± {m['pass@1_stderr']:.1f}"
    lines = [f"{'model':<34} {name + ' pass@1':>18}" + (f" {'cons@64':>8}" if name == "aime24" else "")]
    label = f"this run ({results['model']['name']}, k={k})"
    lines.append(f"{label[:34]:<34} {ours:>18}" + (f" {m.get(f'maj@{k}') or 0:>8.1f}" if name == "aime24" else ""))
    for model, scores in R1_DISTILL.items():
        if name in scores:
            extra = f" {scores['aime24_cons64']:>8.1f}" if name == "aime24" else ""
            lines.append(f"{model:<34} {scores[name]:>18.1f}{extra}")
    return lines
