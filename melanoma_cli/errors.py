"""The one exception type that the command-line layer turns into a clean error message."""


class MelanomaError(Exception):
    """A problem with the user's inputs: printed as one line, exit code 1, no traceback."""
