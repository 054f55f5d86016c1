"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong checkpoint).

Library code raises it with a one-line message naming the bad value and what would be
accepted; the entry scripts print that line and exit with status 2, without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""
