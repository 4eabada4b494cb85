"""What can go wrong with a root: a tool failed, or the image is unsafe to season."""

from __future__ import annotations


class RootError(RuntimeError):
    """A filesystem tool failed while cloning or deleting a root; the message carries
    the tool's own explanation."""


class SeasoningError(ValueError):
    """A root cannot be seasoned safely, e.g. because the image put a symlink where a
    directory of the root should be."""
