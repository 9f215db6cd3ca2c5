"""The one exception users see."""


class MlopsError(Exception):
    """A problem the user can fix: bad input, bad config, an unknown model or version.

    The CLI prints its message alone (no traceback) and exits with status 2. Raise it before
    anything is written, so a failed command leaves no partial output behind.
    """
