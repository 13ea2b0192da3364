"""Errors a user can act on: each carries a one-line message naming the file, key or value and what would be right.

The CLI prints them without a traceback; anything else is an internal error and keeps its traceback.

    StegobenchError                    exit 2 unless it says otherwise
    ├── UserError        the user's input is wrong: the same input fails the same way again (a leaderboard
    │   │                worker fails such a submission at once, without retrying)
    │   ├── ConfigError  a config file, key or override (names the file, the key and what is expected)
    │   ├── InputError   a file or folder given as input or output: corpus, adapter, model, run folder
    │   │   └── OutputDirError   the output folder exists and may not be replaced
    │   ├── UsageError   a command-line flag is missing or wrong (argparse's own usage errors exit 2 as well)
    │   └── Rejected     a leaderboard submission failed validation (benchmark/validation.py)
    ├── ResourceError    the machine cannot do what the run needs (memory, a missing optional package, a database
    │   │                it cannot open): the same input may succeed elsewhere, so a worker retries it and never
    │   │                blames the submission
    │   └── StoreError   the leaderboard database cannot be opened (benchmark/store.py)
    ├── CommandFailed    exit 1: a command it ran (a step of the quickstart or the study) failed or was refused;
    │                    that command's own output says why
    └── Interrupted      exit 130: stopped by Ctrl-C; the message says what is kept and how to continue

The exit-code contract (README, "Exit codes") lives here and nowhere else: `exit_code` on each class, and the
EXIT_* constants for outcomes that are not errors; every `main` returns one of them.
"""

from __future__ import annotations


# Exit codes of every stegobench command.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, and its outcome is a refusal or a failure it reports (a refused submission)
EXIT_ERROR = 2  # a StegobenchError (argparse's usage errors exit 2 too)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it


class StegobenchError(Exception):
    """Base of every error stegobench reports as one line; `exit_code` is what a command exits with after it."""

    exit_code = EXIT_ERROR


class UserError(StegobenchError, ValueError):
    """The user's input is wrong; retrying the same input cannot help."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names the file, the key and what is expected."""


class InputError(UserError):
    """A file or folder given as input (or as the output to write) is missing or not what the stage expects."""


class OutputDirError(InputError):
    """The output folder exists and may not be replaced."""


class UsageError(UserError):
    """A command-line argument is missing, unknown or conflicts with another; the message names the flag."""


# Printed after a run fails for a reason that is not the user's input: the machine's facts and the defaults taken
# from them explain most such failures. Never after an error naming the user's mistake: that stays the last line.
ENV_POINTER = "stegobench: this machine's facts and the defaults the run took from them: `stegobench env`"


class ResourceError(StegobenchError, RuntimeError):
    """The machine cannot hold what the run needs; the message gives bytes needed, bytes available and the option."""


class CommandFailed(StegobenchError):
    """A command run on the user's behalf (a numbered step, a training subprocess) failed or was refused; its own
    output, above the message, says why."""

    exit_code = EXIT_FAILED


class Interrupted(StegobenchError):
    """Stopped by Ctrl-C; the message says what was kept and how to continue."""

    exit_code = EXIT_INTERRUPTED
