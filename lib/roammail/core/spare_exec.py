"""spare_exec.py: a process started ahead of time that becomes a command later.

core.supervise.SpareChild runs it as

    PYTHON -I -S spare_exec.py CMD_FD STATUS_FD PARENT_PID

in a session of its own, with the command's standard input, output and
error already in place.  It sets the parent-death signal SIGKILL (and
exits at once if PARENT_PID is no longer its parent: the parent died
before that), then waits for the command's arguments on CMD_FD, each
followed by a NUL byte, up to end-of-file.  Once it has them it writes "+"
to STATUS_FD and execs them (found on PATH like execvp(3)); STATUS_FD is
close-on-exec, so end-of-file right after the "+" means that the exec
worked.  When the exec fails the errno follows the "+" (decimal) and it
exits 127.  End-of-file on CMD_FD before any argument: it is not wanted
after all, and exits 0.

Before the exec, SIGPIPE and SIGXFSZ (which the interpreter ignores) are
back at their default action and the interrupt signal at its own, so the
command starts with the signals subprocess.Popen would give it.

Standalone on purpose: it runs without site-packages and imports nothing
of roammail, so that it starts fast and small.
"""

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_RUN = 127


def _die_with_parent(parent: int) -> bool:
    """Parent-death signal SIGKILL; False when the parent is already gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(
            PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
            ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (ImportError, OSError, AttributeError):
        pass  # as core.supervise.spawn_dying_with_us without a libc
    return os.getppid() == parent


def _read_all(fd: int) -> bytes:
    data = bytearray()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk


def main(argv: list) -> int:
    cmd_fd, status_fd, parent = (int(word) for word in argv[1:4])
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if not _die_with_parent(parent):
        return EXIT_CANNOT_RUN
    data = _read_all(cmd_fd)
    os.close(cmd_fd)
    if not data:
        return 0
    args = data.split(b"\0")[:-1]
    os.set_inheritable(status_fd, False)
    os.write(status_fd, b"+")
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        os.write(status_fd, str(exc.errno or 0).encode())
    return EXIT_CANNOT_RUN


if __name__ == "__main__":
    try:
        status = main(sys.argv)
    except BaseException:  # never a traceback into the command's log
        status = EXIT_CANNOT_RUN
    os._exit(status)
