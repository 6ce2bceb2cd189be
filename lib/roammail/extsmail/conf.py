"""conf.py: the grammar of extsmail's conf file (extsmail.conf(5)).

Built on core.tokens, whose lexical rules it shares with the externals
file.  Like tokens, it only turns bytes into values: it never expands `~`
and never opens a file (read_config_file, re-exported here, does).

It must stay cheap to import: extsmail, run for every mail sent, imports it.
"""

from ..core.errors import ConfigError
from ..core.tokens import (
    Token,
    TokenStream,
    _Frozen,
    describe,
    read_config_file,
    shorten,
    tokenize,
)

__all__ = ["ExtsmailConf", "parse_extsmail_conf", "read_config_file"]

KEEP_SENT = 7 * 24 * 60 * 60  # seconds: how long "did it go out?" has an answer


class ExtsmailConf(_Frozen):
    """The extsmail conf file (extsmail.conf(5)).

    spool_dir and report_maildir are as written: a leading `~` is the
    caller's to expand.  notify_failure_interval is in seconds, 0 meaning
    never.  report_maildir is None when not given (the caller's default),
    "" for no reports.  max_age is in seconds, 0 meaning no limit.
    permanent_failures is False when the conf says "no": every failure is
    then retried, as the C extsmaild does.  network_events: whether
    extsmaild's daemon follows the network's events.  keep_sent is how
    long, in seconds, the state of a sent message is kept (extsmaild --status).
    """

    __slots__ = ("spool_dir", "notify_failure_interval", "notify_failure_cmd",
                 "notify_success_cmd", "report_maildir", "max_age", "permanent_failures",
                 "network_events", "keep_sent")
    spool_dir: str
    notify_failure_interval: int
    notify_failure_cmd: "str | None"
    notify_success_cmd: "str | None"
    report_maildir: "str | None"
    max_age: int
    permanent_failures: bool
    network_events: bool
    keep_sent: int

    def __init__(self, spool_dir: str, notify_failure_interval: int = 0,
                 notify_failure_cmd: "str | None" = None,
                 notify_success_cmd: "str | None" = None,
                 report_maildir: "str | None" = None, max_age: int = 0,
                 permanent_failures: bool = True, network_events: bool = True,
                 keep_sent: int = KEEP_SENT) -> None:
        self._set("spool_dir", spool_dir)
        self._set("notify_failure_interval", notify_failure_interval)
        self._set("notify_failure_cmd", notify_failure_cmd)
        self._set("notify_success_cmd", notify_success_cmd)
        self._set("report_maildir", report_maildir)
        self._set("max_age", max_age)
        self._set("permanent_failures", permanent_failures)
        self._set("network_events", network_events)
        self._set("keep_sent", keep_sent)


_CONF_TYPES = {
    "spool_dir": "STRING",
    "notify_failure_interval": "TIME",
    "notify_failure_cmd": "STRING",
    "notify_success_cmd": "STRING",
    "report_maildir": "STRING",
    "max_age": "TIME",
    "permanent_failures": "BOOLEAN",
    "network_events": "BOOLEAN",
    "keep_sent": "TIME",
}
# The values of a BOOLEAN key: a bare word or the same in double quotes.
_BOOLEANS = {"yes": True, "no": False}


def parse_extsmail_conf(data: "bytes | str", path: str) -> "ExtsmailConf":
    """Parse a conf file: a sequence of `KEY = VALUE`; ConfigError on any fault.

    Unlike the C extsmail, a key given twice is an error (it kept the last).
    """
    ts = TokenStream(tokenize(data, path), path)
    values: dict[str, str | int | bool] = {}
    lines: dict[str, int] = {}
    while not ts.at_eof():
        if ts.peek().kind == "ID" and _CONF_TYPES.get(str(ts.peek().value)) == "BOOLEAN":
            key, value = _boolean_assignment(ts)
        else:
            key, value = ts.assignment("a key")
        name = str(key.value)
        if name not in _CONF_TYPES:
            raise ts.error(key, f"unknown key '{shorten(name)}'")
        if name in values:
            raise ts.error(key, f"'{name}' already set at line {lines[name]}")
        if _CONF_TYPES[name] == "BOOLEAN":
            if value.value not in _BOOLEANS:
                shown = (f'"{shorten(str(value.value))}"' if value.kind == "STRING"
                         else describe(value))
                raise ts.error(key, f"'{name}' needs yes or no, not {shown}")
            values[name] = _BOOLEANS[str(value.value)]
            lines[name] = key.line
            continue
        ts.check_type(key, value, _CONF_TYPES[name])
        if name == "spool_dir" and value.value == "":
            raise ts.error(key, "spool_dir is empty")
        values[name] = value.value
        lines[name] = key.line
    if "spool_dir" not in values:
        raise ConfigError(path, 0, "spool_dir not set")
    return ExtsmailConf(**values)  # type: ignore[arg-type]


def _boolean_assignment(ts: TokenStream) -> "tuple[Token, Token]":
    """`KEY = yes|no`: a bare word is a value here (elsewhere only strings,
    times and numbers are)."""
    key = ts.next()
    ts.expect("EQUALS", f"'=' after '{key.value}'")
    value = ts.next()
    if value.kind not in ("ID", "STRING"):
        raise ts.error(key, f"'{key.value}' needs yes or no, not {describe(value)}")
    return key, value
