"""Unit tests of watch-imap's configuration: its own file, mbsync's file,
and how an account name is resolved from the two."""

from __future__ import annotations

from pathlib import Path

import pytest

from roammail.core.errors import ConfigError
from roammail.watch_imap.cli import mbsync_decodes
from roammail.watch_imap.config import (
    ChannelView,
    parse_watch_imap_conf,
    patterns_select,
    resolve_account,
)
from roammail.watch_imap.mbsyncrc import parse_mbsyncrc, split_words
from roammail.watch_imap.watch import MailboxNames, slept_for

MBSYNCRC = """\
# mail
IMAPAccount office
Host imap.office.example
Port 10993
User "me@office.example"
PassCmd "+pass show \\"office mail\\""
SSLType IMAPS
CertificateFile ~/certs/office.pem
CertificateFile /etc/ssl/extra.pem
AuthMechs LOGIN
Timeout 0

IMAPStore office-remote
Account office
Path INBOX.
PathDelimiter .

MaildirStore office-local
Path ~/Mail/office/
Inbox ~/Mail/office/INBOX

Channel office
Far :office-remote:
Near :office-local:

IMAPStore home-remote
Host imaps:mail.home.example
User me

IMAPStore tunnel-remote
Tunnel "ssh -q mail.home.example /usr/lib/dovecot/imap"

Channel arch
Far :home-remote:Archive/
Near :office-local:
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    return tmp_path


# ------------------------------------------------------------ mbsync's file


def test_mbsync_words() -> None:
    assert split_words('PassCmd "pass show \\"a b\\"" x', "rc", 1) == \
        ["PassCmd", 'pass show "a b"', "x"]
    assert split_words("Path ~/a\\ b/", "rc", 1) == ["Path", "~/a b/"]
    with pytest.raises(ConfigError) as info:
        split_words('Pass "open', "rc", 7)
    assert (info.value.line, "unterminated" in info.value.message) == (7, True)


def test_mbsync_sections_end_at_an_empty_line() -> None:
    mb = parse_mbsyncrc(MBSYNCRC, "rc")
    assert [(s.kind, s.name) for s in mb.sections] == [
        ("account", "office"), ("imapstore", "office-remote"), ("maildirstore", "office-local"),
        ("channel", "office"), ("imapstore", "home-remote"), ("imapstore", "tunnel-remote"),
        ("channel", "arch")]
    office = mb.find("account", "office")
    assert [o.args for o in office.all("certificatefile")] == [("~/certs/office.pem",),
                                                              ("/etc/ssl/extra.pem",)]
    assert mb.find("imapstore", "office-remote").get("path").line == 15


def test_account_from_mbsync_imapaccount(home: Path) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC)
    a = resolve_account("office", None, rc)
    assert (a.host, a.port, a.tls, a.user) == ("imap.office.example", 10993, "imaps",
                                               "me@office.example")
    assert a.pass_cmd == 'pass show "office mail"'  # mbsync's "+" dropped
    assert a.ca_files == (f"{home}/certs/office.pem", "/etc/ssl/extra.pem")
    assert a.auth == ("LOGIN",)
    assert a.timeout == 20.0  # mbsync's 0 (no limit) is not taken: links must be checked
    assert (a.path, a.delimiter) == ("INBOX.", ".")  # from the one store using it
    assert a.where == f"{rc}:2"


def test_account_from_mbsync_store_and_channel(home: Path) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC)
    home_store = resolve_account("home-remote", None, rc)
    assert (home_store.host, home_store.tls, home_store.port) == ("mail.home.example",
                                                                  "imaps", 993)
    tunnel = resolve_account("tunnel-remote", None, rc)
    assert (tunnel.tunnel, tunnel.tls) == ("ssh -q mail.home.example /usr/lib/dovecot/imap",
                                           "none")
    channel = resolve_account("arch", None, rc)
    # The channel's box is a prefix in mbsync's notation, not the store's Path.
    assert (channel.host, channel.path) == ("mail.home.example", None)
    assert channel.channel == ChannelView("arch", "Archive/", "", True, ())
    assert resolve_account("home-remote", None, rc).channel is None
    office = resolve_account("office", None, rc)  # the IMAPAccount wins over the Channel
    assert office.where.endswith(":2")


def test_our_block_names_mbsync_account_and_overrides(home: Path) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC)
    conf = write(home, "watch-imap.conf", """
