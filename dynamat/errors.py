"""Errors that the command line reports as one line and a non-zero exit."""


class DynamatError(Exception):
    """A user-facing error: bad input, missing file, failed run. Printed without a traceback."""


class ReferenceFormatError(DynamatError, ValueError):
    """A reference file that does not follow the DynaMat v1.0 schema."""
