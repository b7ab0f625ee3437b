"""The one exception type for user mistakes; the CLI turns it into a one-line message."""


class GanforgeError(Exception):
    """A problem with the user's input (data, config, checkpoint, request), not a bug."""