account w {
    mbsync = "office"
    port = 993
    mode = "idle"
    idle = "INBOX"
    idle = "Lists/roam"
    poll = 1m
    max_idle = 2
}
""")
    a = resolve_account("w", conf, rc)
    assert (a.host, a.port, a.mode, a.idle, a.poll, a.max_idle) == (
        "imap.office.example", 993, "idle", ("INBOX", "Lists/roam"), 60.0, 2)
    assert a.where == f"{conf}:2"


def test_our_block_alone_defaults(home: Path) -> None:
    conf = write(home, "c", 'account a { host = "h" user = "u" pass = "p" }\n')
    a = resolve_account("a", conf, str(home / "missing"))
    assert (a.tls, a.port, a.mode, a.idle, a.keepalive, a.timeout) == (
        "imaps", 993, "auto", ("INBOX",), 120.0, 20.0)
    b = resolve_account("a", write(home, "d", 'account a { host = "h" user = "u" '
                                              'tls = "starttls" }'), "/nonexistent")
    assert (b.tls, b.port) == ("starttls", 143)
    assert a.network_events and b.network_events


def test_network_events_can_be_turned_off(home: Path) -> None:
    conf = write(home, "c", 'account a { host = "h" user = "u" network_events = "no" }\n')
    assert not resolve_account("a", conf, str(home / "missing")).network_events


@pytest.mark.parametrize("text,line,needle", [
    ('account a { host = "h" frob = "x" }', 1, "unknown key 'frob'"),
    ('account a {\n host = "h"\n host = "i" }', 3, "already set at line 2"),
    ('account a { port = "993" }', 1, "'port' needs a number"),
    ('account a { tls = "ssl" user = "u" host = "h" }', 1, "tls must be one of"),
    ('account a { host = "h" user = "u" port = 70000 }', 1, "not between 1 and 65535"),
    ('account a { host = "h" user = "u" keepalive = 30m }', 1, "keepalive must be"),
    ('account a {\n user = "u"\n}', 1, "neither a host nor a tunnel"),
    ('account a { host = "h" }', 1, "has no user"),
    ('account a { host = "h" user = "u" auth = "CRAM-MD5" }', 1, "none of CRAM-MD5"),
    ('account a { host = "h" user = "u"\n max_connections = 1 }', 2,
     "holds up to 2 connections"),
    ('account a { host = "h" user = "u" idle = "INBOX" idle = "Work"\n max_idle = 2\n'
     ' max_connections = 2 }', 3, "more than max_connections = 2"),
    ('account a { host = "h" user = "u" max_connections = 2000 }', 1,
     "max_connections must be between 0"),
    ('account a { host = "h" user = "u" }\naccount a { }', 2, "already defined at line 1"),
    ('account a { host = "h" user = "u" port = 99999999999999 }', 1, "too large"),
    ('account a { mbsync = "nope" }', 1, "no IMAPAccount, IMAPStore or Channel 'nope'"),
    ('account a {\n tunnel = "x"\n tls = "imaps" }', 3, "TLS through a tunnel"),
    ('account a { host = "h" user = "u" network_events = "sometimes" }', 1,
     "network_events must be yes or no"),
])
def test_config_errors_name_file_and_line(home: Path, text: str, line: int,
                                          needle: str) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC)
    conf = write(home, "c", text)
    with pytest.raises(ConfigError) as info:
        resolve_account("a", conf, rc)
    assert info.value.path == conf
    assert (info.value.line, needle in info.value.message) == (line, True), info.value


def test_oauth_from_mbsync_and_our_file(home: Path) -> None:
    rc = write(home, ".mbsyncrc", """\
