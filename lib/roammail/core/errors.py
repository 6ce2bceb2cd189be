"""errors.py: the typed exceptions of the library and the exit codes.

Every error a user can cause is one of these exceptions; `cli.guarded` is
the one place that turns them into a one-line message and an exit status.
Library code raises, it never prints or exits.
"""

# sysexits(3) codes, used where the original tool defines none.
EX_OK = 0
EX_USAGE = 64        # bad command line
EX_DATAERR = 65      # bad input data
EX_NOINPUT = 66      # an input file is missing or unreadable
EX_UNAVAILABLE = 69  # a service or program is not there
EX_SOFTWARE = 70     # internal error; also "not implemented"
EX_OSERR = 71        # an operating system call failed
EX_CANTCREAT = 73    # an output file (a spool file) cannot be created
EX_IOERR = 74        # input/output error
EX_TEMPFAIL = 75     # temporary failure: try again later
EX_CONFIG = 78       # configuration error


class RoammailError(Exception):
    """Base of every error the tools report as one line."""

    exit_code = EX_SOFTWARE


class UsageError(RoammailError):
    """Bad command line."""

    exit_code = EX_USAGE


class DataError(RoammailError):
    """Input data that cannot be used (a corrupt spool file, a bad message)."""

    exit_code = EX_DATAERR


class UnavailableError(RoammailError):
    """A program or service the tool needs is not there."""

    exit_code = EX_UNAVAILABLE


class IOFailure(RoammailError):
    """An input/output operation failed (disk full, short write...)."""

    exit_code = EX_IOERR


class TempFailure(RoammailError):
    """A temporary failure: the same call may work later."""

    exit_code = EX_TEMPFAIL


class AlreadyRunning(TempFailure):
    """Another instance holds the lock (of a spool, of a pid file)."""


class ConfigError(RoammailError):
    """A configuration file is wrong, at `path`:`line` (line 0: the whole file)."""

    exit_code = EX_CONFIG

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.message} ({where})"
