"""Errors a user can act on: each carries a one-line message naming the file, key or value and what would be right.

The CLI prints them without a traceback; anything else is an internal error and keeps its traceback.

    StegobenchError
    ├── UserError        the user's input is wrong: the same input fails the same way again (a leaderboard
    │   │                worker fails such a submission at once, without retrying)
    │   ├── ConfigError  a config file, key or override (names the file, the key and what is expected)
    │   └── InputError   a file or folder given as input or output: corpus, adapter, model, run folder
    └── ResourceError    the machine cannot do what the run needs (memory, a missing optional package): the same
                         input may succeed elsewhere, so a worker retries it and never blames the submission
"""

from __future__ import annotations


class StegobenchError(Exception):
    """Base of every error stegobench reports as one line."""


class UserError(StegobenchError, ValueError):
    """The user's input is wrong; retrying the same input cannot help."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names the file, the key and what is expected."""


class InputError(UserError):
    """A file or folder given as input (or as the output to write) is missing or not what the stage expects."""


# Printed after a run fails for a reason that is not the user's input: the machine's facts and the defaults taken
# from them explain most such failures. Never after an error naming the user's mistake: that stays the last line.
ENV_POINTER = "stegobench: this machine's facts and the defaults the run took from them: `stegobench env`"


class ResourceError(StegobenchError, RuntimeError):
    """The machine cannot hold what the run needs; the message gives bytes needed, bytes available and the option."""
