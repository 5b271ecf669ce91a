"""Student training on the tiny Qwen2 model: templates, loss mask, packing, FSDP on CPU, resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distill.config import load_config
from distill.train.config import StudentConfig
from distill.train.data import expected_padded_tokens, prepare_tokenizer
from distill.train.templates import TEMPLATES, get_template, render
from tests.conftest import REPO, run_cli, write_jsonl

CONV = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is \\boxed{4}."},
]
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\ngreet\n</think>\n\nHello!"},
    *CONV,
]


# --- templates ------------------------------------------------------------------------------------------


def test_r1_template_matches_the_distill_format_and_trains_only_the_last_turn() -> None:
    text, spans = render("r1-qwen", MULTI)
    assert text == (
        "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>\n\nHello!<｜end▁of▁sentence｜>"
        "<｜User｜>What is 2+2?<｜Assistant｜><think>\n2 plus 2 is 4.\n</think>\n\nThe answer is \\boxed{4}."
        "<｜end▁of▁sentence｜>"
    )
    # the earlier turn lost its reasoning (as the official template does); the last keeps it
    assert [text[a:b] for a, b in spans] == [
        "2 plus 2 is 4.\n</think>\n\nThe answer is \\boxed{4}.<｜end▁of▁sentence｜>"
    ]
    prompt, none = render("r1-llama", CONV[:1], add_generation_prompt=True)
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n" and none == []


def test_chatml_and_llama3_templates_match_their_official_formats() -> None:
    text, spans = render("chatml", CONV)
    assert text == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is \\boxed{4}.<|im_end|>\n"
    )
    assert text[spans[0][0] : spans[0][1]].endswith("\\boxed{4}.<|im_end|>")
    text, spans = render("llama3", CONV)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n2 plus 2 is 4.\n</think>\n\n"
        "The answer is \\boxed{4}.<|eot_id|>"
    )
    assert render("chatml", CONV[:1], add_generation_prompt=True)[0].endswith("<|im_start|>assistant\n")
    multi, _ = render("llama3", MULTI)
    assert "greet" not in multi and "Hello!" in multi  # earlier turns keep only their answers


def test_render_chat_prints_the_exact_text(tmp_path: Path) -> None:
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps(CONV))
    r = run_cli("render-chat", "--template", "r1-qwen", "--messages", str(conv))
    assert r.returncode == 0 and r.stdout == render("r1-qwen", CONV)[0] + "\n"
    bad = run_cli("render-chat", "--template", "r1-qwn", "--messages", str(conv))
    assert bad.returncode == 2 and "did you mean 'r1-qwen'" in bad.stderr


def test_loss_mask_is_exactly_the_assistant_span() -> None:
    from transformers import AutoTokenizer

    from distill.train.tiny import tiny_model_path

    tok = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_tokenizer(tok, get_template("r1-qwen"))
    out = tok.apply_chat_template([MULTI], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    learned = [t for t, m in zip(ids, mask, strict=True) if m]
    first = mask.index(1)
    assert all(mask[first:]) and not any(mask[:first])  # one span, at the end
    assert tok.decode(learned) == "2 plus 2 is 4.\n</think>\n\nThe answer is \\boxed{4}.<｜end▁of▁sentence｜>"
    assert learned[-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<｜end▁of▁sentence｜>")
    assert tok.decode(ids[:first]).endswith("<｜Assistant｜><think>\n")


def test_packed_and_unpacked_batches_give_the_same_per_token_loss() -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from distill.train.attention import register
    from distill.train.tiny import tiny_model_path

    tok = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_tokenizer(tok, get_template("r1-qwen"))
    convs = [
        [{"role": "user", "content": f"Compute {i} + {3 * i}."},
         {"role": "assistant", "content": f"<think>\nadd {i}" + " ok" * i + f"\n</think>\n\n\\boxed{{{4 * i}}}"}]
        for i in (1, 5, 9)
    ]  # fmt: skip
    enc = tok.apply_chat_template(convs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    rows = [
        {"input_ids": i, "labels": [t if k else -100 for t, k in zip(i, m, strict=True)]}
        for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)
    ]
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    # TRL's own BFD packing and padding-free collator, as training uses them: one bin, one sequence
    bins = pack_dataset(Dataset.from_list(rows), seq_length=512, strategy="bfd")
    assert len(bins) == 1 and sorted(bins[0]["seq_lengths"]) == sorted(len(r["input_ids"]) for r in rows)
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(list(bins))
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed

    def per_token(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
        labels = batch["labels"][:, 1:].reshape(-1)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="none")
        return loss[labels != -100].sort().values  # BFD puts the longest row first: compare as multisets

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path()).eval()
    segmented = AutoModelForCausalLM.from_pretrained(tiny_model_path(), attn_implementation=register()).eval()
    a, b = per_token(plain, padded), per_token(segmented, packed)
    assert a.shape == b.shape and a.numel() > 50
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # The same packed batch on plain sdpa lets the rows see each other:
    assert (per_token(plain, packed) - a).abs().max() > 1e-2


# --- training ---------------------------------------------------------------------------------------------


def _sft_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 10 + i % 80, 3 + i % 7
        think = f"We need {a} + {b}. ones: {a % 10} + {b} = {a % 10 + b}. So the result is {a + b}."
        rows.append({"id": f"r{i}", "messages": [
            {"role": "user", "content": f"Compute ${a} + {b}$."},
            {"role": "assistant", "content": f"<think>\n{think}\n</think>\n\nThe answer is $\\boxed{{{a + b}}}$."},
        ]})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("sft") / "sft.jsonl", _sft_rows(160))


def student(tmp_path: Path, **overrides) -> Path:
    doc = yaml.safe_load((REPO / "students" / "tiny.yaml").read_text())
    doc.update({"max_length": 512, "save_steps": 5, "logging_steps": 2, **overrides})
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_training_lowers_the_loss_and_saves_a_servable_checkpoint(tmp_path: Path, sft_data: Path) -> None:
    r = run_cli("train", str(student(tmp_path)), "--data", str(sft_data), "--out", str(tmp_path / "o"),
                "--max-steps", "30")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "o" / "distill_train.json").read_text())
    losses = summary["loss_history"]
    assert len(losses) >= 10 and losses[-1] < 0.5 * losses[0], losses
    assert "steps per epoch" in r.stderr and "preflight passed" in r.stderr
    cfg = json.loads((tmp_path / "o" / "generation_config.json").read_text())
    assert (cfg["temperature"], cfg["top_p"]) == (0.6, 0.95)


def test_a_recipe_passes_any_sftconfig_field_and_a_typo_is_one_line(tmp_path: Path, sft_data: Path) -> None:
    # open-r1's schedule: cosine down to a floor (min_lr_rate), through TRL's lr_scheduler_kwargs
    recipe = student(tmp_path, lr_scheduler="cosine_with_min_lr", logging_steps=1,
                     sft_args={"lr_scheduler_kwargs": {"min_lr_rate": 0.5}, "optim": "adamw_torch"})  # fmt: skip
    r = run_cli("train", str(recipe), "--data", str(sft_data), "--out", str(tmp_path / "o"), "--max-steps", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "o" / "distill_train.json").read_text())
    lr, history = summary["student"]["learning_rate"], summary["learning_rate_history"]
    assert len(history) == 6 and min(history[1:]) >= 0.5 * lr * 0.999, history  # after warm-up; cosine: to ~0
    for bad, said in (
        ({"lr_scheduler_kwarg": {}}, "sft_args.lr_scheduler_kwarg: not a field of TRL's SFTConfig; did you mean "
                                     "'lr_scheduler_kwargs'?"),
        ({"learning_rate": 1e-3}, "sft_args.learning_rate: the recipe sets it (learning_rate); set it there instead"),
    ):  # fmt: skip
        r = run_cli("train", str(student(tmp_path, sft_args=bad)), "--data", str(sft_data), "--out",
                    str(tmp_path / "x"), "--launch", "--dry-run")  # fmt: skip
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_two_process_fsdp_run_through_accelerate_really_shards(tmp_path: Path, sft_data: Path) -> None:
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / "fsdp2-cpu.yaml"), "--num_processes", "2", "--main_process_port", "0",
           "-m", "distill.cli", "train", str(student(tmp_path)), "--data", str(sft_data), "--out", str(out),
           "--max-steps", "6"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "distill_train.json").read_text())
    sharding = summary["sharding"]
    assert sharding["num_processes"] == 2 and sharding["wrapper"].startswith("FSDP")
    assert sharding["dtensor_params"] == sharding["params"] > 0  # every parameter is a shard, not a DDP replica
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Compute $12 + 5$."}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    gen = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


def test_a_pipeline_train_step_launches_with_the_recipes_processes(tmp_path: Path, sft_data: Path) -> None:
    recipe = student(tmp_path)  # tiny: 2 processes, configs/accelerate/fsdp2-cpu.yaml
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"name: t\nout: {tmp_path / 'run'}\nsteps:\n  - {{name: s, stage: train, input: {sft_data}, "
                    f"options: {{student: {recipe}, launch: true, max_steps: 4, seed: 3}}}}\n")  # fmt: skip
    r = run_cli("run", str(pipe), "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accelerate.commands.launch --config_file configs/accelerate/fsdp2-cpu.yaml --num_processes 2" in r.stderr
    summary = json.loads((tmp_path / "run" / "s" / "distill_train.json").read_text())
    assert summary["sharding"]["num_processes"] == 2 and summary["sharding"]["wrapper"].startswith("FSDP")
    assert summary["global_step"] == 4 and summary["student"]["seed"] == 3  # the step's overrides reached it
    r = run_cli("run", str(pipe), "--no-progress")
    assert r.returncode == 0 and "(already done, skipped)" in r.stderr and "accelerate" not in r.stderr, r.stderr


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, sft_data: Path) -> None:
    out = tmp_path / "o"
    args = ["train", str(student(tmp_path, save_steps=4)), "--data", str(sft_data), "--out", str(out),
            "--max-steps", "40"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "checkpoint-8" / "trainer_state.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/trainer_state.json"))
    assert saved and max(saved) >= 8 and not (out / "distill_train.json").exists()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "distill_train.json").read_text())
    assert summary["resumed_from"] and Path(summary["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(summary["resumed_from"]).name.split("-")[1]) == max(saved) and summary["global_step"] == 40
    # another recipe (here: fewer steps) never resumes these checkpoints: refused, or afresh with --overwrite
    other = [*args[:-1], "12"]
    r = run_cli(*other)
    assert r.returncode == 2 and "holds checkpoints of another recipe" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*other, "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "distill_train.json").read_text())
    assert summary["resumed_from"] is None and summary["global_step"] == 12


# --- preflight and recipes ----------------------------------------------------------------------------------


def test_preflight_fails_loudly_before_training(tmp_path: Path) -> None:
    no_think = [{"id": "x1", "messages": [{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello there."}]}]  # fmt: skip
    data = write_jsonl(tmp_path / "bad.jsonl", no_think * 3)
    r = run_cli("train", str(student(tmp_path)), "--data", str(data), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no </think>" in r.stderr and "id x1" in r.stderr, r.stderr[-2000:]
    long = write_jsonl(tmp_path / "long.jsonl", _sft_rows(3))
    r = run_cli("train", str(student(tmp_path, max_length=20, long_rows="error")), "--data", str(long),
                "--out", str(tmp_path / "o2"))  # fmt: skip
    assert r.returncode == 2 and "longer than max_length 20" in r.stderr


def test_long_rows_are_dropped_and_counted_in_the_plan(tmp_path: Path) -> None:
    rows = _sft_rows(20)
    rows[3]["messages"][1]["content"] = "<think>\n" + "very long reasoning " * 200 + "\n</think>\n\n\\boxed{1}"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    r = run_cli("train", str(student(tmp_path, max_length=256)), "--data", str(data), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rows 19 (1 longer than max_length dropped)" in r.stderr
    assert "padded batches of" in r.stderr and "% padding (" in r.stderr


def test_expected_padding_matches_every_batch_counted_out() -> None:
    lengths = np.array([5, 90, 12, 12, 40, 7, 300, 1, 64])
    for batch in (1, 3, 4, 9, 20):
        b = min(batch, len(lengths))
        batches = list(itertools.combinations(lengths.tolist(), b))
        brute = len(lengths) * sum(max(c) for c in batches) / len(batches)
        assert expected_padded_tokens(lengths, batch) == round(brute)
    assert expected_padded_tokens(np.array([], np.int64), 4) == 0


def test_student_recipes_load_and_name_their_sources() -> None:
    recipes = sorted((REPO / "students").glob("*.yaml"))
    names = {p.stem for p in recipes}
    assert {"tiny", "qwen-1.5b", "qwen-7b", "qwen-14b", "qwen-32b", "llama-8b", "llama-70b"} <= names
    for path in recipes:
        cfg = load_config(path, StudentConfig)
        assert cfg.template in TEMPLATES and (REPO / cfg.accelerate_config).exists(), path
        if path.stem != "tiny":
            assert {"learning_rate", "epochs", "max_length", "architecture"} <= set(cfg.sources), path
            # the shapes copied from the base's config.json add up to the model's published size
            assert cfg.architecture and cfg.params_b, path
            assert abs(cfg.architecture.params() / 1e9 - cfg.params_b) / cfg.params_b < 0.01, path
    assert os.path.exists(REPO / "configs" / "accelerate" / "zero3.yaml")


def test_lora_student_and_a_template_whose_markers_the_tokenizer_lacks(tmp_path: Path, sft_data: Path) -> None:
    cfg = student(tmp_path, template="chatml", lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    out = tmp_path / "o"
    r = run_cli("train", str(cfg), "--data", str(sft_data), "--out", str(out), "--max-steps", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "added the template's markers to the tokenizer: ['<|im_start|>', '<|im_end|>']" in r.stderr
    assert (out / "adapter_config.json").exists()  # a LoRA adapter, not a full copy of the model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.get_vocab()
