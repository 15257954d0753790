"""Errors a user can fix. The CLI turns them into a one-line message and exit code 2."""

import difflib
import errno
import os


class UserError(Exception):
    """Bad usage, a bad recipe or bad input that was refused (exit code 2, no traceback)."""

    exit_code = 2


class RuntimeFailure(Exception):
    """Something went wrong at run time that is not the user's input (exit code 1)."""

    exit_code = 1


def did_you_mean(word: str, choices) -> str:
    """` (did you mean 'x'?)` for the closest choice, or '' when none is close: every error that
    names an unknown key, modality, axis or value ends with it."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_os_error(e: OSError) -> str:
    """`path: No space left on device` (the file first, then the cause), for failures of the system."""
    what = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
    hint = " (free some space)" if e.errno == errno.ENOSPC else ""
    return f"{e.filename}: {what}{hint}" if e.filename is not None else f"{what}{hint}"
