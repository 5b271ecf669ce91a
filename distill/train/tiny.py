"""A tiny Qwen2-architecture model built here from a config, with the project's own tokenizer.

No model hub is reachable on the machines that test this project, so tests and the demo use a model
the project makes: a real `Qwen2ForCausalLM` (the architecture of the Qwen2.5 students), randomly
initialised, saved with `save_pretrained` together with its tokenizer, an R1-style chat template and
a generation config, and loaded back by path with `from_pretrained`, by transformers, TRL and vLLM
alike. Its head size is 32 because vLLM's CPU attention needs at least that.
"""

from __future__ import annotations

from pathlib import Path

from distill.tokenizer import cached_folder, tiny_tokenizer_path, write_folder
from distill.train.templates import TEMPLATES

TINY_MODEL_VERSION = 3


def build_tiny_model(folder: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2, max_len: int = 2048) -> Path:
    """Write a tiny model folder (weights, config, tokenizer, chat template, generation config)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_path())
    tok.chat_template = TEMPLATES["r1-qwen"].jinja
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=hidden // 32,
        max_position_embeddings=max_len,
        # Untied: accelerate's FSDP2 path on CPU (gloo) fails on tied embeddings (a collective size mismatch).
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.95, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return write_folder(folder, save)


def tiny_model_path() -> Path:
    """The tiny model of this machine, built on first use under the distill cache."""
    return cached_folder(f"tiny-qwen2-v{TINY_MODEL_VERSION}", "config.json", build_tiny_model)
