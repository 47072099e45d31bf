"""The one exception type the CLI turns into a one-line message (no traceback)."""


class KdmechError(ValueError):
    """Bad input from the user: a wrong name or path, an impossible capacity, a prompt that
    does not tokenize as the task needs. The message names the value and what is accepted."""
