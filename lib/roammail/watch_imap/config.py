"""watch_imap/config.py: watch-imap's accounts, from its file or from ~/.mbsyncrc.

Owns the grammar of watch-imap.conf(5) and the resolution of an account
name into an `Account`: the block of that name in watch-imap's file; else
mbsync's IMAPAccount, IMAPStore or Channel of that name in ~/.mbsyncrc
(host, port, user, password command, tunnel, TLS, certificates, path,
delimiter, and a Channel's boxes and Patterns: the user writes nothing
twice).  A block may name its mbsync
account (`mbsync = "work"`) and add or override settings.

Grammar (the lexical rules of extsmail.conf(5), core/tokens.py's, plus bare
numbers):

    <file>     ::= "" | <account> <file>
    <account>  ::= "account" ID "{" <settings> "}"
    <settings> ::= "" | ID "=" (STRING | TIME | NUMBER) <settings>

Every error is ConfigError(path, line, message).  It never connects, and
runs no command (pass_cmd and user_cmd are run by watch-imap itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

from ..core import locations
from ..core.errors import ConfigError
from ..core.tokens import TokenStream, read_config_file, shorten, tokenize
from .mbsyncrc import MbsyncConfig, Section, read_mbsyncrc

TLS_MODES = ("imaps", "starttls", "none")
WATCH_MODES = ("auto", "notify", "idle")
NAME_STYLES = ("auto", "utf7", "utf8")
KNOWN_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")  # the secret is an access token

DEFAULT_TIMEOUT = 20.0    # s, mbsync's default Timeout
DEFAULT_KEEPALIVE = 120.0  # s between two proofs that a link is alive
MAX_KEEPALIVE = 29 * 60.0  # s: RFC 2177 wants IDLE renewed within 29 minutes
DEFAULT_POLL = 300.0      # s between two STATUS polls of unwatched folders
DEFAULT_MAX_IDLE = 4      # IDLE connections at most (without NOTIFY)
MAX_IDLE_LIMIT = 64
MAX_CONNECTIONS_LIMIT = 1000


@dataclass(frozen=True)
class ChannelView:
    """What an mbsync Channel makes of the folders of its IMAP store.

    far_box, near_box: the mailbox after `:store:` of each side, in
    mbsync's notation ("/" the hierarchy delimiter, whatever the server's),
    "" when there is none.  With `patterns` (its Patterns, in the order
    written) each box is a prefix and no part of the names: the channel's
    folders are the IMAP side's folders under its box whose rest matches
    the patterns, and that rest is their name (`mbsync CHANNEL:rest`).
    Without, the channel syncs one pair of mailboxes, the boxes (INBOX for
    none).  imap_far: the IMAP store is the Far side, else the Near one.
    """

    name: str
    far_box: str
    near_box: str
    imap_far: bool
    patterns: tuple

    @property
    def box(self) -> str:
        return self.far_box if self.imap_far else self.near_box

    def name_of(self, store_name: str) -> Optional[str]:
        """The channel's name of the IMAP store's folder `store_name` (as
        mbsync names it in the store); None when the channel leaves it."""
        if not self.patterns:
            return store_name if store_name == (self.box or "INBOX") else None
        if not store_name.startswith(self.box):
            return None
        rest = store_name[len(self.box):]
        return rest if rest and patterns_select(self.patterns, rest) else None

    def store_name_of(self, name: str) -> str:
        """The inverse of name_of()."""
        return self.box + name if self.patterns else name

    def list_line(self, name: str) -> str:
        """The line `mbsync -l CHANNEL` prints for its folder `name`."""
        if not self.patterns:
            return f"{self.far_box or 'INBOX'} <=> {self.near_box or 'INBOX'}"
        if self.far_box or self.near_box:
            return f"{self.far_box}{name} <=> {self.near_box}{name}"
        return name


def patterns_select(patterns: tuple, name: str) -> bool:
    """Do mbsync Patterns select `name`?  The last pattern that matches
    decides ("!" excludes); none matching excludes."""
    for pattern in reversed(patterns):
        exclude = pattern.startswith("!")
        if pattern_matches(pattern[1:] if exclude else pattern, name):
            return not exclude
    return False


def pattern_matches(pattern: str, name: str) -> bool:
    """mbsync's wildcards: `*` matches anything, `%` anything up to the
    hierarchy delimiter "/"; every other character itself."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(pattern_matches(rest, name[i:]) for i in range(len(name) + 1))
    if head == "%":
        for i in range(len(name) + 1):
            if name[i:i + 1] == "/":  # looked at first, as mbsync does: "%/%" matches nothing
                return False
            if pattern_matches(rest, name[i:]):
                return True
        return False
    return bool(name) and name[0] == head and pattern_matches(rest, name[1:])


