"""The dataset directories `distill view` may show, and the only way a request reaches a file.

A request names a dataset by its key (`demo/verdicts`: the given directory's name, then the path below it)
and never by a file path. Keys are checked against the directories found at start-up, and every file the
server opens is resolved (symlinks followed) and must lie inside its dataset directory: `..`, absolute paths
and symlinks that lead out are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from distill.errors import UserError
from distill.store import MANIFEST, Manifest, read_manifest

KEPT = "kept"  # the reason of a row the stage kept (its output rows without a reject_reason)
MAX_DEPTH = 4  # runs/<pipeline>/<step>/<part>: deep enough for every layout the stages write


class Refused(Exception):
    """A request for something outside the given directories (answered 403)."""


@dataclass
class Dataset:
    key: str
    path: Path  # resolved
    manifest: Manifest
    inputs: list[str] = field(default_factory=list)  # keys of the datasets it read (found among the given)
    readers: list[str] = field(default_factory=list)  # keys of the datasets that read it
    files: list[str] = field(default_factory=list)  # inputs that are not datasets shown here (as recorded)

    def file(self, name: str) -> Path:
        """A file the manifest names, confined to this directory."""
        return confine(self.path, name)


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(root: Path, relative: str) -> Path:
    """`root/relative`, refused when it is absolute, climbs with `..` or resolves (symlinks) outside root."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or "\\" in relative or "\x00" in relative:
        raise Refused(f"{relative!r} is not a path inside the directory")
    path = (root / rel).resolve()
    if not inside(path, root):
        raise Refused(f"{relative!r} leads outside the directory")
    return path


def _walk(root: Path) -> list[Path]:
    """Dataset directories at or below root, not following symlinks, skipping hidden and side folders."""
    found = []
    for here, dirs, files in os.walk(root, followlinks=False):
        depth = len(Path(here).relative_to(root).parts)
        if MANIFEST in files:
            found.append(Path(here))
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and depth < MAX_DEPTH)
    return found


class Catalog:
    """The datasets under the directories given on the command line, by key, linked to each other."""

    def __init__(self, dirs: list[Path]) -> None:
        self.roots: dict[str, Path] = {}
        self.datasets: dict[str, Dataset] = {}
        for given in dirs:
            if not Path(given).is_dir():
                raise UserError(f"{given}: no such directory; give the --out of a stage, or a run folder above it")
            root = Path(given).resolve()
            label = root.name or "root"
            n = 2
            while label in self.roots:  # two runs/demo from different places
                label, n = f"{root.name}-{n}", n + 1
            self.roots[label] = root
            for path in _walk(root):
                manifest = read_manifest(path)
                if manifest is None:
                    continue  # a torn or foreign _manifest.json: nothing to show
                rel = path.relative_to(root).as_posix()
                key = label if rel == "." else f"{label}/{rel}"
                self.datasets[key] = Dataset(key, path, manifest)
            if not any(inside(d.path, root) for d in self.datasets.values()):
                raise UserError(
                    f"{given}: no dataset directory in it (none holds a {MANIFEST}); give the --out of a stage"
                )
        self._link()

    def _link(self) -> None:
        by_path = {d.path: d.key for d in self.datasets.values()}
        for d in self.datasets.values():
            for entry in d.manifest.inputs:
                recorded = str(entry.get("path", ""))
                # recorded relative to the dataset (../traces/train-00000.parquet); only compared, never opened
                parent = Path(os.path.normpath(d.path / recorded)).parent
                key = by_path.get(parent)
                if key is not None and key != d.key:
                    if key not in d.inputs:
                        d.inputs.append(key)
                        self.datasets[key].readers.append(d.key)
                elif recorded not in d.files:
                    d.files.append(recorded)
        # in the order of the data path: a stage after the stages it reads, the reader of the step just listed
        # next (a chain stays together), otherwise in the order they were made: a pipeline's steps read top to
        # bottom as it ran them (its evaluation, which reads a model folder and no dataset, after the prompts,
        # not above them by name)
        made = sorted(self.datasets.values(), key=lambda d: (d.manifest.created_at, d.key))
        done: dict[str, int] = {}  # key -> its place
        while len(done) < len(made):
            ready = [d for d in made if d.key not in done and all(i in done for i in d.inputs)]
            if ready:
                d = max(ready, key=lambda d: max((done[i] for i in d.inputs), default=-1))  # first of equals: made
            else:
                d = next(d for d in made if d.key not in done)  # a cycle: as made
            done[d.key] = len(done)
        self.datasets = {key: self.datasets[key] for key in done}

    def get(self, key: str) -> Dataset:
        """The dataset named `key`; anything that is not one of them (or leads outside) is refused."""
        label, _, rel = key.partition("/")
        root = self.roots.get(label)
        if root is None:
            raise Refused(f"{key!r} is not one of the directories given")
        path = confine(root, rel) if rel else root
        d = self.datasets.get(key)
        if d is None or d.path != path:
            raise Refused(f"{key!r} is not a dataset directory under the directories given")
        return d


def funnel(m: Manifest) -> dict[str, Any]:
    """A step's funnel from its manifest alone (no row read): `counts` of the rows out and of what went where,
    `kept` (the names of the counts that are rows out) and `reasons` (whether the names are the rows' own
    reasons: a filter's verdicts, which the rows view can list)."""
    s = m.stats
    verdicts = s.get("funnel")
    if isinstance(verdicts, dict) and isinstance(verdicts.get("by_reason"), dict):
        return {"counts": dict(verdicts["by_reason"]), "kept": [KEPT], "reasons": True}
    kept: dict[str, int] = {"out": m.rows}
    dropped: dict[str, int] = {}
    if isinstance(select := s.get("select"), dict):  # rows in = every verdict; those not kept were the filter's
        kept = {"selected": select.get("selected", m.rows)}
        dropped = {"over k per prompt": select.get("over_k_dropped", 0),
                   "identical": select.get("identical_dropped", 0),
                   "rejected by the filter": s.get("rows_in", 0) - select.get("kept_in", 0)}  # fmt: skip
    elif isinstance(mix := s.get("mix"), dict) and isinstance(mix.get("by_source"), dict):
        kept = dict(mix["by_source"])  # every source's rows are rows out
    removed = s.get("report", {}).get("removed", {}) if isinstance(s.get("report"), dict) else {}
    dropped.update(removed)
    dropped.update({f"bad row: {k}": v for k, v in (s.get("rejects_by_code") or {}).items()})
    kept = {k: v for k, v in kept.items() if v or k == "out"}
    return {"counts": {**kept, **{k: v for k, v in dropped.items() if v}}, "kept": list(kept), "reasons": False}
