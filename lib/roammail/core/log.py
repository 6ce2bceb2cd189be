"""log.py: where the tools' log lines go: syslog (facility mail) and stderr.

`setup(tool)` configures the "roammail" logger (library modules log through
its children, `logging.getLogger(__name__)`) and returns it.  Syslog lines
read `tool[pid]: message` (the pid at the time of the line, so it stays
right after a daemon forks); stderr lines read `tool: message`.

Must never: fail because there is no syslog socket (no syslog then, silently);
add a second copy of its handlers when called again (it replaces its own,
leaving anyone else's alone); touch the root logger.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

LOGGER_NAME = "roammail"
_OURS = "_roammail_handler"  # attribute marking the handlers setup() installed


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _syslog_handler(tool: str, address: str) -> logging.Handler | None:
    if not os.path.exists(address):
        return None
    import logging
    import logging.handlers  # socket and pickle: only where syslog exists

    try:
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
    except OSError:
        return None
    name = tool.replace("%", "%%")
    handler.setFormatter(logging.Formatter(f"{name}[%(process)d]: %(message)s"))
    return handler


def setup(
    tool: str,
    *,
    stderr: bool | None = None,
    verbose: bool = False,
    syslog: bool = True,
    syslog_address: str = "/dev/log",
) -> logging.Logger:
    """Send `tool`'s log lines to syslog and/or stderr; return the logger.

    stderr=None means: only when stderr is a terminal.  verbose: DEBUG
    lines too, else INFO and up.  Calling it again replaces its handlers.
    """
    import logging

    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
        logger.removeHandler(old)
        old.close()

    handlers: list[logging.Handler] = []
    if syslog:
        handler = _syslog_handler(tool, syslog_address)
        if handler is not None:
            handlers.append(handler)
    if stderr if stderr is not None else _stderr_is_terminal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(tool.replace("%", "%%") + ": %(message)s"))
        handlers.append(handler)
    if not handlers:
        # Otherwise logging's "last resort" would print warnings to stderr.
        handlers.append(logging.NullHandler())
    for handler in handlers:
        setattr(handler, _OURS, True)
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    return logger


class Deferred:
    """A logger set up (by setup(), with these arguments) when it is first
    used: a run that has nothing to say does not import logging, which
    costs a cron job's empty run more than all the rest of its work."""

    _lock = _thread.allocate_lock()  # two threads' first lines set it up once

    def __init__(self, tool: str, **settings: object) -> None:
        self._tool = tool
        self._settings = settings
        self._logger: logging.Logger | None = None

    def __getattr__(self, name: str):
        if self._logger is None:
            with self._lock:
                if self._logger is None:
                    self._logger = setup(self._tool, **self._settings)  # type: ignore[arg-type]
        return getattr(self._logger, name)
