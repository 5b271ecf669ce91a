"""Memory before money: `distill train --dry-run` says, per GPU, whether a recipe fits and what would make it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.config import load_config
from distill.train.config import StudentConfig
from distill.train.memory import GIB, Architecture, Setup, Sharding, estimate, read_sharding, suggestion
from tests.conftest import REPO, run_cli

RECIPES = ["qwen-1.5b", "qwen-7b", "qwen-14b", "qwen-32b", "llama-8b", "llama-70b"]


def test_the_7b_recipe_by_hand() -> None:
    """students/qwen-7b.yaml: ZeRO-3 over 8 H100s, 32,768 tokens, checkpointing and Liger on; each figure
    worked out here from the config.json of Qwen2.5-Math-7B, not from the code under test."""
    cfg = load_config(REPO / "students" / "qwen-7b.yaml", StudentConfig)
    arch = cfg.architecture
    assert arch is not None
    # a layer: q, o 3584 x 3584; k, v 3584 x 512; q/k/v biases 3584 + 512 + 512; gate, up, down 3584 x 18944;
    # two norms 3584 each
    layer = 2 * 12_845_056 + 2 * 1_835_008 + 4_608 + 3 * 67_895_296 + 7_168
    assert layer == 233_057_792 == arch.layer_params()
    params = 28 * layer + 2 * 152_064 * 3_584 + 3_584  # untied embedding and head, the final norm
    assert params == 7_615_616_512 == arch.params()
    e = estimate(Setup(arch, read_sharding(REPO / cfg.accelerate_config), 8, 1, 32_768, True, True, None, False,
                       "H100", 79.6))  # fmt: skip
    assert e.setup.sharding == Sharding("zero3")
    # ZeRO-3: bf16 weights and gradients, fp32 master weights and two moments, all over 8 GPUs
    assert e.weights == pytest.approx(params * 2 / 8 / GIB) == pytest.approx(1.773, abs=1e-3)
    assert e.gradients == pytest.approx(1.773, abs=1e-3)
    assert e.optimizer == pytest.approx(params * 12 / 8 / GIB) == pytest.approx(10.638, abs=1e-3)
    # the largest unit gathered is the embedding (545M > 233M): 8 bytes each
    assert e.gathered == pytest.approx(8 * 544_997_376 / GIB) == pytest.approx(4.061, abs=1e-3)
    # checkpointed: every layer's input (32,768 x 28 x 2 x 3,584 bytes) + one layer's activations
    # (32,768 x 2 x (15 x 3,584 + 3 x 512 + 4 x 18,944) = 32,768 x 262,144 bytes)
    assert e.activations == pytest.approx((6_576_668_672 + 8_589_934_592) / GIB) == pytest.approx(14.125)
    assert e.activations_other == pytest.approx(32_768 * 28 * 262_144 / GIB) == pytest.approx(224.0)
    assert e.logits == pytest.approx(32_768 * 3_584 * 8 / GIB) == pytest.approx(0.875)  # Liger's chunks
    assert e.total == pytest.approx(36.25, abs=0.01) and e.fits
    without_liger = estimate(e.setup.changed(liger=False))  # bf16 logits + fp32 copy + fp32 log-softmax
    assert without_liger.logits == pytest.approx(32_768 * 152_064 * 10 / GIB) == pytest.approx(46.41, abs=0.01)
    assert not without_liger.fits  # 81.8 GiB > 90% of 79.6
    assert suggestion(without_liger.setup, 1).startswith("use_liger_kernel: true (-> 36.2 GiB)")


def test_the_smallest_change_escalates_until_it_fits() -> None:
    arch = Architecture(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256)  # fmt: skip
    ddp = Setup(arch, Sharding("ddp"), 8, 1, 4 * 8192, False, False, None, False, "H100", 79.6)
    e = estimate(ddp)
    assert not e.fits and e.weights == pytest.approx(arch.params() * 2 / GIB)  # DDP: a whole model per GPU
    fix = suggestion(ddp, 4)
    # alone, no change fits (75 GiB of states per GPU under DDP); together, up to sharding the states, and
    # then without the ones the fit does not need (Liger's kernel, here)
    assert fix is not None and fix.startswith("gradient_checkpointing: true and per_device_batch_size: 1 ")
    assert fix.endswith("configs/accelerate/fsdp2.yaml (shard the states) (-> 35.5 GiB)")
    # a LoRA student on one GPU: the frozen base in bf16, adapters with their optimizer
    lora = estimate(ddp.changed(gpus=1, lora_params=50_000_000, checkpointing=True, liger=True, tokens=8192))
    assert lora.weights == pytest.approx((arch.params() * 2 + 50_000_000 * 2) / GIB)
    assert lora.fits


def test_sharding_is_read_from_the_accelerate_config() -> None:
    acc = REPO / "configs" / "accelerate"
    assert read_sharding(acc / "zero3.yaml") == Sharding("zero3")
    assert read_sharding(acc / "fsdp2.yaml") == Sharding("fsdp")
    assert read_sharding(acc / "fsdp2-offload.yaml") == Sharding("fsdp", offload=True)
    assert read_sharding(acc / "fsdp2-offload-multinode.yaml") == Sharding("fsdp", offload=True)
    assert read_sharding(acc / "ddp.yaml") == Sharding("ddp")


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_dry_run_prints_its_memory_and_fits(name: str) -> None:
    r = run_cli("train", f"students/{name}.yaml", "--dry-run", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line.strip() for line in r.stderr.splitlines()]
    assert any(line.startswith("memory per GPU (H100, 79.6 GiB)") for line in lines), r.stderr
    assert any(line.startswith("weights ") and "optimizer" in line for line in lines)
    assert any(line.startswith("activations ") and "gradient checkpointing on" in line for line in lines)
    assert any(": fits (" in line for line in lines), r.stderr
    assert any(line.startswith("data plan: not made:") for line in lines)  # no data or hub here: said, not fatal


def test_a_recipe_that_does_not_fit_names_the_change(tmp_path: Path) -> None:
    recipe = yaml.safe_load((REPO / "students" / "qwen-14b.yaml").read_text())
    recipe["use_liger_kernel"] = False
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = run_cli("train", str(path), "--dry-run", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DOES NOT FIT in 90% of 79.6 GiB" in r.stderr
    assert "smallest change that fits: use_liger_kernel: true (-> 60.8 GiB)" in r.stderr


def test_a_kernel_the_recipe_requires_and_the_machine_lacks_is_one_line(tmp_path: Path) -> None:
    recipe = yaml.safe_load((REPO / "students" / "tiny.yaml").read_text())
    for key, value, said in (("use_liger_kernel", True, "use_liger_kernel is true but there is no GPU"),
                             ("attn_implementation", "flash_attention_2", "needs a GPU with flash-attn")):  # fmt: skip
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({**recipe, key: value}))
        r = run_cli("train", str(path), "--data", "runs/nothing", "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and said in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1


def test_a_dry_run_with_no_network_says_so_in_one_line_without_retrying(tmp_path: Path) -> None:
    # no HF_HUB_OFFLINE: the Hub is simply not there (a refused port), as on a laptop on a train
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    r = run_cli("train", "students/qwen-7b.yaml", "--dry-run", "--data", "runs/none", env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Retry" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert ": fits (" in r.stderr  # the recipe's architecture needs no download
    r = run_cli("train", "students/qwen-7b.yaml", "--dry-run", "--data", "data/demo/chat.jsonl", env=env, timeout=60)
    said = [line for line in r.stderr.splitlines() if "data plan: not made" in line]
    assert len(said) == 1 and "the Hub cannot be reached (offline)" in said[0], r.stderr
    assert "hf download Qwen/Qwen2.5-Math-7B" in said[0] and "Retry" not in r.stderr
