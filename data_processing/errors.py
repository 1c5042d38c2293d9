"""User errors and the one way a command line reports them (and explains its options).

A *user error* is a problem with what the user gave us: a malformed or missing input file,
a bad option, a checkpoint that does not match, an output path that cannot be written. It
is raised as :class:`UserError` with a message that names the file and, where it applies,
the column, event or line. Program bugs raise anything else and keep their traceback.

Every command-line entry point runs its ``main`` through :func:`run_cli`, which turns a
user error into one line on stderr and a non-zero exit, without a traceback. ``--debug``
on the command line or ``TRACKFORMERS_DEBUG=1`` in the environment shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: Exit status of a command that stopped on a user error (argparse uses 2 for bad options).
USER_ERROR_EXIT = 2
DEBUG_ENVIRONMENT_VARIABLE = "TRACKFORMERS_DEBUG"


class UserError(ValueError):
    """A problem with the user's input; the message says what and where (file, column, event).

    A ``ValueError`` subclass, so callers that catch ``ValueError`` keep working.
    """


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``--debug`` is among ``argv`` (default ``sys.argv``) or the variable is set."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> Any:
    """Run ``main(argv)``; a user error ends the process with one stderr line and exit 2.

    ``UserError`` and the operating system's file errors (missing, unreadable or unwritable
    paths) count as user errors. With ``--debug`` (removed from ``argv`` before ``main``
    sees it) or ``TRACKFORMERS_DEBUG=1`` they propagate with their traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    try:
        return main(args)
    except (
        UserError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        FileExistsError,
    ) as error:
        if debug:
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def error_line(error: BaseException) -> str:
    """One line for ``error``: its message with newlines folded; OS errors name their path."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it is None (then the help text says
    what happens) or the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "default" in text
            or action.default in (None, "", argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"
