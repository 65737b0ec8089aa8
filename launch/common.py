"""Helpers shared by the launch scripts: the entry point `run` and its one-line errors.

Every script ends with `common.run(main)`: a user's mistake (a bad flag value,
a missing or malformed file, an unknown data source) ends the process with
one line on stderr, `ERROR: ...`, and exit status 2, never a traceback.
`--verbosity=1` shows the traceback instead, for debugging.
"""

from __future__ import annotations

import functools
import os
import re
import sys

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_STATUS = 2
"""Exit status of a run stopped by a user's mistake."""


def run(main) -> None:
    """Runs a launch script's `main` as `app.run` does, with user mistakes as one line.

    A flag value absl refuses, and an `app.UsageError`, `ValueError` or `OSError`
    (a file missing, a folder, unreadable) from `main`, print `ERROR: <first
    line>` on stderr and exit with `USER_ERROR_STATUS`. Other exceptions keep
    their traceback, as every one does with `--verbosity=1`.

    Example:
        >>> if __name__ == "__main__":
        ...     common.run(main)
    """
    app.run(guard(main), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """`FLAGS(argv)`; a value absl refuses ends the process with one line (status 2)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _stop(flag_error_message(error))


def guard(main):
    """`main(argv)`, with the user's mistakes it raises reported as one line (status 2)."""

    @functools.wraps(main)
    def guarded(argv):
        try:
            return main(argv)
        except Exception as error:
            message = user_error_message(error)
            if message is None or logging.level_debug():
                raise
            _stop(message)

    return guarded


def user_error_message(error: Exception) -> str | None:
    """The one line that reports `error` to the user, or None for an internal error."""
    if isinstance(error, flags.Error):
        return flag_error_message(error)
    if isinstance(error, (app.UsageError, ValueError)):
        return _first_line(str(error))
    if isinstance(error, OSError):
        # A file or folder the user named (missing, a folder, unreadable, disk full).
        if error.filename is not None:
            return f"{error.strerror or type(error).__name__}: {os.fspath(error.filename)!r}"
        return _first_line(str(error))
    return None


def flag_error_message(error: flags.Error) -> str:
    """absl's `flag --NAME=VALUE: REASON` lines as `--NAME must be ... Received: VALUE`."""
    messages = []
    for line in str(error).splitlines():
        match = re.fullmatch(r"flag --([\w-]+)=(.*?): (.*)", line.strip())
        if match is None:
            messages.append(line.strip())
            continue
        name, value, reason = match.groups()
        parser = flags.FLAGS[name].parser if name in flags.FLAGS else None
        expected = getattr(parser, "syntactic_help", "")
        if reason.startswith(f"Flag --{name} must have a value other than None"):
            messages.append(f"--{name} is required.")
            continue
        if reason.startswith("must be "):  # The validators' wording (`validate`).
            expected = reason[len("must be ") :]
        elif isinstance(parser, flags.BooleanParser):
            expected = "true or false"
        elif isinstance(parser, flags.EnumParser):
            expected = f"one of {', '.join(parser.enum_values)}"
        elif not expected:
            messages.append(f"--{name}={value}: {reason}")
            continue
        # absl's numeric help reads "a positive integer" but "integer >= 2".
        expected = re.sub(r"^integer\b", "an integer", re.sub(r"^number\b", "a number", expected))
        messages.append(f"--{name} must be {expected}. Received: {value}")
    return "; ".join(message for message in messages if message)


def validate(name: str, check, expected: str) -> None:
    """Refuses a value of flag `name` for which `check(value)` is false, when given.

    The error reads `--NAME must be EXPECTED. Received: VALUE`, at flag parsing.

    Example:
        >>> validate("width", lambda width: width > 0, "> 0")
    """
    flags.register_validator(
        name, lambda value: value is None or check(value), message=f"must be {expected}"
    )


def validate_path(name: str) -> None:
    """Refuses an empty path for flag `name` (`--out=`), which would mean the current folder."""
    validate(name, bool, "a path (given empty, it would be the current folder)")


def _first_line(message: str) -> str | None:
    return next((line.strip() for line in message.splitlines() if line.strip()), None)


def _stop(message: str):
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_STATUS)
