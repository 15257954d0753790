"""Errors a user can fix. The CLI turns them into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad usage, a bad recipe or bad input that was refused (exit code 2, no traceback)."""

    exit_code = 2


class RuntimeFailure(Exception):
    """Something went wrong at run time that is not the user's input (exit code 1)."""

    exit_code = 1
