"""The one exception for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input: the message names the file or option and says what to do.

    The CLI prints it as one line on stderr and exits non-zero; library callers can catch it.
    """
