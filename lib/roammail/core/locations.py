"""locations.py: where the tools look for their files.

The original tool's paths come first (~/.extsmail/conf, ~/.mswatchrc...),
then $XDG_CONFIG_HOME/roammail/, then the system-wide file.  `~` is $HOME
when it is set to an absolute path (the C tools use the password entry
alone; HOME is what a user and a test expect to control), else the
password entry's home directory.  Nothing here opens or parses a file.
"""

import posix

from . import paths


def home() -> str:
    value = paths.getenv("HOME", "")
    if value.startswith("/"):
        return value
    import pwd

    return pwd.getpwuid(posix.getuid()).pw_dir


def expand_home(path: str) -> str:
    """`~` or `~/x` at the start of path -> the home directory (see home())."""
    if path == "~":
        return home()
    if path.startswith("~/"):
        return paths.join(home(), path[2:])
    return path


def xdg_config_home() -> str:
    value = paths.getenv("XDG_CONFIG_HOME", "")
    return value if value.startswith("/") else paths.join(home(), ".config")


def candidates(original: str, xdg_name: str, system: "str | None") -> "list[str]":
    """The places to look for one file, in order."""
    found = [expand_home(original), paths.join(xdg_config_home(), "roammail", xdg_name)]
    if system:
        found.append(system)
    return found


def first_existing(candidates: "list[str]") -> "str | None":
    for path in candidates:
        if paths.exists(path):
            return path
    return None


def extsmail_conf_candidates() -> "list[str]":
    return candidates("~/.extsmail/conf", "extsmail.conf", "/etc/extsmail/conf")


def extsmail_externals_candidates() -> "list[str]":
    return candidates("~/.extsmail/externals", "extsmail.externals",
                      "/etc/extsmail/externals")
