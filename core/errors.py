"""Errors a user can act on: each carries a one-line message naming the file, key or value and what would be right.

The CLI prints them without a traceback. `ConfigError` is the user's input; `ResourceError` is the machine
(not enough memory for what the run needs): the same input may succeed elsewhere, so a leaderboard worker
must not mark a submission failed for it.
"""

from __future__ import annotations


class StegobenchError(Exception):
    """Base of every error stegobench reports as one line."""


class ConfigError(StegobenchError, ValueError):
    """A config file, override or input folder is wrong; the message names the file, the key and what is expected."""


class ResourceError(StegobenchError, RuntimeError):
    """The machine cannot hold what the run needs; the message gives bytes needed, bytes available and the option."""