IMAPAccount m365
Host outlook.office365.com
User me@example.org
PassCmd "pizauth show m365"
AuthMechs XOAUTH2
SSLType IMAPS
""")
    a = resolve_account("m365", None, rc)
    assert (a.auth, a.pass_cmd, a.oauth) == (("XOAUTH2",), "pizauth show m365", True)
    conf = write(home, "c", 'account g { host = "imap.gmail.com" user = "u"\n'
                            ' auth = "oauthbearer" pass_cmd = "oama access u"\n'
                            ' idle = "INBOX" idle = "Sent" max_connections = 15 }')
    g = resolve_account("g", conf, rc)
    assert (g.auth, g.oauth, g.connections_held()) == (("OAUTHBEARER",), True, 3)
    assert not resolve_account("a", write(home, "d", 'account a { host = "h" user = "u" }'),
                               rc).oauth


def test_unknown_account_names_both_files(home: Path) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC)
    conf = write(home, "c", 'account a { host = "h" user = "u" }')
    with pytest.raises(ConfigError) as info:
        resolve_account("zz", conf, rc)
    assert info.value.path == rc and conf in str(info.value) and "'zz'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve_account("zz", None, str(home / "none"))
    assert "does not exist" in str(info.value)


def test_explicit_config_must_exist(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_account("a", str(home / "nope.conf"), str(home / "rc"), config_explicit=True)
    assert "cannot read" in str(info.value)


def test_bad_mbsync_values_name_their_line(home: Path) -> None:
    rc = write(home, ".mbsyncrc", "IMAPAccount x\nHost h\nUser u\nSSLType TLS\n")
    with pytest.raises(ConfigError) as info:
        resolve_account("x", None, rc)
    assert (info.value.path, info.value.line) == (rc, 4)
    rc = write(home, "rc2", "IMAPStore s\nAccount missing\n")
    with pytest.raises(ConfigError) as info:
        resolve_account("s", None, rc)
    assert (info.value.line, "no IMAPAccount 'missing'" in info.value.message) == (2, True)


def test_tokens_numbers_only_where_asked() -> None:
    blocks = parse_watch_imap_conf('account a { port = 993 timeout = 5s }', "c")
    assert blocks["a"].settings["port"].value == 993
    assert blocks["a"].settings["timeout"].value == 5


# ------------------------------------------------------------ names


@pytest.mark.parametrize("server,mbsync", [
    ("INBOX", "INBOX"),
    ("Lists.foo", "Lists/foo"),
    ("With Space", "With Space"),
    ("Caf&AOk-", "Caf&AOk-"),
])
def test_names_dovecot_maildir_store(server: str, mbsync: str) -> None:
    names = MailboxNames("", ".", utf8=False)
    assert names.to_mbsync(server) == mbsync
    assert names.to_server(mbsync) == server


def test_names_decoded_for_a_decoding_mbsync() -> None:
    names = MailboxNames("", ".", utf8=True)
    assert names.to_mbsync("Caf&AOk-.Entw&APw-rfe") == "Café/Entwürfe"
    assert names.to_server("Café/Entwürfe") == "Caf&AOk-.Entw&APw-rfe"
    assert names.to_mbsync("Bad&-x&AOk") == "Bad&-x&AOk"  # not UTF-7: as it is


def test_names_with_a_prefix() -> None:
    names = MailboxNames("INBOX.", ".", utf8=False)
    assert names.to_mbsync("INBOX") == "INBOX"
    assert names.to_mbsync("INBOX.Sent") == "Sent"
    assert names.to_mbsync("INBOX.a.b") == "a/b"
    assert names.to_mbsync("Shared.x") is None  # outside the store: mbsync sees nothing
    assert names.to_server("a/b") == "INBOX.a.b"
    flat = MailboxNames("", None)
    assert flat.to_mbsync("a.b") == "a.b"


def test_channel_patterns_and_near_side(home: Path) -> None:
    rc = write(home, ".mbsyncrc", MBSYNCRC + """
