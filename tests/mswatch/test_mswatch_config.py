"""~/.mswatchrc: the parser (fast) and every malformed case through the
installed mswatch (file:line, exit 78)."""

from __future__ import annotations

import subprocess

import pytest

from roammail.core.errors import ConfigError
from roammail.mswatch.config import parse_mswatchrc, tokenize

GOOD = """\
# the reference example
base_delay 10            # s from the first queued change to the sync
inter_delay 60           # s at least between syncs of a mailbox
inter_delay 30 lists     # per-mailbox override
max_delay 10m
poll_period 1d
ignore Trash Spam
sync mbsync -q
mailbox_prefix work :
store local { watch watch_maildirs }
store work
{
    watch ssh -o BatchMode=yes mail.example inputkill watch_maildirs
}
"""


def test_reference_example() -> None:
    c = parse_mswatchrc(GOOD, "rc")
    t = c.timing
    assert (t.base_delay, t.inter_delay, t.max_delay, t.poll_period) == (10, 60, 600, 86400)
    assert t.inter("lists") == 30 and t.inter("INBOX") == 60
    assert t.ignore == {"Trash", "Spam"}
    assert c.sync == ("mbsync", "-q")
    assert (c.prefix, c.separator) == ("work", ":")
    assert [s.name for s in c.stores] == ["local", "work"]
    assert c.stores[1].watch[:3] == ("ssh", "-o", "BatchMode=yes")
    assert c.store_pair == "local-work"


def test_defaults_and_units() -> None:
    c = parse_mswatchrc("sync s\nbase_delay 30s\nstore a{watch x}\nstore b {watch y}", "rc")
    t = c.timing
    assert (t.base_delay, t.inter_delay, t.max_delay, t.poll_period) == (30, 60, 600, 86400)
    assert c.prefix is None
    assert c.stores[0].watch == ("x",)
    assert c.network_events


def test_network_events() -> None:
    rc = "sync s\nnetwork_events VALUE\nstore a { watch x }\nstore b { watch y }\n"
    assert not parse_mswatchrc(rc.replace("VALUE", "no"), "rc").network_events
    assert parse_mswatchrc(rc.replace("VALUE", "yes"), "rc").network_events


def test_double_quotes() -> None:
    words = [t.text for t in tokenize('a "b c" "" "x\\"y" "\\\\" d"e f"g #c', "rc")
             if t.kind == "word"]
    assert words == ["a", "b c", "", 'x"y', "\\", "de fg"]
    c = parse_mswatchrc('sync mbsync "" \nstore a { watch "my watcher" -m "/x y" }\n'
                        'store b { watch w "}" }\n', "rc")
    assert c.sync == ("mbsync", "")
    assert c.stores[0].watch == ("my watcher", "-m", "/x y")
    assert c.stores[1].watch == ("w", "}")


BAD = [
    ("sync s\nfrobnicate 3\nstore a { watch x }\nstore b { watch y }\n", 2, "unknown keyword"),
    ("sync s\nstore a { watch x }\n", 2, "exactly two stores"),
    ("sync s\nstore a { watch x }\nstore b { watch y }\nstore c { watch z }\n", 4,
     "exactly two stores"),
    ("sync s\nstore a { watch x }\nstore b\n  watch y }\n", 4, "expected '{'"),
    ("sync s\nstore a { watch x }\nstore b { watch y\n\n", 3, "missing '}'"),
    ("sync s\nbase_delay ten\nstore a { watch x }\nstore b { watch y }\n", 2, "bad duration"),
    ("sync s\nbase_delay -1\nstore a { watch x }\nstore b { watch y }\n", 2, "bad duration"),
    ("sync s\nmax_delay 5x\nstore a { watch x }\nstore b { watch y }\n", 2, "bad duration"),
    ("sync s\nbase_delay\nstore a { watch x }\nstore b { watch y }\n", 2, "one duration"),
    ("sync s\nstore a { watch x }\nstore a { watch y }\n", 3,
     "exactly two stores are needed, found 1; store 'a' is defined twice"),
    ("sync s\nstore a { }\nstore b { watch y }\n", 2, "no 'watch'"),
    ("sync s\nstore a { watch x }\nstore b { listen y }\n", 3, "expected 'watch'"),
    ('sync "s\nstore a { watch x }\nstore b { watch y }\n', 1, "unterminated"),
    ("store a { watch x }\nstore b { watch y }\n", 2, "no 'sync'"),
    ("sync s\nmailbox_prefix\nstore a { watch x }\nstore b { watch y }\n", 2, "mailbox_prefix"),
    ("sync s\nnetwork_events off\nstore a { watch x }\nstore b { watch y }\n", 2,
     "network_events takes yes or no"),
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_malformed_parser(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mswatchrc(text, "rc")
    assert err.value.line == line
    assert words in err.value.message


@pytest.mark.parametrize("text,line,words", BAD)
def test_malformed_installed(installed, tmp_path, text: str, line: int, words: str) -> None:
    rc = tmp_path / "rc"
    rc.write_text(text)
    res = subprocess.run([installed.tool("mswatch"), "-f", "-c", str(rc),
                          "--pid-file", str(tmp_path / "pid")],
                         env=installed.env(HOME=str(tmp_path)), capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 78
    assert res.stderr.startswith("mswatch: ")
    assert f"({rc}:{line})" in res.stderr and words in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_missing_config_is_78(installed, tmp_path) -> None:
    res = subprocess.run([installed.tool("mswatch"), "-f", "--pid-file", str(tmp_path / "p")],
                         env=installed.env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path)),
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 78 and ".mswatchrc" in res.stderr


@pytest.mark.parametrize("flag", ["-?", "--help", "-h"])
def test_help(installed, flag: str) -> None:
    res = subprocess.run([installed.tool("mswatch"), flag], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0 and "Usage:" in res.stdout and "--sync-now" in res.stdout


def test_version(installed) -> None:
    res = subprocess.run([installed.tool("mswatch"), "-V"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0 and res.stdout.startswith("mswatch (roammail)")
