"""The one exception type a user's mistake becomes.

A `UserError` is printed by the CLI as one line on stderr and exits with status 2: bad arguments,
bad YAML, unreadable or ill-shaped input files, an output directory that belongs to another run.
Anything else that escapes is a bug in distill and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message names the file / key / row and the fix."""

    exit_code = 2


class RowError(ValueError):
    """One input row cannot be used; the row goes to `_rejects/` with this message as `error`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
