"""User errors on the command line: one ``error: ...`` line and exit status 2, no traceback.

A user error is a bad input the user can fix (a config key, a missing file or dataset, an
unknown model, weights not installed, a refused pickle, a checkpoint of another
architecture); everything else is a bug and keeps its traceback. ``--debug`` shows the
traceback of a user error too.
"""
from __future__ import annotations

import sys
from typing import Callable

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError, ImportError,
               ConnectionError, NotADirectoryError, IsADirectoryError)


def message(exc: BaseException) -> str:
    """The error's text on one line (KeyError's repr quotes dropped, newlines folded)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split("\n")).strip() or type(exc).__name__


def run_cli(main: Callable[[], int], debug: bool = False) -> int:
    """Run ``main``; a user error prints ``error: <message>`` to stderr and returns 2."""
    try:
        return main()
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {message(exc)}", file=sys.stderr, flush=True)
        return 2
