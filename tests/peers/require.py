"""Skip (locally) or fail (in CI) when a test's outside requirement is missing.

Locally a missing program only skips the test that needs it, so a developer
without sshd can still run the rest.  In CI (``CI=true``) every requirement
is installed by ./test.sh, so a missing one is a broken environment and the
test fails instead of silently skipping.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
from typing import NoReturn, Sequence

import pytest

# Daemons (sshd, dma) live in sbin, which is often not on a normal user's PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    """True when running under CI, where every requirement must be present."""
    return os.environ.get("CI") == "true"


def _missing(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def find_program(name: str) -> str | None:
    """Return the absolute path of program `name` (PATH, then sbin dirs), or None."""
    found = shutil.which(name)
    if found is not None:
        return os.path.abspath(found)
    sbin_path = os.pathsep.join(SBIN_DIRS)
    found = shutil.which(name, path=sbin_path)
    return os.path.abspath(found) if found is not None else None


def require_program(name: str) -> str:
    """Return the absolute path of program `name`; skip the test (fail in CI) if missing.

    Looks on PATH, then in /usr/local/sbin, /usr/sbin and /sbin.
    """
    found = find_program(name)
    if found is None:
        _missing(f"{name} is missing: ./test.sh installs it")
    return found


def require_root(reason: str) -> None:
    """Skip the test (fail in CI) unless running as root; `reason` says why root is needed."""
    if os.geteuid() != 0:
        _missing(f"needs root: {reason}")


def require_executable(candidates: Sequence[str], what: str) -> str:
    """Return the first executable of `candidates` (absolute paths); skip (fail in CI) if none.

    For programs outside PATH and sbin, such as Dovecot's /usr/lib/dovecot/imap;
    `what` names the package that provides them.
    """
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    _missing(f"{what} is missing (looked for {', '.join(candidates)}): ./test.sh installs it")


def require_file(patterns: Sequence[str], what: str) -> str:
    """Return the first file matching one of the glob `patterns`; skip (fail in CI) if none.

    For files that are not programs, such as a SASL plugin
    (/usr/lib/*/sasl2/libkdexoauth2.so*); `what` names the package.
    """
    for pattern in patterns:
        for found in sorted(glob.glob(pattern)):
            if os.path.isfile(found):
                return found
    _missing(f"{what} is missing (looked for {', '.join(patterns)}): ./test.sh installs it")


def require_user(name: str, reason: str) -> pwd.struct_passwd:
    """Return the passwd entry of user `name`; skip the test (fail in CI) if there is none.

    `reason` says what the user is for.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        _missing(f"user {name} is missing ({reason}): ./test.sh creates it")


def require_module(name: str) -> None:
    """Skip the test (fail in CI) unless Python module `name` imports."""
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        _missing(f"the Python module {name} is missing: ./test.sh installs it")