@dataclass(frozen=True)
class Account:
    """One IMAP account to watch, every setting resolved."""

    name: str
    where: str                 # "FILE:LINE" of the definition (for messages)
    host: str
    port: int
    tls: str                   # imaps | starttls | none
    tunnel: Optional[str]      # a /bin/sh command line, or None
    user: Optional[str]
    user_cmd: Optional[str]    # a /bin/sh command line printing the user
    password: Optional[str]
    pass_cmd: Optional[str]    # a /bin/sh command line printing the password
    ca_files: tuple
    system_certificates: bool
    auth: tuple                # mechanisms allowed in order; () = PLAIN, else LOGIN
    timeout: float
    keepalive: float
    mode: str                  # auto | notify | idle
    idle: tuple                # folders (as mbsync names them) IDLEd on without NOTIFY
    max_idle: int
    poll: float                # s between STATUS polls; 0: never
    path: Optional[str]        # the store's Path (name prefix); None: NAMESPACE's
    use_namespace: bool
    delimiter: Optional[str]   # the server's hierarchy delimiter; None: the server's
    names: str                 # auto | utf7 | utf8 (how non-ASCII names are printed)
    channel: Optional[ChannelView] = None  # the mbsync Channel, when named by one
    network_events: bool = True  # act on the machine's network events (roaming)
    max_connections: int = 0   # the server's limit per account; 0: not known

    @property
    def oauth(self) -> bool:
        """Is the secret an access token (a mechanism allowed is OAuth)?"""
        return any(m in OAUTH_MECHANISMS for m in self.auth)

    def connections_held(self) -> int:
        """The most connections watch-imap holds at once: one with NOTIFY;
        without, one per folder IDLEd on (max_idle at most) and one more
        for polling the others."""
        return min(len(self.idle) or 1, self.max_idle) + 1


_DEFAULTS = dict(host="", port=0, tls="", tunnel=None, user=None, user_cmd=None,
                 password=None, pass_cmd=None, ca_files=(), system_certificates=True,
                 auth=(), timeout=DEFAULT_TIMEOUT, keepalive=DEFAULT_KEEPALIVE,
                 mode="auto", idle=("INBOX",), max_idle=DEFAULT_MAX_IDLE, poll=DEFAULT_POLL,
                 path=None, use_namespace=True, delimiter=None, names="auto")

# Keys of an account block: their token kind and the Account field they set.
_KEYS = {
    "host": "STRING", "port": "NUMBER", "tls": "STRING", "tunnel": "STRING",
    "user": "STRING", "user_cmd": "STRING", "pass": "STRING", "pass_cmd": "STRING",
    "ca_file": "STRING", "system_certificates": "STRING", "auth": "STRING",
    "timeout": "TIME", "keepalive": "TIME", "mode": "STRING", "idle": "STRING",
    "max_idle": "NUMBER", "poll": "TIME", "path": "STRING", "use_namespace": "STRING",
    "delimiter": "STRING", "names": "STRING", "mbsync": "STRING",
    "network_events": "STRING", "max_connections": "NUMBER",
}
_REPEATABLE = ("idle", "ca_file")


@dataclass(frozen=True)
class Setting:
    value: object
    line: int


@dataclass(frozen=True)
class Block:
    name: str
    line: int
    settings: dict  # key -> Setting; repeatable keys -> list of Setting


# ------------------------------------------------------------ the file


def parse_watch_imap_conf(data: bytes | str, path: str) -> dict:
    """The account blocks of a watch-imap.conf, by name."""
    ts = TokenStream(tokenize(data, path, numbers=True), path)
    blocks: dict[str, Block] = {}
    names: dict[str, int] = {}
    while not ts.at_eof():
        start, name = ts.named_block("account", names, "an account name after 'account'")
        settings: dict = {}
        seen: dict[str, int] = {}
        while ts.peek().kind != "RBRACE":
            key, value = ts.assignment("a key or '}'")
            key_name = ts.setting(key, value, _KEYS, seen, f"account '{name.value}'",
                                  tuple(_REPEATABLE))
            setting = Setting(value.value, key.line)
            if key_name in _REPEATABLE:
                settings.setdefault(key_name, []).append(setting)
            else:
                settings[key_name] = setting
        ts.next()
        blocks[str(name.value)] = Block(str(name.value), start.line, settings)
    return blocks


