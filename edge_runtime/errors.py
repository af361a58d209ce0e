"""Error types of the edge runtime: each carries a one-line message naming the thing and the problem."""

import re

# Control characters, a newline above all: a file may be named "a\nb.png", and its name would split
# the one line an error is over two.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class EdgeRuntimeError(Exception):
    """Base class for every error the runtime reports to a user as one line, without a traceback."""


class ModelFileError(EdgeRuntimeError):
    """A model file is missing, truncated, corrupt, or not the kind of file its name says."""


class IntegrityError(EdgeRuntimeError):
    """A file's sha256 does not match the one recorded in the manifest beside it."""


class InputError(EdgeRuntimeError):
    """An input (array or image file) has the wrong shape, dtype or values, or cannot be decoded."""


class BackendUnavailableError(EdgeRuntimeError):
    """No installed interpreter can run the model; the message names the extra to install."""


# Exit statuses, the same for every command of the toolkit (the CLI, serve, compare, handwriting).
EXIT_BAD_INPUT = 1  # a bad file or input: an EdgeRuntimeError's one line
EXIT_USAGE = 2  # a bad option
EXIT_FAILED_CHECK = 3  # an accuracy check failed (the int8 model lost more than its tolerance)
EXIT_INTERRUPTED = 130  # Ctrl-C


def one_line(message):
    """`message` (any object) as text with its control characters written as escapes (a newline as
    \\n): what every command prints for an error or a note, so that it stays one line."""
    return _CONTROL_CHARACTERS.sub(lambda match: repr(match.group())[1:-1], str(message))
