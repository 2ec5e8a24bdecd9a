"""How a kdcache command ends: exit codes and one-line errors.

Exit codes: 0 ok; 1 a kdcache error (:class:`kdcache.errors.KdcacheError`, one
``error:`` line on stderr); 2 a usage error (a malformed command line, which
Click reports itself, or :class:`kdcache.errors.UsageError` from the library);
130 interrupted by Ctrl-C, with a note on how to resume. An ``OSError`` that
reaches the CLI (permission denied, disk full, a missing parent directory, a
read-only filesystem) is a condition of the user's machine, not a bug: it also
ends in one line naming the path and what to do, exit 1. Anything else is a
bug and keeps its traceback (:class:`kdcache.errors.KdcacheBug`, an internal invariant that broke, is one).
The library's log records and warnings print as lines on stderr while a command runs
(:mod:`kdcache_cli.reporting`).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

try:  # recent Typer vendors its own copy of Click; its exceptions are the ones raised
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - Typer that uses the click package
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from kdcache.errors import KdcacheBug, KdcacheError, UsageError
from kdcache_cli.reporting import reporting

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def usage_fail(message: str) -> NoReturn:
    """A bad option value found by the CLI itself: one line, exit 2."""
    fail(message, EXIT_USAGE)


# What to do about each OS condition; {path} is the file the OS named.
_OS_ADVICE: dict[int, str] = {
    errno.ENOSPC: "no space left on the device holding {path}; free space and run the same command again "
                  "(what was finished is kept)",
    errno.EDQUOT: "disk quota exceeded writing {path}; free space and run the same command again",
    errno.EACCES: "permission denied: {path}; choose a path you can write to, or change its permissions",
    errno.EPERM: "operation not permitted on {path}; choose a path you own",
    errno.EROFS: "{path} is on a read-only filesystem; choose a writable location",
    errno.EIO: "input/output error on {path}: the device failed to read or store it; check the disk "
               "(dmesg), then run the same command again",
    errno.ENOENT: "{path} does not exist; check the path",
    errno.EISDIR: "{path} is a directory where a file was expected; give a file path",
    errno.ENOTDIR: "{path} (or one of its parents) is a file where a directory was expected; choose another path",
    errno.EEXIST: "{path} already exists; choose another path or remove it",
    errno.ENAMETOOLONG: "the path {path} is too long; choose a shorter one",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: what happened to which path, and what to do."""
    path = exc.filename if exc.filename is not None else None
    if exc.filename2 is not None:
        path = f"{exc.filename} -> {exc.filename2}"
    advice = _OS_ADVICE.get(exc.errno or -1)
    if path is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"{reason} (no path given by the operating system); check free space and permissions of the output"
    if advice is None:
        return f"{exc.strerror or exc}: {path}"
    return advice.format(path=path)


def handle_errors(fn: F | None = None, *, resume: str = "run the same command again to resume",
                  reads_only: bool = False) -> Any:
    """Turn kdcache's errors and OS conditions into one line and an exit code; Ctrl-C into 130.

    ``resume`` is what the Ctrl-C message tells the user to do next. A command that ``reads_only``
    (info, verify, report) saves nothing, so its Ctrl-C message says so instead of promising a resume.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                _refuse_under_torchrun(func.__name__)
                with reporting():  # the library's log records and warnings, as lines on stderr
                    return func(*args, **kwargs)
            except KdcacheBug:
                raise  # a bug in kdcache: its traceback says where
            except UsageError as exc:
                _rank_fail(str(exc), EXIT_USAGE, usage=True)
            except KdcacheError as exc:
                _rank_fail(str(exc), EXIT_ERROR)
            except OSError as exc:
                _rank_fail(describe_os_error(exc), EXIT_ERROR)
            except RuntimeError as exc:
                if not _lost_peer(exc):
                    raise
                # Not an error line of its own: the rank that failed printed the cause.
                typer.echo(f"kdcache: {_peer_note()}", err=True)
                raise typer.Exit(EXIT_ERROR) from None
            except KeyboardInterrupt:
                fail(f"interrupted; {func.__name__} writes nothing, so there is nothing to resume" if reads_only
                     else f"interrupted; what was finished is saved: {resume}", EXIT_INTERRUPTED)
            finally:
                _leave_job()
                _forget_storage_options()

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _forget_storage_options() -> None:
    """End a command's ``--storage-option`` values with it: a caller running commands in one process (the
    Python API after a command, tests) would otherwise have its local stores refused for options it never gave."""
    location = sys.modules.get("kdcache.store.location")
    if location is not None:
        location.use_storage_options({})


# Commands that split their work over torchrun's ranks; any other one would run N times over the same files.
_DISTRIBUTED_COMMANDS = ("precompute", "distill", "train_teacher")


def _refuse_under_torchrun(command: str) -> None:
    world = os.environ.get("WORLD_SIZE", "1")
    if command not in _DISTRIBUTED_COMMANDS and world not in ("", "1"):
        name = command.replace("_", "-")
        raise UsageError(f"`kdcache {name}` does not run under torchrun (WORLD_SIZE={world}); run it as one "
                         "process (precompute, distill and train-teacher take torchrun)")


def _rank_fail(message: str, code: int, usage: bool = False) -> NoReturn:
    """``fail`` for one rank of a torchrun job: the rank that hit the error prints it (named), an
    option error only once (rank 0); in a single process exactly ``fail``."""
    if "kdcache.distributed" not in sys.modules and os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        fail(message, code)  # a plain single process: no torch import for an error line
    from kdcache.distributed import error_line, record_failure

    line = error_line(message, usage)
    if line is None:
        # Another rank prints this failure. torchrun stops every rank as soon as one exits, so leaving
        # first could silence it before it printed: give it a moment (this is the failure path only).
        time.sleep(2.0)
        raise typer.Exit(code)
    record_failure(line)
    fail(line, code)


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether ``exc`` is a collective that failed because another rank of the job went away."""
    if "kdcache.distributed" not in sys.modules:
        return False
    from kdcache.distributed import lost_peer

    return lost_peer(exc)


def _peer_note() -> str:
    from kdcache.distributed import current

    return f"rank {current().rank} stopped: another rank of this torchrun job ended first (its error line says why)"


def _leave_job() -> None:
    if "kdcache.distributed" in sys.modules:
        from kdcache.distributed import shutdown

        shutdown()


class OneLineErrors(TyperGroup):
    """The app's command group: a malformed command line is one ``error:`` line and exit 2.

    Click would print the usage, a hint and a boxed message; here the message
    and where to look fit on one line, as every other kdcache error does.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `kdcache` alone prints the overview
            sys.exit(EXIT_USAGE)
        except click_exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = exc.format_message().replace("Value error, ", "")  # pydantic's prefix says nothing
            if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun every rank parsed the same line
                typer.echo(f"error: {message}{where}", err=True)
            else:
                time.sleep(2.0)  # let rank 0 print before torchrun stops it (see _rank_fail)
            sys.exit(exc.exit_code)
        except typer.Abort:  # end of input at a prompt
            typer.echo("error: aborted", err=True)
            sys.exit(EXIT_ERROR)
        # Without standalone mode Click returns an explicit typer.Exit's code, else the command's None.
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)
