"""User errors on the command line: one ``error: ...`` line and exit status 2, no traceback.

A user error is a bad input the user can fix (a config key, a missing file or dataset, an
unknown model, weights not installed, a refused pickle, a checkpoint of another
architecture); everything else is a bug and keeps its traceback. ``--debug`` shows the
traceback of a user error too.
"""
from __future__ import annotations

import sys
from typing import Callable

class StorageError(OSError):
    """Output that could not be written (full disk, no permission): the run stops with the
    previous checkpoint, ``latest`` and model folder intact."""


class Preempted(Exception):
    """Training stopped on a signal (SIGTERM, SIGINT) after writing a checkpoint."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"stopped by {signal_name} at step {step}; resume with --resume")
        self.signal_name, self.step = signal_name, step


# What a scheduler reads as "requeue me": sysexits.h's EX_TEMPFAIL ("temporary failure; the
# user is invited to retry").
REQUEUE_EXIT_STATUS = 75

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError, ImportError,
               ConnectionError, NotADirectoryError, IsADirectoryError, StorageError)


def message(exc: BaseException) -> str:
    """The error's text on one line (KeyError's repr quotes dropped, newlines folded)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split("\n")).strip() or type(exc).__name__


def run_cli(main: Callable[[], int], debug: bool = False) -> int:
    """Run ``main``; a user error prints ``error: <message>`` to stderr and returns 2."""
    try:
        return main()
    except Preempted as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return REQUEUE_EXIT_STATUS
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {message(exc)}", file=sys.stderr, flush=True)
        return 2