def default_config_path() -> str:
    return os.path.join(locations.xdg_config_home(), "roammail", "watch-imap.conf")


def default_mbsyncrc() -> str:
    """~/.mbsyncrc, else $XDG_CONFIG_HOME/isyncrc (mbsync 1.5), else ~/.mbsyncrc."""
    candidates = [locations.expand_home("~/.mbsyncrc"),
                  os.path.join(locations.xdg_config_home(), "isyncrc")]
    return locations.first_existing(candidates) or candidates[0]


# ------------------------------------------------------------ resolution


def resolve_account(name: str, config_path: Optional[str], mbsyncrc_path: str,
                    *, config_explicit: bool = False) -> Account:
    """The account `name`: watch-imap's block, else mbsync's section.

    config_path None or missing (and not explicit): only ~/.mbsyncrc is
    looked at.  ConfigError when the account is nowhere or is incomplete.
    """
    blocks: dict = {}
    conf_file = config_path or ""
    have_config = bool(conf_file) and (config_explicit or os.path.exists(conf_file))
    if have_config:
        blocks = parse_watch_imap_conf(read_config_file(conf_file), conf_file)
    block = blocks.get(name)
    values: dict = dict(_DEFAULTS)
    where_line: dict = {}  # field -> "file:line" of its value
    if block is not None:
        where = f"{conf_file}:{block.line}"
        mbsync_name = block.settings.get("mbsync")
        if mbsync_name is not None:
            found = _mbsync_values(read_mbsyncrc(mbsyncrc_path), str(mbsync_name.value))
            if found is None:
                raise ConfigError(conf_file, mbsync_name.line,
                                  f"no IMAPAccount, IMAPStore or Channel "
                                  f"'{mbsync_name.value}' in {mbsyncrc_path}")
            _merge(values, where_line, found)
        _merge(values, where_line, _block_values(block, conf_file))
    else:
        looked = f"not in {config_path}, and " if have_config else ""
        if not os.path.exists(mbsyncrc_path):
            raise ConfigError(mbsyncrc_path, 0, f"no account '{name}': {looked}this "
                                                "mbsync file does not exist")
        found = _mbsync_values(read_mbsyncrc(mbsyncrc_path), name)
        if found is None:
            raise ConfigError(mbsyncrc_path, 0, f"no account '{name}': {looked}no "
                                                f"IMAPAccount, IMAPStore or Channel '{name}' "
                                                "here")
        where = found["_where"][0]
        _merge(values, where_line, found)
    values.pop("_where", None)
    return _complete(Account(name=name, where=where, **values), where_line)


def _merge(values: dict, where_line: dict, new: dict) -> None:
    for key, (value, where) in new.items():
        if key == "_where":
            continue
        values[key] = value
        where_line[key] = where


def _block_values(block: Block, path: str) -> dict:
    out: dict = {}

    def at(setting: Setting) -> str:
        return f"{path}:{setting.line}"

    def error(setting: Setting, message: str) -> ConfigError:
        return ConfigError(path, setting.line, message)

    for key, setting in block.settings.items():
        if key == "mbsync":
            continue
        if key in _REPEATABLE:
            values = [str(s.value) for s in setting]
            if key == "idle":
                out["idle"] = (tuple(values), at(setting[0]))
            else:
                out["ca_files"] = (tuple(locations.expand_home(v) for v in values),
                                   at(setting[0]))
            continue
        value = setting.value
        if key == "pass":
            out["password"] = (str(value), at(setting))
        elif key in ("tls", "mode", "names"):
            allowed = {"tls": TLS_MODES, "mode": WATCH_MODES, "names": NAME_STYLES}[key]
            text = str(value).lower()
            if text not in allowed:
                raise error(setting, f"{key} must be one of {', '.join(allowed)}, "
                                     f"not '{shorten(str(value))}'")
            out[key] = (text, at(setting))
        elif key in ("system_certificates", "use_namespace", "network_events"):
            out[key] = (_yes_no(str(value), path, setting.line, key), at(setting))
        elif key == "auth":
            out["auth"] = (_mechanisms(str(value).split(), path, setting.line, "auth"),
                           at(setting))
        elif key in ("timeout", "keepalive", "poll"):
            out[key] = (float(value), at(setting))
        else:
            out[key] = (value, at(setting))
    return out


def _yes_no(text: str, path: str, line: int, what: str) -> bool:
    lowered = text.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ConfigError(path, line, f"{what} must be yes or no, not '{shorten(text)}'")


