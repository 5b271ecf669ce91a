"""`distill publish DIR --repo-id ORG/NAME [--dry-run]`: a dataset directory to a Hub dataset repo.

What is uploaded: the shards, the card (`README.md`, written first if missing), its histogram and the
manifest; never `_rejects/`, `_removed/`, work folders or the lock. The exact folder is staged first
(`DIR/.publish/`, hard links) and validated: `datasets.load_dataset` reads it with the card's
configuration and with plain `data_dir`, the row count is the manifest's, and the card's metadata
parses. `--dry-run` stops there and prints what would be sent.

A re-publish compares every file with the repo's copy (LFS SHA-256 for large files, the git blob hash
for small ones) and commits only what differs: publishing the same data again uploads nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.card import HISTOGRAM, write_card
from distill.errors import UserError
from distill.store import MANIFEST, DatasetReader, sha256_file

STAGING = ".publish"


@dataclass
class UploadPlan:
    add: list[str] = field(default_factory=list)  # new or changed files
    delete: list[str] = field(default_factory=list)  # in the repo, no longer in the data
    unchanged: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.add and not self.delete


def git_blob_sha1(path: Path) -> str:
    """The id git (and the Hub) gives a small file: SHA-1 of "blob <size>\\0" + content."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


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


def local_files(staging: Path) -> dict[str, tuple[str, str]]:
    """path -> (sha256, git blob sha1) of every file to upload."""
    return {p.name: (sha256_file(p), git_blob_sha1(p)) for p in sorted(staging.iterdir()) if p.is_file()}


def plan_upload(local: dict[str, tuple[str, str]], remote: dict[str, str]) -> UploadPlan:
    """`remote`: path -> the repo's LFS sha256 or git blob sha1 of that file."""
    plan = UploadPlan()
    for path, (sha256, blob) in local.items():
        (plan.unchanged if remote.get(path) in (sha256, blob) else plan.add).append(path)
    plan.delete = sorted(p for p in remote if p not in local and p.endswith(".parquet"))
    return plan


def remote_files(api: Any, repo_id: str) -> dict[str, str]:
    out = {}
    for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True):
        lfs = getattr(entry, "lfs", None)
        blob = getattr(entry, "blob_id", None)
        if lfs is not None or blob is not None:
            out[entry.path] = lfs.sha256 if lfs is not None else blob
    return out


def publish(root: Path, repo_id: str, *, dry_run: bool, private: bool = False) -> tuple[Path, UploadPlan]:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo-id {repo_id!r}: write it as ORG/NAME")
    reader = DatasetReader(root)
    staging = stage(root)
    validate(staging, reader.num_rows)
    local = local_files(staging)
    if dry_run:
        return staging, plan_upload(local, {})
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise UserError("HF_TOKEN is not set; export a Hub token with write access, or use --dry-run")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    plan = plan_upload(local, remote_files(api, repo_id))
    if plan.empty:
        return staging, plan
    operations: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(staging / p)) for p in plan.add]
    operations += [CommitOperationDelete(path_in_repo=p) for p in plan.delete]
    api.create_commit(
        repo_id,
        repo_type="dataset",
        operations=operations,
        commit_message=f"distill publish: {reader.num_rows:,} rows ({len(plan.add)} files changed)",
    )
    return staging, plan
