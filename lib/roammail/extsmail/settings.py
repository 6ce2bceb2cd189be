"""settings.py: what a run of extsmaild reads of its two files.

`load_settings` finds and parses extsmail's conf and externals files (the
first of the usual places, unless given), refuses an externals file not
owned by us (its commands would run as us), and returns a `Settings`
whose header rules are compiled only when a message first needs them.

Errors are ConfigError with file:line.  Loading is all it does: the
delivery (deliver), the daemon's reload and -t (extsmaild) share it.
"""

from __future__ import annotations

import os

from ..core import locations
from ..core.errors import ConfigError
from .conf import ExtsmailConf, parse_extsmail_conf, read_config_file


class Settings:
    """What a run needs of the two files.  The header rules are compiled
    when a message first needs them: an empty queue (a cron run, most of
    the time) pays neither for the regex engine nor for the compilation."""

    __slots__ = ("conf_path", "conf", "spool_dir", "externals_path", "parsed", "_groups")

    def __init__(self, conf_path: str, conf: ExtsmailConf, spool_dir: str,
                 externals_path: str, parsed: list) -> None:
        self.conf_path = conf_path
        self.conf = conf
        self.spool_dir = spool_dir
        self.externals_path = externals_path
        self.parsed = parsed  # externals.Group, as parsed
        self._groups: list | None = None

    @property
    def groups(self) -> list:
        """headers.CompiledGroup of each group; ConfigError for a bad regex."""
        if self._groups is None:
            from ..core.headers import compile_groups

            self._groups = compile_groups(self.parsed, self.externals_path)
        return self._groups

    def compile(self) -> None:
        """Compile the header rules now (ConfigError for a bad one)."""
        self.groups  # noqa: B018 - the property compiles


def find_file(explicit: str | None, candidates: list[str], what: str) -> str:
    if explicit:
        return explicit
    found = locations.first_existing(candidates)
    if found is None:
        raise ConfigError(candidates[0], 0, f"no {what} file (also looked for "
                          + ", ".join(candidates[1:]) + ")")
    return found


def load_conf(conf_opt: str | None) -> tuple[str, ExtsmailConf]:
    path = find_file(conf_opt, locations.extsmail_conf_candidates(), "configuration")
    return path, parse_extsmail_conf(read_config_file(path), path)


def load_externals(path: str) -> list:
    """Parse an externals file (its groups, not yet compiled); ConfigError
    with file:line."""
    from .externals import parse_externals

    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(path, 0, f"cannot read: {exc.strerror}") from None
    if st.st_uid != os.geteuid():
        raise ConfigError(path, 0, f"not owned by uid {os.geteuid()}, refusing to run "
                          "its commands")
    return parse_externals(read_config_file(path), path)


def load_settings(conf_opt: str | None, externals_opt: str | None) -> Settings:
    conf_path, conf = load_conf(conf_opt)
    ext_path = find_file(externals_opt, locations.extsmail_externals_candidates(),
                         "externals")
    groups = load_externals(ext_path)
    return Settings(conf_path, conf, locations.expand_home(conf.spool_dir), ext_path, groups)
