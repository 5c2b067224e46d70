"""The one exception type users see: a clear, one-line message saying what is wrong and what to do.

The command line catches :class:`PtqlibError` and prints ``error: <message>`` with exit code 2, no
stack trace (``--debug`` shows it). Library code raises it for bad input; bugs stay ordinary
exceptions so they are never disguised as user mistakes.
"""
from __future__ import annotations

__all__ = ["PtqlibError"]


class PtqlibError(Exception):
    """A user-facing error. Its message is one line: what was wrong, then what to do."""
