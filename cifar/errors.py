"""Errors caused by the user's input: reported as one line, never as a traceback."""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Callable, NoReturn

from cifar.collector import skip_collection_at_exit
from cifar.credentials import without_passwords

if TYPE_CHECKING:
    from hydra.errors import OverrideParseException


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix, and leaves out the
    password of any store URL in it (one-line errors end up in CI logs, job logs and bug reports)."""

    def __init__(self, message: str) -> None:
        super().__init__(without_passwords(message))


class ConfigError(UserError):
    """A config value that composes but cannot be used (out of range, inconsistent)."""


class JobConfigError(ConfigError):
    """The config of a sweep's job (or of a trial its search space holds) that does not compose or is refused,
    raised before the job starts; ``job`` names it ("the job optimizer=muon")."""

    def __init__(self, job: str, cause: BaseException) -> None:
        super().__init__(f"{job}: {first_line(cause)}")
        self.job = job


class DataError(UserError):
    """Data that is missing, unreadable or not CIFAR-10."""


class DivergedError(UserError):
    """The training loss became NaN or infinite."""


class CheckpointError(UserError):
    """A checkpoint that could not be written (disk full, no permission; the previous one is kept) or read."""


class AbortRun(BaseException):
    """Carries a UserError past Hydra to ``cifar.train``'s one-line report: past Hydra's per-job failure
    report in a single run, and past its callbacks, whose Exceptions it only warns of, to stop a sweep."""


def exit_status(main: Callable[[], int]) -> int:
    """The exit status of a tool's ``main``; 128 + SIGPIPE, silently, where the reader of its output left
    (``| head``): Python printed a BrokenPipeError traceback, or "Exception ignored" at exit; 128 + SIGINT,
    silently too, on Ctrl-C, where Python printed the KeyboardInterrupt's traceback (the tools write files
    only through a temp file, which is removed)."""
    try:
        status = main()
        sys.stdout.flush()  # here, not at exit, where the error could not be caught
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


def exit_with_status_of(main: Callable[[], int]) -> NoReturn:
    """Exit this process with the :func:`exit_status` of a tool's ``main``, skipping the collections at exit."""
    skip_collection_at_exit()
    sys.exit(exit_status(main))


def first_line(err: BaseException) -> str:
    """The first line of an error's message (library errors often span several), without the password
    of a store URL in it (MLflow's errors name the request's whole URL)."""
    text = str(err).strip()
    return without_passwords(text.splitlines()[0]) if text else type(err).__name__


def unwritable_output_dir(err: OSError) -> UserError:
    """The error of a run's or sweep's output dir that cannot be made (not a directory, no permission)."""
    return UserError(f"cannot write {err.filename} ({os_reason(err)}): set hydra.run.dir (hydra.sweep.dir with -m) "
                     "to a writable directory")


def os_reason(err: OSError) -> str:
    """Why a file operation failed, in a few words ("No space left on device")."""
    return err.strerror or first_line(err)


OVERRIDE_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
_EXPECTED_TOKENS = re.compile(r" expecting .*$")  # the parser's token names: {<EOF>, ':', BRACKET_OPEN, ...}
_LEXER_ERROR = "LexerNoViableAltException: "  # then the override, and a line with a caret under what it refused


def unparsed_override(err: OverrideParseException) -> str:
    """The line for an override that Hydra's grammar refuses, where Hydra's message quotes every override given and
    the parser's expected tokens (or, for a character it takes only quoted, a line with a caret under it)."""
    lines = err.message.splitlines()  # where it is in the list, the parser's reason, the grammar's page
    if "=" not in err.override:
        return (f"{err.override} is not key=value: quote an override whose value holds spaces, as "
                f"'data.path=/my data', or drop {err.override}")
    if (character := _unquoted_character(lines, err.override)) is not None:
        key, value = err.override.split("=", 1)
        if value.startswith("~"):
            fix = "for your home folder, write $HOME, which the shell expands (it leaves a ~ after key= as it is)"
        elif any(bracket in value for bracket in "[{("):
            fix = "quote the item that holds it, inside the brackets"
        else:
            fix = f"quote the value, as '{key}=\"{value}\"'"
        return f"{err.override} does not parse: {character!r} is taken only in a quoted value: {fix}"
    reason = _EXPECTED_TOKENS.sub("", lines[-2] if len(lines) > 2 else lines[-1])
    return (f"{err.override} does not parse ({reason}): check its brackets and commas, and quote a value that "
            f"holds any of them inside the override, as 'key=\"a,b\"'; the syntax: {OVERRIDE_GRAMMAR}")


def _unquoted_character(lines: list[str], override: str) -> str | None:
    """The character of ``override`` that Hydra's lexer refused (``~``, ``#``, ``;``, ...), from its message's
    ``lines``; None for another error."""
    if len(lines) < 3 or lines[1] != _LEXER_ERROR + override or "^" not in lines[2]:
        return None
    position = lines[2].index("^") - len(_LEXER_ERROR)
    return override[position] if 0 <= position < len(override) else None
