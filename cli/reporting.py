"""How the quiet library's logs and warnings reach the terminal during one command.

The library prints nothing of its own (progress bars aside, in :mod:`kdcache.progress`): it
reports through the ``kdcache`` logger and through warnings of class
:class:`kdcache.errors.KdcacheWarning`. Each command runs inside :func:`reporting`:

* records of ``kdcache`` and its child loggers at INFO and above print as plain lines on stderr
  (a WARNING or worse prefixed with its level: ``warning: ...``);
* each :class:`~kdcache.errors.KdcacheWarning` prints as one ``warning: MESSAGE`` line, not
  Python's two-line ``file:line: Category: message`` / source-line format; other warnings keep it.

Both go through the console the progress bars draw on (``kdcache.progress.console``), so a line
printed while a bar is live lands above the bar instead of breaking it, and the other ranks of a
torchrun job (whose console is quiet) print none. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from kdcache.errors import KdcacheWarning

LOGGER = "kdcache"


def _print(line: str) -> None:
    from kdcache.progress import console

    # markup off: messages quote lists like [1, 2, 4]; soft_wrap: one message stays one line in a log.
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class ConsoleHandler(logging.Handler):
    """A logging handler that prints each record as one plain line through the progress console."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            _print(message)
        except Exception:  # pragma: no cover - logging's own contract: never raise from emit
            self.handleError(record)


def _show_warning(original: Any) -> Any:
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if isinstance(category, type) and issubclass(category, KdcacheWarning):
            _print(f"warning: {message}")
        else:
            original(message, category, filename, lineno, file, line)

    return show


@contextlib.contextmanager
def reporting(level: int = logging.INFO) -> Iterator[None]:
    """Within the block, kdcache's log records and warnings print as described in the module docstring.

    Entered once per command; on exit the logger and the warnings machinery are as they were (a test
    process that invokes many commands does not stack handlers). Warning filters are kept as the user
    set them (``-W``, ``PYTHONWARNINGS``); the once-per-location memory starts afresh per command.
    """
    logger = logging.getLogger(LOGGER)
    handler = ConsoleHandler(level)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # one line per record, even where something configured the root logger
    try:
        with warnings.catch_warnings():  # restores showwarning and the filters on exit
            warnings.showwarning = _show_warning(warnings.showwarning)
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
