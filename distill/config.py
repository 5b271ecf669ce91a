"""Pydantic models of the YAML files, and loading that turns every mistake into one clear line.

An unknown key, a wrong type, a missing file or a YAML syntax error becomes a `UserError` naming the
file, the key (as a path such as `steps[1].rows_per_shard`) and the fix; the CLI prints it and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from distill.errors import UserError

M = TypeVar("M", bound=BaseModel)

DOMAINS = ("math", "code", "science", "general")  # a row's `domain`: which checks judge it


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored is a wrong run days later."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- loading ----------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> Any:
    import yaml  # here: `distill --help` reads no YAML

    p = Path(path)
    try:
        if not p.exists():
            raise UserError(f"{p}: no such file; check the path")
        if p.is_dir():
            raise UserError(f"{p}: is a directory; pass a YAML file")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:  # e.g. a folder this user may not enter
        raise UserError(f"{p}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{p}{where}: YAML syntax error: {problem}; fix the YAML") from None


def load_config(path: str | Path, model: type[M]) -> M:
    data = load_yaml(path)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{path}: the file is {kind}; it must be a YAML mapping of {model.__name__} keys")
    return parse(data, model, str(path))


def parse(data: dict[str, Any], model: type[M], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {describe(e, model)}") from None


def describe(error: ValidationError, model: type[BaseModel]) -> str:
    """The first error of `error` as `key.path: what is wrong; the fix` (+ how many more)."""
    # An unknown key first: a misspelt key also shows up as the "missing" key it was meant to be.
    errs = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errs[0]
    loc = _loc(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        import difflib

        known = _known_keys(model, first["loc"][:-1])
        close = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        msg = f"{loc}: unknown key; {hint}"
    elif kind == "missing":
        msg = f"{loc}: required key is missing; add it"
    else:
        got = first.get("input")
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        text = first["msg"].removeprefix("Value error, ")
        msg = f"{loc}: {text} (got {shown})" if loc else text
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more)"
    return msg


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at `loc`, walking nested models through their annotations."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    return list(getattr(current, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
