"""Builds the `stegobench` parser from the command modules and runs one command: the one place where a command's
error becomes a line on stderr and an exit code (the codes themselves live in core/errors.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from stegobench.core.errors import (ENV_POINTER, EXIT_INTERRUPTED, CommandFailed, Interrupted, StegobenchError,
                                    UserError)

from . import compare, env, gen, leaderboard, quickstart, serve, submit, train, validate, worker
from . import eval as evaluate

# in the order --help lists them
COMMANDS = (gen, train, evaluate, compare, submit, worker, leaderboard, quickstart, serve, env, validate)
# Commands that run on the machine's resources: after an error not of the user's making, they point to `stegobench env`.
RUN_COMMANDS = ("train", "eval", "worker")
# What a command stopped by Ctrl-C leaves reusable (printed as its one line).
STOPPED_KEEPS = {
    "eval": "the answers decoded so far are cached (every finished chunk of 256 per condition), and the same command "
            "decodes only the rest; --out was not written",
    "worker": "the job it was running is PENDING again (its attempt not counted) for the next worker",
    "gen": "--out was not written (a corpus is published whole or not at all)",
}
PRELOAD_COMMANDS = ("eval", "worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stegobench",
        description="Out-of-context steganography benchmark: generate word-redefinition corpora, fine-tune, "
                    "evaluate covert code-word use, and rank submissions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def preload_env(argv: list[str], environ: dict[str, str], tcmalloc: str | None) -> dict[str, str] | None:
    """The environment to re-execute `argv` with, or None to run as is.

    vLLM decodes 1.12-1.16x faster on these CPUs with tcmalloc preloaded (make bench, preload section), and its
    CPU backend warns on every start without it. LD_PRELOAD only acts on a process started with it (vLLM forks
    its engine from this one), so eval and worker re-execute themselves once with it. STEGOBENCH_NO_PRELOAD=1
    turns it off."""
    if (not argv or argv[0] not in PRELOAD_COMMANDS or tcmalloc is None or environ.get("STEGOBENCH_NO_PRELOAD")
            or "libtcmalloc" in environ.get("LD_PRELOAD", "")):
        return None
    preload = environ.get("LD_PRELOAD", "")
    return {**environ, "LD_PRELOAD": f"{tcmalloc}:{preload}" if preload else tcmalloc}


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if from_command_line:
        import os

        from stegobench.core.machine import find_tcmalloc

        env = preload_env(argv, dict(os.environ), find_tcmalloc())
        if env is not None:
            os.execve(sys.executable, [sys.executable, "-m", "stegobench.cli", *argv], env)
    if argv[:1] == ["quickstart"]:  # its own options, --help included, belong to cli/quickstart.py
        return run_command("quickstart", lambda: quickstart.main(argv[1:]))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args.command, lambda: args.func(args))


def run_command(command: str, run: Callable[[], int]) -> int:
    """`run()`'s exit code, or the one its error maps to (core/errors.py)."""
    from stegobench.core import profile

    profile.record_imports(f"stegobench {command}")
    try:
        with profile.span(profile.Work.COMMAND, command=command):
            return run()
    except StegobenchError as exc:
        print(f"stegobench {command}: error: {exc}", file=sys.stderr)
        # a user's mistake (an input, a config, an output folder) stays the last line, as does a step's own output
        if command in RUN_COMMANDS and not isinstance(exc, (UserError, CommandFailed, Interrupted)):
            print(ENV_POINTER, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"\nstegobench {command}: stopped by Ctrl-C; {STOPPED_KEEPS.get(command, 'nothing was written')}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        if command in RUN_COMMANDS:
            print(ENV_POINTER, file=sys.stderr)
        raise
