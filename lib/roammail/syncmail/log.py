"""syncmail/log.py: where syncmail's lines go, and its progress line.

Owns syncmail's logging set-up (syslog through roammail.core.log, and stderr
as the options and a terminal say) and the progress line a terminal
shows during a long run.  It never decides what is logged (the callers
do) and never writes anything but log lines and that progress line.

syncmail imports it once ssh has started: logging costs about 20 ms to
import, which then overlaps with the login.
"""

from __future__ import annotations

import logging
import sys
import time

TOOL = "syncmail"
PER_MESSAGE = {"per_message": True}  # `extra` of the log line of each message moved
# Runs of at least this many messages show a progress line on a terminal.
PROGRESS_MESSAGES = 100
PROGRESS_SECONDS = 0.2  # between redraws

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Optional


class TerminalLog(logging.StreamHandler):
    """Log lines on a terminal, above a progress line redrawn in place.

    While a progress line is up (`show`), the per-message lines (logged
    with extra=PER_MESSAGE) are left to syslog unless `verbose`."""

    def __init__(self, stream, verbose: bool) -> None:
        super().__init__(stream)
        self.verbose = verbose
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.line and not self.verbose and getattr(record, "per_message", False):
            return
        if self.line:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if self.line:
            self.stream.write(self.line)
            self.flush()

    def show(self, text: str) -> None:
        """Put up, or redraw, the progress line."""
        self.acquire()
        try:
            self.line = text
            self.stream.write("\r\x1b[K" + text)
            self.flush()
        finally:
            self.release()

    def done(self) -> None:
        """Take the progress line down."""
        self.acquire()
        try:
            if self.line:
                self.stream.write("\r\x1b[K")
                self.flush()
            self.line = ""
        finally:
            self.release()


def human_bytes(count: int) -> str:
    """"512 bytes", "4.1 KB", "46.1 MB", "2.3 GB" (powers of 1000)."""
    if count < 1000:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KB", "MB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} GB"


class Progress:
    """Messages copied so far, on the terminal's progress line."""

    def __init__(self, terminal: TerminalLog, label: str, total: int) -> None:
        self.terminal = terminal
        self.label = label
        self.total = total
        self.count = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        now = time.monotonic()
        if now - self.shown >= PROGRESS_SECONDS or self.count == self.total:
            self.shown = now
            self.terminal.show(f"{TOOL}: {self.label}: {self.count}/{self.total} messages, "
                               f"{human_bytes(self.bytes)}, {now - self.started:.1f} s")

    def end(self) -> None:
        self.terminal.done()


def setup_logging(verbose: bool, quiet: bool) -> tuple[logging.Logger, Optional[TerminalLog]]:
    """syslog, and stderr as the options and a terminal say.  Returns
    syncmail's logger, and the TerminalLog for a progress line if stderr
    is a terminal and not --quiet."""
    from ..core import log as roamlog

    logger = roamlog.setup(TOOL, stderr=False, verbose=verbose)
    to_syslog = any(not isinstance(h, logging.NullHandler) for h in logger.handlers)
    on_terminal = sys.stderr is not None and sys.stderr.isatty()
    terminal = TerminalLog(sys.stderr, verbose) if on_terminal else None
    handler: logging.StreamHandler = (terminal if terminal is not None
                                      else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(f"{TOOL}: %(message)s"))
    if quiet:
        handler.setLevel(logging.ERROR)
    elif verbose:
        handler.setLevel(logging.DEBUG)
    elif on_terminal:
        handler.setLevel(logging.INFO)
    else:
        handler.setLevel(logging.WARNING)  # cron: quiet unless something is wrong
    setattr(handler, roamlog._OURS, True)  # ours: the next setup() replaces it
    logger.addHandler(handler)
    # Lines nobody would see are not even made (a line per message moved).
    if verbose:
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.INFO if to_syslog else max(logging.INFO, handler.level))
    return logging.getLogger("roammail.syncmail.cli"), None if quiet else terminal
