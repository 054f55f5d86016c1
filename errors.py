"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong checkpoint).

Library code raises it with a one-line message naming the bad value and what would be
accepted; the entry scripts print that line and exit with status 2, without a traceback.
"""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def first_line(error: BaseException) -> str:
    """`error` as one line: its type and the first line of its message (some have none)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def check_regular_file(path: str | Path, what: str) -> None:
    """A one-line UserError unless `path` is a regular file (a FIFO or /dev/zero would block or never end)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")
