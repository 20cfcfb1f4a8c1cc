"""The one exception type users see: a message that names what is wrong and how to fix it."""


class StageError(Exception):
    """Bad input or state. The CLI prints the message (no traceback) and exits with status 2."""
