"""`distill publish DIR --repo-id ORG/NAME [--dry-run]`: a dataset directory to a Hub dataset repo.

What is uploaded: the shards, the card (`README.md`, written first if missing), its histogram and the
manifest; never `_rejects/`, `_removed/`, work folders or the lock. The exact folder is staged first
(`DIR/.publish/`, hard links) and validated: `datasets.load_dataset` reads it with the card's
configuration and with plain `data_dir`, the row count is the manifest's, and the card's metadata
parses. `--dry-run` stops there and prints what would be sent.

The upload is one `create_commit` through `upload_folder`: the Hub client itself leaves out files
whose content the repo already holds (and makes no commit when nothing changed; huggingface_hub#2389),
never re-sends a stored LFS object, and deletes the repo's shards the data no longer has
(`delete_patterns`). The token is the Hub client's: HF_TOKEN, else the one `hf auth login` saved.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from distill.card import HISTOGRAM, write_card
from distill.errors import UserError
from distill.store import MANIFEST, DatasetReader

STAGING = ".publish"


@dataclass
class Published:
    staging: Path
    files: list[str]  # what the staged folder holds: sent unless the repo already has the same content
    url: str | None = None  # the commit, after an upload


def stage(root: Path) -> Path:
    """The exact folder that would be uploaded, as hard links into DIR/.publish/."""
    reader = DatasetReader(root)
    if not (root / "README.md").exists():
        write_card(root)
    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    names = [p.name for p in reader.files] + ["README.md", MANIFEST]
    if (root / HISTOGRAM).exists():
        names.append(HISTOGRAM)
    for name in names:
        os.link(root / name, staging / name)
    return staging


def validate(staging: Path, rows: int) -> None:
    """What a user of the repo will do must work: load it both ways, parse the card."""
    import datasets
    from huggingface_hub import DatasetCard

    datasets.disable_progress_bars()
    card = DatasetCard.load(staging / "README.md")
    if not card.data.to_dict().get("configs"):
        raise UserError(f"{staging}/README.md: the card's metadata has no `configs`; rerun `distill card`")
    cache = staging.parent / ".publish-cache"
    try:
        for loaded in (
            datasets.load_dataset("parquet", data_dir=str(staging), split="train", cache_dir=str(cache)),
            datasets.load_dataset(str(staging), split="train", cache_dir=str(cache)),
        ):
            if loaded.num_rows != rows:
                raise UserError(f"{staging}: datasets loads {loaded.num_rows} rows, the manifest says {rows}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def publish(root: Path, repo_id: str, *, dry_run: bool, private: bool = False) -> Published:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo-id {repo_id!r}: write it as ORG/NAME")
    reader = DatasetReader(root)
    staging = stage(root)
    validate(staging, reader.num_rows)
    done = Published(staging, sorted(p.name for p in staging.iterdir() if p.is_file()))
    if dry_run:
        return done
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise UserError("no Hub token: run `hf auth login` or export HF_TOKEN (write access), or use --dry-run")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=staging, delete_patterns=["*.parquet"],
            commit_message=f"distill publish: {reader.num_rows:,} rows",
        )  # fmt: skip
    except OSError as e:  # HTTP errors, an unreachable Hub, offline mode: all OSErrors in huggingface_hub
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"publish {repo_id}: {type(e).__name__}: {first}; check the token's access and the "
                        "network, then run it again (files the repo holds are not sent twice)") from None  # fmt: skip
    return Published(staging, done.files, commit.commit_url)