def _mechanisms(words: list, path: str, line: int, what: str) -> tuple:
    names = [w.upper() for w in words]
    if not names or "*" in names:
        return ()
    usable = tuple(n for n in names if n in KNOWN_MECHANISMS)
    if not usable:
        raise ConfigError(path, line, f"{what}: none of {' '.join(names)} is a mechanism "
                                      f"watch-imap has ({', '.join(KNOWN_MECHANISMS)})")
    return usable


def _complete(account: Account, where_line: dict) -> Account:
    """Defaults that depend on other settings, then the checks."""
    def fail(field_name: str, message: str) -> ConfigError:
        where = where_line.get(field_name, account.where)
        path, _, line = where.rpartition(":")
        return ConfigError(path, int(line) if line.isdigit() else 0, message)

    if account.tunnel and account.tls not in ("", "none"):
        raise fail("tls", f"account '{account.name}': TLS through a tunnel is not supported "
                          "(the tunnel is the secure link: tls = none)")
    tls = account.tls or ("none" if account.tunnel else "imaps")
    port = account.port or (993 if tls == "imaps" else 143)
    account = replace(account, tls=tls, port=port)
    if not account.tunnel and not account.host:
        raise fail("host", f"account '{account.name}' has neither a host nor a tunnel")
    if not 1 <= account.port <= 65535:
        raise fail("port", f"port {account.port} is not between 1 and 65535")
    if account.timeout <= 0:
        account = replace(account, timeout=DEFAULT_TIMEOUT)
    if account.keepalive < 1 or account.keepalive > MAX_KEEPALIVE:
        raise fail("keepalive", "keepalive must be between 1s and 29m (IDLE is renewed "
                                "that often, and RFC 2177 wants it within 29 minutes)")
    if not 1 <= account.max_idle <= MAX_IDLE_LIMIT:
        raise fail("max_idle", f"max_idle must be between 1 and {MAX_IDLE_LIMIT}")
    if not 0 <= account.max_connections <= MAX_CONNECTIONS_LIMIT:
        raise fail("max_connections",
                   f"max_connections must be between 0 (not known) and {MAX_CONNECTIONS_LIMIT}")
    if (account.max_connections and account.mode != "notify"
            and account.connections_held() > account.max_connections):
        raise fail("max_connections" if "max_connections" in where_line else "max_idle",
                   f"account '{account.name}': without NOTIFY watch-imap holds up to "
                   f"{account.connections_held()} connections (IDLE on "
                   f"{account.connections_held() - 1} folders, one more to poll), more "
                   f"than max_connections = {account.max_connections}: lower max_idle "
                   "or idle fewer folders")
    if account.delimiter is not None and len(account.delimiter) != 1:
        raise fail("delimiter", "delimiter must be one character")
    if not account.idle:
        account = replace(account, idle=("INBOX",))
    if not account.tunnel and not (account.user or account.user_cmd):
        raise fail("user", f"account '{account.name}' has no user (user or user_cmd; "
                           "only a tunnel may do without)")
    return account


# ------------------------------------------------------------ mbsync's sections


def _mbsync_values(mb: MbsyncConfig, name: str) -> Optional[dict]:
    """Settings from mbsync's IMAPAccount, IMAPStore or Channel `name`
    (tried in that order), each as (value, "file:line"); None if none is."""
    account = mb.find("account", name)
    store: Optional[Section] = None
    view: Optional[ChannelView] = None
    if account is None:
        store = mb.find("imapstore", name)
        if store is None:
            channel = mb.find("channel", name)
            if channel is None:
                return None
            store, view = _channel_store(mb, channel)
            if store is None:
                return None
        account_name = store.get("account")
        if account_name is not None and account_name.args:
            account = mb.find("account", account_name.args[0])
            if account is None:
                raise ConfigError(mb.path, account_name.line,
                                  f"IMAPStore {store.name}: no IMAPAccount "
                                  f"'{account_name.args[0]}'")
    else:
        users = [s for s in mb.of_kind("imapstore")
                 if (o := s.get("account")) is not None and o.args and o.args[0] == name]
        store = users[0] if len(users) == 1 else None
    out: dict = {}
    first = account or store
    assert first is not None
    out["_where"] = (f"{mb.path}:{first.line}", "")
    for section in (account, store):
        if section is not None:
            _connection_options(section, mb.path, out)
    if store is not None:
        _store_options(store, mb.path, out)
    if view is not None:
        channel = mb.find("channel", name)
        assert channel is not None  # the view was made from it
        out["channel"] = (view, f"{mb.path}:{channel.line}")
    return out


