"""locations.py: where the tools look for their files; the only reader of XDG_*.

The original tool's paths come first (~/.extsmail/conf, ~/.mswatchrc...),
then $XDG_CONFIG_HOME/roammail/, then the system-wide file.  `~` is $HOME
when it is set to an absolute path (the C tools use the password entry
alone; HOME is what a user and a test expect to control), else the
password entry's home directory.  Nothing here opens or parses a file.

The XDG base directories (config, state, cache, runtime) are read here
and nowhere else, by one rule: a variable that is unset, empty or not an
absolute path is ignored (the XDG Base Directory specification), and the
spec's default under `~` stands in, except for XDG_RUNTIME_DIR, which has
none (`xdg_runtime_dir` is None: each tool says where it goes instead).
A caller that was handed an environment of its own passes it as
`environ`; `~` is always the process's (see home()).
"""

import posix

from . import paths

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Mapping


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


def xdg_env(name: str, environ: "Mapping[str, str] | None" = None) -> "str | None":
    """$name when it is an absolute path, else None; from `environ` when
    given, else from the process's environment."""
    value = paths.getenv(name, "") if environ is None else environ.get(name, "")
    return value if value.startswith("/") else None


def xdg_config_home(environ: "Mapping[str, str] | None" = None) -> str:
    """$XDG_CONFIG_HOME, else ~/.config."""
    return xdg_env("XDG_CONFIG_HOME", environ) or paths.join(home(), ".config")


def xdg_state_home(environ: "Mapping[str, str] | None" = None) -> str:
    """$XDG_STATE_HOME, else ~/.local/state."""
    return xdg_env("XDG_STATE_HOME", environ) or paths.join(home(), ".local", "state")


def xdg_cache_home(environ: "Mapping[str, str] | None" = None) -> str:
    """$XDG_CACHE_HOME, else ~/.cache."""
    return xdg_env("XDG_CACHE_HOME", environ) or paths.join(home(), ".cache")


def xdg_runtime_dir(environ: "Mapping[str, str] | None" = None) -> "str | None":
    """$XDG_RUNTIME_DIR, else None (the spec gives it no default)."""
    return xdg_env("XDG_RUNTIME_DIR", environ)


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
