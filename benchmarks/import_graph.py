"""The import graph of distill/: files as rooms, imports as arrows (module-level and late imports alike).

`python -m benchmarks.import_graph` prints files, arrows, circles and the arrows that point up the layers
below (docs/architecture.md draws them); tests/test_layering.py fails on any circle or upward arrow.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "distill"

# Bottom up; a module may import its own layer and the ones below it, never one above. The first prefix
# that matches a module names its layer (so `distill.train.config` is an option model, `distill.train` a stage).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("distill.errors", "distill.config", "distill.normalize", "distill.language",
                    "distill.hub_offline")),
    ("records", ("distill.records", "distill.store", "distill.progress", "distill.tokenizer")),
    ("sources", ("distill.sources",)),
    ("declarations", ("distill.stages", "distill.prompts.config", "distill.filters.config", "distill.teacher.config",
                      "distill.train.config", "distill.eval.config", "distill.mix.config")),
    ("engines", ("distill.executor", "distill.ray_executor", "distill.steps")),
    ("stages", ("distill.prompts", "distill.filters", "distill.teacher", "distill.mix", "distill.nonreasoning",
                "distill.card", "distill.hub", "distill.train", "distill.eval", "distill.compare",
                "distill.downstream", "distill.inspect", "distill.view")),
    ("pipeline", ("distill.pipeline", "distill.plan")),
    ("command line", ("distill.cli",)),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if module == "distill":  # the package's __init__: its version
        return 0
    found = [(len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
             if module == p or module.startswith(p + ".")]  # fmt: skip
    if found:
        return max(found)[1]  # the longest prefix: distill.train.config is a declaration, distill.train a stage
    raise KeyError(f"{module}: in no layer; add it to benchmarks/import_graph.py LAYERS")


def graph() -> dict[str, set[str]]:
    """module -> the distill modules it imports (an import of a package counts as its __init__)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    arrows: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        skipped: set[int] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(map(id, ast.walk(node)))  # names for the type checker only: no arrow at run time
            if id(node) in skipped:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t.startswith("distill") and t != mod and t != "distill":
                    arrows[mod].add(t)
    return arrows


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(arrows[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(arrows):
        if v not in index:
            visit(v)
    return found


def upward(arrows: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in arrows.items() for b in targets if layer(b) > layer(a))


def summary() -> dict[str, int]:
    arrows = graph()
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in ROOT.rglob("*.py"))
    return {"lines": lines, "files": len(arrows), "arrows": sum(map(len, arrows.values())),
            "circles": len(circles(arrows)), "upward": len(upward(arrows))}  # fmt: skip


def main() -> None:
    arrows = graph()
    print(" | ".join(f"{k} {v}" for k, v in summary().items()))
    for comp in circles(arrows):
        print("circle:", " <-> ".join(comp))
    for a, b in upward(arrows):
        print(f"up: {a} ({LAYERS[layer(a)][0]}) -> {b} ({LAYERS[layer(b)][0]})")


if __name__ == "__main__":
    main()
