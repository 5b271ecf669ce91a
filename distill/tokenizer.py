"""Tokenizers by name or path, and the project's own tiny tokenizer for machines with no model hub.

`load_tokenizer(None)` gives a byte-level BPE tokenizer trained here, deterministically, on text the
project generates (English words, digits, LaTeX, the R1 chat markers), saved as a Hugging Face
tokenizer folder and loaded back with `AutoTokenizer.from_pretrained(folder)`: the same code path a
Qwen2.5 or Llama tokenizer takes. It is built once per machine, under `$DISTILL_CACHE` (default
`~/.cache/distill`), and lives at a versioned path so a change of recipe makes a new one.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.hub_offline import from_pretrained
from distill.store import atomic_write_bytes

TINY_VERSION = 1
TINY_VOCAB = 4096
SPECIAL = ["<|endoftext|>", "<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]
_WORDS = """
the of and to in is that it for as with was on be by this are we can from at which so have not all
one there if when will an would what more also two into then other these than first each because
only number value sum term equation solution gives let now check case both side factor product
divide remainder integer positive negative square root prime odd even multiply add subtract compute
note hence thus wait maybe actually right correct consider given find know need show use try step
answer final boxed frac sqrt pi triangle circle angle area length probability expected random choose
function derivative integral limit def return print input range list for while if else import class
self true false none
""".split()  # noqa: SIM905 - a word list reads best as text


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))


def _corpus(lines: int = 20_000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 25))]
        if rng.random() < 0.5:
            words.append(
                f"${rng.randint(0, 999)} + \\frac{{{rng.randint(1, 9)}}}{{{rng.randint(2, 9)}}}"
                f" = x^{rng.randint(2, 5)}$"
            )
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":", "\n"]))
    return out


def build_tiny_tokenizer(folder: Path) -> Path:
    """Train the tiny tokenizer into `folder` (a Hugging Face tokenizer folder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return write_folder(folder, fast.save_pretrained)


def write_folder(folder: Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` then rename tmp to `folder`: whole or absent, even with two processes building at once."""
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def cached_folder(name: str, marker: str, build: Callable[[Path], Path]) -> Path:
    """`cache_dir()/name`, built by `build(folder)` the first time (when `marker` is not in it yet)."""
    folder = cache_dir() / name
    if not (folder / marker).exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        build(folder)
    return folder


def tiny_tokenizer_path() -> Path:
    return cached_folder(f"tiny-tokenizer-v{TINY_VERSION}", "tokenizer.json", build_tiny_tokenizer)


@cache
def load_tokenizer(name_or_path: str | None) -> Any:
    """A fast tokenizer: a local folder, a Hub name, or (None) the project's tiny tokenizer."""
    from transformers import AutoTokenizer

    target = str(tiny_tokenizer_path()) if name_or_path is None else name_or_path
    try:
        tok = from_pretrained(AutoTokenizer.from_pretrained, target, "tokenizer", use_fast=True)
    except UserError as e:
        raise UserError(f"{e}; or leave `tokenizer` out for the project's tiny tokenizer") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer {name_or_path!r}: is not a fast (Rust) tokenizer; counting tokens would be slow")
    return tok


def save_counter(tokenizer: Any, path: Path) -> Path:
    """Write the loaded tokenizer's Rust pipeline (normalizer, pre-tokenizer, model: all that counting
    uses) as one `tokenizer.json`, for `load_counter` in worker processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, tokenizer.backend_tokenizer.to_str().encode())
    return path


def load_counter(path: str) -> Any:
    """The Rust tokenizer saved by `save_counter`, for `count_tokens`. Workers load this instead of
    `AutoTokenizer`: importing transformers and building the tokenizer costs seconds per process, longer
    than the worker's share of counting in a mix of 1M short rows."""
    st = os.stat(path)  # in the key: a later run may save another tokenizer at the same path
    return _load_counter(path, st.st_mtime_ns, st.st_size)


@cache
def _load_counter(path: str, mtime_ns: int, size: int) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


COUNT_BATCH_CHARS = 4 << 20  # ~1M tokens: the batch's Encodings (ids, token strings) stay ~100 MB


def count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of many texts, in batched calls; `tokenizer` is a transformers fast tokenizer or
    the Rust `tokenizers.Tokenizer` under it.

    Straight to the Rust tokenizer (parallel over the batch; `encode_batch_fast` skips the character
    offsets): going through `tokenizer(texts)` spends as long again turning each encoding into Python lists.
    Batches are cut by size, so 10K R1 traces of 20 KB are not held as Encodings all at once.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts: list[int] = []
    start = 0
    while start < len(texts):
        stop, size = start, 0
        while stop < len(texts) and (stop == start or size + len(texts[stop]) <= COUNT_BATCH_CHARS):
            size += len(texts[stop])
            stop += 1
        counts.extend(len(e) for e in encode(texts[start:stop], add_special_tokens=False))
        start = stop
    return counts
