"""User-facing errors.

Raise :class:`InputError` for bad input (missing file, wrong box, empty
selection...): the CLI prints its message as one line and exits with code 2,
and the Scipion protocols show it as a validation or run error. The message must
name the file or parameter and the problem."""


class InputError(ValueError):
    """Bad input detected before (or instead of) doing work."""


#: the exceptions that are the user's to fix: the command line prints them as
#: one line (:func:`one_line`) and exits with 2
USER_ERRORS = (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def one_line(command, error):
    """``deephemnma COMMAND: error: MESSAGE``, the message's white space
    (newlines too) folded to single spaces."""
    message = " ".join(str(error).split())
    return f"deephemnma {command}: error: {message}"
