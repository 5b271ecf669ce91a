"""Model files by name: from this machine first, from the Hub only when it can be reached.

transformers and huggingface_hub, given a Hub name with no network, retry each request with back-off
(1, 2, 4, 8, 8 s) and print every retry: a `distill train --dry-run` on a laptop offline spent ~50 s and
12 lines of `Name or service not known` before its plan. Here the Hub is probed once per process (one TCP
connection, 2 s at most); when it cannot be reached, loaders are told `local_files_only=True`, so what is in
the local cache loads at once and what is not fails at once, with one line saying so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distill.errors import UserError

PROBE_TIMEOUT_S = 2.0


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@cache
def hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the Hub's host does not answer a TCP connection (True behind a proxy,
    which only the Hub client itself can go through)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct connection says nothing: the Hub client goes through the proxy
    url = urlparse(endpoint())
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def is_local(name: str) -> bool:
    return Path(name).exists()


def load_kwargs(name: str) -> dict[str, Any]:
    """What to add to a `from_pretrained(name, ...)`: nothing for a folder or a reachable Hub; else
    `local_files_only`, so the Hub cache answers alone and at once."""
    return {} if is_local(name) or hub_reachable() else {"local_files_only": True}


def reason(name: str, error: BaseException, repo_type: str = "model") -> str:
    """One line on why `name` (a model, or with repo_type="dataset" a dataset) did not load."""
    if not is_local(name) and not hub_reachable():
        kind = " --repo-type dataset" * (repo_type == "dataset")
        return (f"not in this machine's Hub cache and the Hub cannot be reached (offline); fetch it where "
                f"there is a network (`hf download {name}{kind}`) or give a local folder")  # fmt: skip
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def from_pretrained(load: Callable[..., Any], name: str, what: str, **kwargs: Any) -> Any:
    """`load(name, **kwargs)` (a transformers `from_pretrained`), local first; a failure is one UserError line
    naming `what` (`base_model`, `tokenizer`, `teacher model`) and the fix."""
    try:
        return load(name, **load_kwargs(name), **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {name!r}: {reason(name, e)}") from None
