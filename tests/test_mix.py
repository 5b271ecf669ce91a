"""`distill mix`: quotas, seeded reproducibility, rendering, token counts, bad rows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.mix.config import MixConfig
from distill.mix.stage import assistant_text, warnings
from distill.stages import invoke
from distill.tokenizer import count_tokens, load_tokenizer, tiny_tokenizer_path
from tests.conftest import read_rejects, read_rows, run_cli, write_jsonl


def _sources(tmp: Path, reasoning: int = 300, chat: int = 40) -> None:
    write_jsonl(
        tmp / "kept.jsonl",
        [
            {"id": f"p{i // 2}", "sample": i % 2, "problem": f"What is {i} + 1?", "reasoning": f"Add one to {i}.",
             "content": f"The answer is \\boxed{{{i + 1}}}.", "domain": "math" if i % 3 else "science"}
            for i in range(reasoning)
        ],
    )  # fmt: skip
    pq.write_table(
        pa.table({"problem": [f"Write a line about {i}." for i in range(chat)], "content": ["A line."] * chat}),
        tmp / "chat.parquet",
    )


def _mix(tmp: Path, body: str, name: str = "mix.yaml") -> MixConfig:
    (tmp / name).write_text(body)
    return MixConfig.model_validate(__import__("yaml").safe_load(body))


def test_quotas_are_honoured_exactly_and_rows_are_rendered(tmp_path: Path) -> None:
    _sources(tmp_path)
    cfg = _mix(tmp_path, "seed: 1\ntotal: 250\nsources:\n"
                         "  - {name: reasoning, path: kept.jsonl, share: 0.84}\n"
                         "  - {name: chat, path: chat.parquet, quota: 40}\n")  # fmt: skip
    result = invoke("mix", [], tmp_path / "out", cfg, base=tmp_path, rows_per_shard=64, show_progress=False)
    assert warnings(result.manifest.stats["mix"]["sources"]) == []
    rows = read_rows(tmp_path / "out")
    assert Counter(r["source"] for r in rows) == {"reasoning": 210, "chat": 40}
    assert len({r["id"] for r in rows if r["source"] == "reasoning"}) == 210  # no row twice without upsample
    r = next(r for r in rows if r["source"] == "reasoning")
    assert r["messages"][0]["role"] == "user" and r["messages"][1]["role"] == "assistant"
    assert (
        r["messages"][1]["content"].startswith("<think>\nAdd one to ")
        and "</think>\n\nThe answer is" in r["messages"][1]["content"]
    )
    c = next(r for r in rows if r["source"] == "chat")
    assert c["messages"][1]["content"] == "<think>\n\n</think>\n\nA line." and c["domain"] == "general"
    tok = load_tokenizer(None)
    assert [x["num_tokens"] for x in rows[:20]] == count_tokens(
        tok, ["\n".join(m["content"] for m in x["messages"]) for x in rows[:20]]
    )
    stats = result.manifest.stats["mix"]
    assert stats["by_source"] == {"reasoning": 210, "chat": 40}
    assert stats["tokens"]["total"] == sum(x["num_tokens"] for x in rows)
    sources_in_order = [x["source"] for x in rows]
    assert sources_in_order[:40].count("chat") < 40  # shuffled, not source by source


def _shard_digests(out: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("train-*.parquet"))]


def test_same_seed_gives_byte_identical_shards_and_another_seed_does_not(tmp_path: Path) -> None:
    _sources(tmp_path)
    body = (
        "seed: {seed}\nsources:\n  - {{name: r, path: kept.jsonl, quota: 100}}\n"
        "  - {{name: c, path: chat.parquet, quota: 30}}\n"
    )
    digests = []
    for k, seed in enumerate((7, 7, 8)):
        cfg = _mix(tmp_path, body.format(seed=seed))
        invoke("mix", [], tmp_path / f"out{k}", cfg, base=tmp_path, rows_per_shard=50, show_progress=False)
        digests.append(_shard_digests(tmp_path / f"out{k}"))
    assert digests[0] == digests[1] and len(digests[0]) == 3
    assert digests[0] != digests[2]


def test_short_source_takes_all_and_says_so_and_upsample_fills(tmp_path: Path) -> None:
    _sources(tmp_path, chat=10)
    cfg = _mix(tmp_path, "sources:\n  - {name: c, path: chat.parquet, quota: 25}\n")
    said = warnings(
        invoke("mix", [], tmp_path / "a", cfg, base=tmp_path, show_progress=False).manifest.stats["mix"]["sources"]
    )
    assert len(read_rows(tmp_path / "a")) == 10 and "10 rows for a quota of 25; took all of them" in said[0]
    cfg = _mix(tmp_path, "sources:\n  - {name: c, path: chat.parquet, quota: 25, upsample: true}\n")
    result = invoke("mix", [], tmp_path / "b", cfg, base=tmp_path, show_progress=False)
    rows = read_rows(tmp_path / "b")
    assert len(rows) == 25 and len({r["id"] for r in rows}) == 10
    assert "upsample" in warnings(result.manifest.stats["mix"]["sources"])[0]
    assert result.manifest.stats["mix"]["sources"]["c"]["upsampled"] == 15


def test_no_think_mode_messages_rows_and_bad_rows(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {"id": "m1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"id": "m2", "messages": "not a list"},
            "{broken",
            {"problem": "only a question"},
        ],
    )
    cfg = _mix(tmp_path, "non_reasoning: no_think\nsources:\n  - {name: s, path: sft.jsonl, quota: 4}\n")
    invoke("mix", [], tmp_path / "out", cfg, base=tmp_path, show_progress=False)
    [row] = read_rows(tmp_path / "out")
    assert row["id"] == "m1" and row["messages"][1]["content"] == "hello"
    codes = sorted(r["error"].split(":")[0] for r in read_rejects(tmp_path / "out"))
    assert codes == ["malformed_json", "missing_field", "wrong_type"]
    assert assistant_text(None, "Answer.", "no_think") == "Answer."


def test_a_named_tokenizer_folder_and_bad_configs(tmp_path: Path) -> None:
    _sources(tmp_path, reasoning=20, chat=5)
    folder = tiny_tokenizer_path()
    cfg = _mix(tmp_path, f"tokenizer: {folder}\nsources:\n  - {{name: r, path: kept.jsonl, quota: 5}}\n")
    invoke("mix", [], tmp_path / "out", cfg, base=tmp_path, show_progress=False)
    assert all(r["num_tokens"] > 0 for r in read_rows(tmp_path / "out"))
    (tmp_path / "bad.yaml").write_text("sources:\n  - {name: r, path: kept.jsonl, share: 0.5}\n")
    r = run_cli("mix", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "set `total`" in r.stderr
    (tmp_path / "bad.yaml").write_text(
        "tokenizer: no/such-tokenizer\nsources:\n  - {name: r, path: kept.jsonl, quota: 1}\n"
    )
    r = run_cli("mix", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o3"))
    assert r.returncode == 2 and "tokenizer 'no/such-tokenizer': not in this machine's Hub cache" in r.stderr
    assert "leave `tokenizer` out" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_mix_resumes_after_a_kill(tmp_path: Path) -> None:
    import signal

    _sources(tmp_path)
    (tmp_path / "mix.yaml").write_text(
        "seed: 5\nsources:\n  - {name: r, path: kept.jsonl, quota: 200}\n  - {name: c, path: chat.parquet, quota: 40}\n"
    )
    args = ["mix", "--config", str(tmp_path / "mix.yaml"), "--rows-per-shard", "30", "--no-progress"]
    assert run_cli(*args, "--out", str(tmp_path / "ref")).returncode == 0
    r = run_cli(*args, "--out", str(tmp_path / "run"), env={"DISTILL_CRASH_AT": "manifest_renamed:4"})
    assert r.returncode == -signal.SIGKILL
    r = run_cli(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert _shard_digests(tmp_path / "run") == _shard_digests(tmp_path / "ref")
    assert "r                           200 of quota        200" in r.stderr


def test_a_kill_while_rendering_resumes_from_the_chunks_already_rendered(tmp_path: Path) -> None:
    import signal

    for k in range(4):  # four files: four chunks to render
        write_jsonl(tmp_path / f"part-{k}.jsonl", [
            {"id": f"p{k}-{i}", "problem": f"What is {i} + {k}?", "reasoning": f"Add {k}.", "content": f"{i + k}"}
            for i in range(25)
        ])  # fmt: skip
    (tmp_path / "mix.yaml").write_text("seed: 2\nsources:\n  - {name: r, path: 'part-*.jsonl', quota: 90}\n")
    args = ["mix", "--config", str(tmp_path / "mix.yaml"), "--rows-per-shard", "40", "--no-progress", "--workers", "1"]
    assert run_cli(*args, "--out", str(tmp_path / "ref")).returncode == 0
    r = run_cli(*args, "--out", str(tmp_path / "run"), env={"DISTILL_CRASH_AT": "mix_chunk_rendered:2"})
    assert r.returncode == -signal.SIGKILL
    r = run_cli(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert (
        _shard_digests(tmp_path / "run") == _shard_digests(tmp_path / "ref")
        and len(_shard_digests(tmp_path / "ref")) == 3
    )
    manifest = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    assert manifest["stats"]["mix"]["render"] == {"chunks": 4, "resumed": 2}


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs" / "mix").glob("*.yaml")))
def test_shipped_mix_configs_are_valid(path: Path) -> None:
    from distill.config import load_config

    load_config(path, MixConfig)
    json.dumps(load_config(path, MixConfig).model_dump())
