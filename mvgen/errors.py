"""User-facing errors: one line that says what is wrong and what to do about it."""

from __future__ import annotations


class MvgenError(Exception):
    """An error caused by input or configuration: printed as one line, without a traceback."""
