"""Files mswatch 1.2 accepts: braces inside a word and a store name given
twice (the parser, then the installed mswatch); and a watch command that is
not installed on the far side of ssh (the real test sshd)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT, WAIT_TIMEOUT

from peers.maildirs import make_maildir
from roammail.core.errors import ConfigError
from roammail.mswatch.cli import Watcher
from roammail.mswatch.config import Store, parse_mswatchrc

# --- braces -------------------------------------------------------------------


def test_a_brace_inside_a_word_is_part_of_it() -> None:
    c = parse_mswatchrc("sync echo a{b}\n"
                        "store a { watch ssh h x{1,2} }\n"
                        "store b\n{\n  watch w {a} a{ }b\n}\n", "rc")
    assert c.sync == ("echo", "a{b}")
    assert c.stores[0].watch == ("ssh", "h", "x{1,2}")
    assert c.stores[1].watch == ("w", "{a}", "a{", "}b")


def test_an_unpaired_brace_inside_a_word_is_part_of_it() -> None:
    # Only a brace that stands alone is one: `x}` is a word, the `}` after it
    # closes the block.
    c = parse_mswatchrc("sync echo a{b\nstore a { watch x}\n}\nstore b { watch y }\n", "rc")
    assert c.sync == ("echo", "a{b")
    assert c.stores[0].watch == ("x}",)


def test_braces_against_a_word_still_delimit_a_store() -> None:
    # Not read by the original, read here as before: braces against a word.
    c = parse_mswatchrc("sync s\nstore a{watch x}\nstore b {watch y{1,2}}\n", "rc")
    assert [(s.name, s.watch) for s in c.stores] == [("a", ("x",)), ("b", ("y{1,2}",))]
    c = parse_mswatchrc("sync echo a{b}\nstore a{watch x}\nstore b { watch y }\n", "rc")
    assert c.sync == ("echo", "a{b}") and c.stores[0].watch == ("x",)


def test_an_error_is_the_one_further_down() -> None:
    with pytest.raises(ConfigError) as err:
        parse_mswatchrc("sync echo a{b\nstore a { watch x }\nstore b { watch y }\nfoo\n", "rc")
    assert err.value.line == 4 and "unknown keyword 'foo'" in err.value.message


# --- a store name given twice --------------------------------------------------

TWICE = """\
sync s
store a { watch first }
store b { watch other }
store a
{
    watch second
}
"""


def test_a_store_given_twice_takes_the_later_definition() -> None:
    c = parse_mswatchrc(TWICE, "rc")
    assert [(s.name, s.watch) for s in c.stores] == [("a", ("second",)), ("b", ("other",))]
    assert c.store_pair == "a-b"
    assert c.warnings == ((4, "store 'a' is defined twice: this definition replaces "
                              "the one of line 2"),)


def test_no_warning_without_a_store_given_twice() -> None:
    c = parse_mswatchrc(TWICE.replace("store a\n{\n    watch second\n}\n", ""), "rc")
    assert c.warnings == () and [s.name for s in c.stores] == ["a", "b"]


def test_three_stores_are_still_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_mswatchrc(TWICE.replace("store a\n", "store c\n"), "rc")
    assert "found a third" in err.value.message


def watcher(tmp_path: Path, name: str) -> Path:
    """A watcher that notes it ran in NAME.ran, says ready, then waits."""
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\ntouch "{tmp_path}/{name}.ran"\necho\nexec sleep 600\n')
    script.chmod(0o755)
    return script


def test_installed_mswatch_warns_once_and_runs_the_later_store(tmp_path, mswatch_run,
                                                                recorder) -> None:
    script, _ = recorder()
    text = TWICE.replace("sync s", f"sync {script}")
    for name in ("first", "second", "other"):
        text = text.replace(f"watch {name}", f"watch {watcher(tmp_path, name)}")
    run = mswatch_run(text)
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    assert run.stop() == 0
    rc = run.argv[run.argv.index("-c") + 1]
    warnings = [ln for ln in run.stderr().splitlines() if "defined twice" in ln]
    assert warnings == [f"mswatch: warning: store 'a' is defined twice: this definition "
                        f"replaces the one of line 2 ({rc}:4)"]
    assert (tmp_path / "second.ran").exists() and (tmp_path / "other.ran").exists()
    assert not (tmp_path / "first.ran").exists()


def test_installed_mswatch_refuses_a_lone_store_given_twice(installed, tmp_path) -> None:
    rc = tmp_path / "rc"
    rc.write_text("sync s\nstore a { watch x }\nstore a { watch y }\n")
    res = subprocess.run([installed.tool("mswatch"), "-f", "-c", str(rc),
                          "--pid-file", str(tmp_path / "pid")],
                         env=installed.env(HOME=str(tmp_path)), capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 78
    assert res.stderr == (f"mswatch: exactly two stores are needed, found 1; store 'a' is "
                          f"defined twice ({rc}:3)\n")


# --- a watch command missing on the far side --------------------------------------

NOT_FOUND = "store remote: watch command not found on the remote side (exit 127)"


def wait_for(predicate, what: str, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def test_the_restart_backoff_stops_at_max_delay() -> None:
    # A watcher that keeps failing (not installed on the far side, say) is
    # retried every max_delay at the longest, not ever more rarely.
    w = Watcher(Store("remote", ("w",), 1), None, None, max_delay=5)
    delays = []
    for _ in range(6):
        w.schedule_restart(100.0)
        delays.append(w.restart_at - 100.0)
    assert delays == [1, 2, 4, 5, 5, 5]


@pytest.mark.slow
def test_a_watch_command_missing_remotely_is_told_once(tmp_path, sshd, installed,
                                                      mswatch_run, recorder) -> None:
    script, _ = recorder()
    local = make_maildir(tmp_path / "A")
    rbin = tmp_path / "rbin"  # first on the remote PATH; empty for now
    rbin.mkdir()
    stop = tmp_path / "stop"
    ssh = [*sshd.ssh_command(remote_path=[rbin]), sshd.host_alias, "remote-watcher"]
    logins = sshd.count_accepted()
    run = mswatch_run(f"""\
sync {script}
store local {{ watch watch-maildirs -m {local} }}
store remote {{ watch {' '.join(ssh)} }}
""")
    text = run.wait_log(NOT_FOUND)
    line = next(ln for ln in text.splitlines() if NOT_FOUND in ln)
    assert line.endswith(": is roammail installed there, and on the PATH of a "
                         "non-interactive ssh session?")
    # Retried quietly: two more attempts (after 1 s and 2 s; the far side's
    # shell complains in the log each time), not a word more from mswatch.
    wait_for(lambda: sshd.count_accepted() >= logins + 3, "third login")
    run.wait_log("remote-watcher: not found", count=3)
    time.sleep(0.5)  # for a line mswatch would write on the third exit
    text = run.text()
    assert text.count(NOT_FOUND) == 1
    assert "store remote: watcher ended" not in text
    # Installed: the watcher comes up, then ends and is gone again: told anew.
    watcher_script = rbin / "remote-watcher"
    watcher_script.write_text(f'#!/bin/sh\necho\nwhile [ ! -e {stop} ]; do sleep 0.1; done\n'
                              f'rm -f "$0"\nexit 1\n')
    watcher_script.chmod(0o755)
    run.wait_log("store remote: watcher ready")
    stop.touch()
    text = run.wait_log(NOT_FOUND, count=2)
    assert text.count("store remote: watcher ended (exit status 1)") == 1
    assert run.stop() == 0
