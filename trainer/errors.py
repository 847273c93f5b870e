"""Errors meant for the person at the keyboard, not for a traceback."""


class UserError(Exception):
    """A problem with the user's input, config or files.

    The message is printed as one line, so it must name the problem and the fix.
    """
