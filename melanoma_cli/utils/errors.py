"""The one exception type that the command-line layer turns into a clean error message."""


class MelanomaError(Exception):
    """A problem with the user's inputs: printed as one line, exit code 1, no traceback."""


class Interrupted(MelanomaError):
    """Stopped by Ctrl-C (or SIGTERM), with what to do next: one line, exit code 130."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message cut to one line for a one-line error (its type if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
