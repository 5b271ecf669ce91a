"""Math-Verify's own test cases through the math check of `distill filter`: how many verdicts we reproduce.

Math-Verify (the library the filter checks math answers with) ships its regression tests in its source
distribution: (gold, prediction, expected) triples gathered from real model outputs. They are read here from the
sdist that `pip download` fetches from PyPI (nothing of them is copied into this repository): every
`pytest.mark.parametrize` list whose names start with `gold,pred,expected` (or `gold, pred, expected`), with its
literal values, and whose test calls the plain comparison (no other precision, strictness or set relation).

Each case goes through what the filter does with a trace's answer: the final `\\boxed{}` candidates of the
prediction (or the prediction itself when it boxes nothing, as the test calls it directly) against the gold, in
the filter's math-verify child, reading answers as the test does (LaTeX, expressions or both: the filter reads
both). A *false accept* is a case Math-Verify's authors expect to be wrong that we call
correct: the error that lets a wrong trace into an SFT set.

    python -m benchmarks.mathverify_cases
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from distill.filters.answers import final_boxed
from distill.filters.mathcheck import CORRECT, MathChecker

VERSION = "0.9.0"  # the math-verify pinned by pyproject.toml
TEST_FILES = ("test_all.py", "test_numina_cases.py", "test_open_thoughts.py", "test_yujianll.py", "test_boxed.py")


def sdist(root: Path) -> Path:
    """The math-verify source distribution, downloaded once from PyPI."""
    root.mkdir(parents=True, exist_ok=True)
    found = sorted(root.glob(f"math_verify-{VERSION}.tar.gz"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"math-verify=={VERSION}", "-d", str(root)], check=True)  # fmt: skip
        found = sorted(root.glob(f"math_verify-{VERSION}.tar.gz"))
    return found[0]


def _extraction(fn: ast.FunctionDef) -> tuple[str, ...] | None:
    """What the test reads answers as (its `match_types`; LaTeX and expressions by default), when it compares gold
    and pred with the helper's other defaults (no other precision, strictness or set relation); else None."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "compare_strings":
            if len(node.args) != 2 or any(k.arg != "match_types" for k in node.keywords):
                return None
            given = [ast.literal_eval(k.value) for k in node.keywords]
            return tuple(given[0]) if given else ("latex", "expr")
    return None


def cases(archive: Path) -> list[tuple[str, str, int, str, tuple[str, ...]]]:
    """(gold, prediction, expected 0/1, test file, extraction) of every plain comparison in the sdist's tests."""
    out: list[tuple[str, str, int, str, tuple[str, ...]]] = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if "/tests/" not in member.name or name not in TEST_FILES:
                continue
            tree = ast.parse(tar.extractfile(member).read().decode())  # type: ignore[union-attr]
            for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
                kinds = _extraction(fn)
                if kinds is None:
                    continue
                for dec in fn.decorator_list:
                    if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                        continue
                    names = ast.literal_eval(dec.args[0]).replace(" ", "").split(",")
                    if names[:3] != ["gold", "pred", "expected"] or len(names) != 3:
                        continue
                    try:
                        values = ast.literal_eval(dec.args[1])
                    except ValueError:
                        continue
                    out += [(g, p, int(e), name, kinds) for g, p, e in values
                            if isinstance(g, str) and isinstance(p, str)]  # fmt: skip
    return out


def run(root: Path = Path(".bench/mathverify")) -> dict:
    found = cases(sdist(root))
    ours: dict[int, int] = {}
    for kinds in sorted({c[4] for c in found}):  # one checker per extraction the tests name
        mine = [k for k, c in enumerate(found) if c[4] == kinds]
        checker = MathChecker(timeout_s=5, extraction=kinds)
        try:
            results = checker.check([(found[k][0], final_boxed(found[k][1]) or [found[k][1]]) for k in mine])
        finally:
            checker.close()
        ours.update({k: int(r == CORRECT) for k, r in zip(mine, results, strict=True)})
    pairs = [(ours[k], c[2]) for k, c in enumerate(found)]
    return {
        "cases": len(found),
        "reproduced": sum(o == e for o, e in pairs),
        "false_accepts": sum(o == 1 and e == 0 for o, e in pairs),
        "false_rejects": sum(o == 0 and e == 1 for o, e in pairs),
        "misses": [c[:4] for k, c in enumerate(found) if ours[k] != c[2]],
    }


def main() -> None:
    result = run()
    print(json.dumps({k: v for k, v in result.items() if k != "misses"}))
    for g, p, e, f in result["misses"]:
        print(f"  miss ({f}): gold {g!r}, pred {p[-80:]!r}, expected {e}")


if __name__ == "__main__":
    main()
