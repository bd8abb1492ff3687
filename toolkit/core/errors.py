"""The one exception type that reaches users.

Everything a user can get wrong (a path, an option, a file) is reported as a
``ClipedgeError`` whose message is a single line naming the culprit and what
was expected. The CLI prints that line and exits non-zero; anything else is a
bug and keeps its traceback.
"""


class ClipedgeError(Exception):
    """A problem with the user's input, explained in one line."""