Channel lists
Near :office-remote:Lists/
Far :office-local:
Pattern *
Patterns !old "a b"
""")
    view = resolve_account("lists", None, rc).channel
    assert view == ChannelView("lists", "", "Lists/", False, ("*", "!old", "a b"))
    assert view.box == "Lists/"


@pytest.mark.parametrize("patterns,name,selected", [
    (("*",), "a/b", True),
    (("%",), "a", True),
    (("%",), "a/b", False),
    (("%/%",), "a/b", False),  # mbsync's % stops before any "/": this matches nothing
    (("a/%",), "a/b", True),
    (("* !old",), "old", False),  # one word, not two patterns: matches nothing
    (("*", "!old"), "old", False),  # the last pattern that matches decides
    (("!old", "*"), "old", True),
    (("*", "!old"), "old/x", True),
    (("INBOX",), "INBOX", True),
    ((), "x", False),
])
def test_mbsync_patterns(patterns: tuple, name: str, selected: bool) -> None:
    assert patterns_select(patterns, name) is selected


def test_names_of_a_channel_with_a_box() -> None:
    # Far :store:Lists/ on a server whose delimiter is ".": the box is in
    # mbsync's notation, a prefix of the store's names, not a part of them.
    names = MailboxNames("", ".", channel=ChannelView("c", "Lists/", "", True, ("*", "!old")))
    assert names.to_mbsync("Lists.dev") == "dev"
    assert names.to_mbsync("Lists.dev.sub") == "dev/sub"
    assert names.to_server("dev/sub") == "Lists.dev.sub"
    for outside in ("INBOX", "Lists", "Listsfoo", "Other", "Lists.old"):
        assert names.to_mbsync(outside) is None, outside
    assert names.to_mbsync("Lists.old.x") == "old/x"
    # With the store's Path (in the server's notation) before it.
    names = MailboxNames("INBOX.", ".", channel=ChannelView("c", "Lists/", "", True, ("*",)))
    assert names.to_mbsync("INBOX.Lists.dev") == "dev"
    assert names.to_server("dev") == "INBOX.Lists.dev"
    # Without Patterns, the one mailbox of the channel.
    one = MailboxNames("", ".", channel=ChannelView("c", "Lists/dev", "", True, ()))
    assert one.to_mbsync("Lists.dev") == "Lists/dev"
    assert one.to_mbsync("Lists.dev.sub") is None and one.to_mbsync("INBOX") is None
    inbox = MailboxNames("", ".", channel=ChannelView("c", "", "", True, ()))
    assert inbox.to_mbsync("INBOX") == "INBOX" and inbox.to_mbsync("a") is None


def test_list_lines_as_mbsync_prints_them() -> None:
    assert ChannelView("c", "Lists/", "", True, ("*",)).list_line("dev") == "Lists/dev <=> dev"
    assert ChannelView("c", "", "x/", False, ("*",)).list_line("dev") == "dev <=> x/dev"
    assert ChannelView("c", "", "", True, ("*",)).list_line("dev") == "dev"
    assert ChannelView("c", "Lists/dev", "", True, ()).list_line("") == "Lists/dev <=> INBOX"


def test_mbsync_version_decides_decoding() -> None:
    assert not mbsync_decodes("isync 1.4.4\n")
    assert mbsync_decodes("isync 1.5.0\n")
    assert mbsync_decodes("isync 2.0\n")
    assert not mbsync_decodes("")


def test_slept_for() -> None:
    assert slept_for(10.0, 10.0) == 0.0
    assert slept_for(10.0, 70.5) == 60.5
    assert slept_for(10.0, 9.0) == 0.0  # clocks adjusted backwards: no sleep
