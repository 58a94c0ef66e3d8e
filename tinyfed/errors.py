"""Exceptions shared by every part of tinyfed."""

from __future__ import annotations


class TinyfedError(Exception):
    """Base class of tinyfed's own errors."""


class UsageError(TinyfedError):
    """A user-facing error (bad input, a missing tool); the CLI prints it without a traceback."""


class ModelError(TinyfedError):
    """A model's parameters are malformed: wrong size, non-finite values, bad checksum."""
