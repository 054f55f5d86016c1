"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong checkpoint).

Library code raises it with a one-line message naming the bad value and what would be
accepted; the entry scripts print that line and exit with status 2, without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def first_line(error: BaseException) -> str:
    """`error` as one line: its type and the first line of its message (some have none)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
