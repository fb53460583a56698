"""User-facing errors.

Raise :class:`InputError` for bad input (missing file, wrong box, empty
selection...): the CLI prints its message as one line and exits with code 2,
and the Scipion protocols show it as a validation or run error. The message must
name the file or parameter and the problem."""


class InputError(ValueError):
    """Bad input detected before (or instead of) doing work."""
