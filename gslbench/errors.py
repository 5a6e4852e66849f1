"""The one exception type for user errors: the CLI prints it as one line and exits 2."""


class GslbenchError(Exception):
    """A user error (missing file, bad shape, checksum mismatch, unknown name): no traceback."""