def _channel_store(mb: MbsyncConfig, channel: Section) -> tuple:
    """The IMAP store of a channel (its Far side, else its Near side) and
    the ChannelView of it; (None, None) when neither side is IMAP."""
    sides: dict = {}
    for side, keywords in (("far", ("far", "master")), ("near", ("near", "slave"))):
        options = [o for o in (channel.get(k) for k in keywords) if o is not None and o.args]
        if not options:
            continue
        option = max(options, key=lambda o: o.line)  # mbsync keeps the last
        spec = option.args[0]
        if not spec.startswith(":") or spec.count(":") < 2:
            raise ConfigError(mb.path, option.line,
                              f"Channel {channel.name}: {option.keyword} wants "
                              f":store:[mailbox], not '{shorten(spec)}'")
        store_name, _, box = spec[1:].partition(":")
        sides[side] = (mb.find("imapstore", store_name), box)
    patterns = tuple(word for option in channel.options
                     if option.keyword in ("pattern", "patterns") for word in option.args)
    for side in ("far", "near"):
        store = sides.get(side, (None, ""))[0]
        if store is not None:
            return store, ChannelView(channel.name, sides.get("far", (None, ""))[1],
                                      sides.get("near", (None, ""))[1], side == "far",
                                      patterns)
    return None, None


def _connection_options(section: Section, path: str, out: dict) -> None:
    def at(option) -> str:
        return f"{path}:{option.line}"

    def arg(option) -> str:
        if not option.args:
            raise ConfigError(path, option.line, f"{option.keyword} needs a value")
        return " ".join(option.args)

    for option in section.options:
        key = option.keyword
        if key == "host":
            host = arg(option)
            if host.lower().startswith("imaps:"):  # isync 1.0's way to ask for IMAPS
                out["tls"] = ("imaps", at(option))
                host = host[6:]
            out["host"] = (host, at(option))
        elif key == "port":
            text = arg(option)
            if not text.isdigit() or len(text) > 5:
                raise ConfigError(path, option.line, f"Port '{shorten(text)}' is not a number")
            out["port"] = (int(text), at(option))
        elif key == "timeout":
            text = arg(option)
            if not text.isdigit() or len(text) > 9:
                raise ConfigError(path, option.line,
                                  f"Timeout '{shorten(text)}' is not a number of seconds")
            out["timeout"] = (float(text), at(option))
        elif key in ("user", "pass"):
            out["user" if key == "user" else "password"] = (arg(option), at(option))
        elif key in ("usercmd", "passcmd"):
            command = arg(option)
            if command.startswith("+"):  # "+": it talks to the terminal; so be it
                command = command[1:]
            out["user_cmd" if key == "usercmd" else "pass_cmd"] = (command, at(option))
        elif key == "tunnel":
            out["tunnel"] = (arg(option), at(option))
        elif key == "authmechs":
            out["auth"] = (_mechanisms(list(option.args), path, option.line, "AuthMechs"),
                           at(option))
        elif key == "ssltype":
            text = arg(option).lower()
            if text not in TLS_MODES:
                raise ConfigError(path, option.line, f"SSLType must be None, STARTTLS or "
                                                     f"IMAPS, not '{shorten(arg(option))}'")
            out["tls"] = (text, at(option))
        elif key == "useimaps":  # isync 1.0's name
            if _yes_no(arg(option), path, option.line, "UseIMAPS"):
                out["tls"] = ("imaps", at(option))
        elif key == "systemcertificates":
            out["system_certificates"] = (_yes_no(arg(option), path, option.line,
                                                  "SystemCertificates"), at(option))
        elif key == "certificatefile":
            previous = out.get("ca_files", ((), ""))[0]
            out["ca_files"] = (previous + (locations.expand_home(arg(option)),), at(option))
    if "tunnel" in out and "tls" not in out:
        out["tls"] = ("none", out["tunnel"][1])  # mbsync's default with a tunnel
    elif "tls" not in out and ("host" in out):
        out["tls"] = ("starttls", out["host"][1])  # mbsync's default otherwise


def _store_options(store: Section, path: str, out: dict) -> None:
    for option in store.options:
        key = option.keyword
        where = f"{path}:{option.line}"
        if key == "path":
            out["path"] = (" ".join(option.args), where)
        elif key == "usenamespace" and option.args:
            out["use_namespace"] = (_yes_no(option.args[0], path, option.line,
                                            "UseNamespace"), where)
        elif key == "pathdelimiter" and option.args:
            out["delimiter"] = (option.args[0], where)
