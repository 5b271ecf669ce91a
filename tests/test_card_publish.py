"""`distill card` and `distill publish`: the card's numbers are the data's; the dry-run folder loads; the
token is found where the Hub client looks, and a failed upload is one line (no test reaches a network: that
a re-publish sends only changed files is huggingface_hub's create_commit, not code of ours)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from distill.mix.config import MixConfig
from distill.stages import invoke
from tests.conftest import read_rows, run_cli, write_jsonl


@pytest.fixture
def sft_dir(tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "kept.jsonl",
        [{"id": f"p{i}", "sample": 0, "problem": f"What is {i} + 1?", "reasoning": "Add one." * (1 + i % 7),
          "content": f"\\boxed{{{i + 1}}}", "domain": "math" if i % 4 else "science"} for i in range(120)],
    )  # fmt: skip
    write_jsonl(tmp_path / "chat.jsonl", [{"problem": f"Say hi {i}.", "content": "Hi."} for i in range(30)])
    cfg = MixConfig.model_validate(
        {"seed": 2, "sources": [{"name": "r", "path": "kept.jsonl", "quota": 100},
                                {"name": "c", "path": "chat.jsonl", "quota": 30}]}
    )  # fmt: skip
    invoke("mix", [], tmp_path / "sft", cfg, base=tmp_path, rows_per_shard=40, show_progress=False)
    return tmp_path / "sft"


def test_card_numbers_equal_the_data(sft_dir: Path) -> None:
    from huggingface_hub import DatasetCard

    r = run_cli("card", str(sft_dir), "--license", "apache-2.0")
    assert r.returncode == 0, r.stderr
    rows = read_rows(sft_dir)
    card = DatasetCard.load(sft_dir / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "apache-2.0" and meta["configs"][0]["data_files"][0]["path"] == "train-*.parquet"
    assert meta["dataset_info"]["splits"][0]["num_examples"] == len(rows) == 130
    assert [f["name"] for f in meta["dataset_info"]["features"]] == ["id", "source", "domain", "messages", "num_tokens"]
    for domain, n in Counter(r["domain"] for r in rows).items():
        assert f"| {domain} | {n:,} |" in card.text
    assert f"{sum(r['num_tokens'] for r in rows):,} tokens in all" in card.text
    assert "| r | 100 | 100 | 120 |" in card.text and "| c | 30 | 30 | 30 |" in card.text
    assert (sft_dir / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert "distill mix" in card.text or "| mix |" in card.text  # the rebuild table lists the stage


def test_dry_run_folder_loads_with_datasets_and_excludes_side_files(sft_dir: Path, tmp_path: Path) -> None:
    import datasets

    r = run_cli("publish", str(sft_dir), "--repo-id", "org/demo", "--dry-run")
    assert r.returncode == 0, r.stderr
    staging = sft_dir / ".publish"
    names = sorted(p.name for p in staging.iterdir())
    assert names == ["README.md", "_manifest.json", "token_lengths.png", "train-00000.parquet",
                     "train-00001.parquet", "train-00002.parquet", "train-00003.parquet"]  # fmt: skip
    assert "would upload  train-00000.parquet" in r.stderr
    loaded = datasets.load_dataset(str(staging), split="train", cache_dir=str(tmp_path / "c"))
    assert loaded.num_rows == 130 and loaded.column_names == ["id", "source", "domain", "messages", "num_tokens"]


def test_publish_finds_the_token_as_the_hub_client_does_and_says_what_failed(sft_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "hf"
    env = {"HF_TOKEN": "", "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    r = run_cli("publish", str(sft_dir), "--repo-id", "org/demo", env=env)
    assert r.returncode == 2 and "no Hub token: run `hf auth login` or export HF_TOKEN" in r.stderr, r.stderr
    home.mkdir()
    (home / "token").write_text("hf_saved_by_hf_auth_login")  # where `hf auth login` keeps it
    r = run_cli("publish", str(sft_dir), "--repo-id", "org/demo", env=env)  # offline: the upload cannot go
    assert r.returncode == 2 and "no Hub token" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: publish org/demo: OfflineModeIsEnabled"), r.stderr
    r = run_cli("publish", str(sft_dir), "--repo-id", "no-slash", "--dry-run")
    assert r.returncode == 2 and "ORG/NAME" in r.stderr


def _chain(tmp: Path) -> Path:
    """verdicts -> select -> mix, each command run from `tmp` with relative paths (as a user types them)."""
    rows = [{"id": f"p{i}", "problem": f"What is {i} + 1?", "sample": 0, "reasoning": "Add one.", "domain": "math",
             "content": f"\\boxed{{{i + 1}}}", "keep": True} for i in range(20)]  # fmt: skip
    write_jsonl(tmp / "verdicts.jsonl", rows)
    r = run_cli("select", "--input", "verdicts.jsonl", "--out", "kept", "--per-prompt", "1", "--no-progress", cwd=tmp)
    assert r.returncode == 0, r.stderr
    (tmp / "mix.yaml").write_text("seed: 0\nsources:\n  - {name: reasoning, path: kept, quota: 100}\n")
    r = run_cli("mix", "--config", "mix.yaml", "--out", "sft", "--no-progress", cwd=tmp)
    assert r.returncode == 0, r.stderr
    return tmp / "sft"


def test_the_card_is_the_same_from_any_working_directory(tmp_path: Path) -> None:
    sft = _chain(tmp_path)
    assert run_cli("card", "sft", cwd=tmp_path).returncode == 0
    here = (sft / "README.md").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("card", str(sft), cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (sft / "README.md").read_text() == here
    assert "| select |" in here  # the provenance of the chain is found from the manifests, not the cwd
    assert str(tmp_path) not in here  # no path of this machine in a card meant for the Hub


def test_a_wheel_carries_the_card_template_and_a_plain_install_writes_cards(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    from tests.conftest import REPO

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "wheel")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    [wheel] = (tmp_path / "wheel").glob("distill-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "distill/data/card_template.md" in z.namelist()
        z.extractall(tmp_path / "site")  # a wheel installed is its files unpacked into site-packages
    sft = _chain(tmp_path / "data")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import distill; print(distill.__file__)"], capture_output=True,
                           text=True, env={**__import__("os").environ, **env}, cwd=tmp_path)  # fmt: skip
    assert where.stdout.startswith(str(tmp_path / "site"))  # the unpacked wheel, not this checkout
    r = run_cli("card", str(sft), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (sft / "README.md").read_text().startswith("---")
