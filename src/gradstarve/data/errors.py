"""Errors raised when a data set's files are missing, corrupt or cannot be fetched.

Every message names the file, what was expected (its checksum or format) and the exact command that fixes it, so a
user never has to guess. :class:`MissingDataError` is also a :class:`FileNotFoundError` and
:class:`CorruptDataError` also a :class:`ValueError`, so callers that only know the built-in exceptions still catch
them.
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of every data-file problem: catch this to handle all of them."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file is not where the data root says it should be."""


class CorruptDataError(DataError, ValueError):
    """A data file exists but its checksum, header or contents are wrong (truncated, damaged, another file)."""


class DownloadError(DataError):
    """Every mirror failed to deliver a file with the expected checksum."""
