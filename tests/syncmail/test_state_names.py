"""The names of a source's state files (journal, lock, hooks' log): every
source name the config accepts gets names the file system takes, and the
names that always worked keep their names, so an upgrade finds its
journals."""

from __future__ import annotations

import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st
from syncmail_helpers import check_all_local, fill_server

from roammail.syncmail import cli as syncmail

SUFFIXES = (".journal", ".lock", ".hooks.log")


def configured(name: str) -> syncmail.Source:
    return syncmail.Source(name, "h", "Maildir", "/m", path="/c/syncmail.conf", line=1)


def test_names_that_always_worked_keep_their_names():
    for name in ("laptop", "a", "_x9", "a" * 200):
        for suffix in SUFFIXES:
            assert syncmail.state_name(configured(name), suffix) == name + suffix
    # The longest name whose journal (and lock) could be opened before.
    longest = "b" * (255 - len(".journal"))
    assert syncmail.state_name(configured(longest), ".journal") == longest + ".journal"
    assert syncmail.state_name(configured(longest), ".lock") == longest + ".lock"


def test_one_shot_names_are_unchanged():
    source = syncmail.Source("h:Maildir", "h", "Maildir", "/home/me/Mail")
    names = {syncmail.state_name(source, suffix) for suffix in SUFFIXES}
    assert {n.split(".", 1)[0] for n in names} == {"oneshot-" + syncmail._sha256_hex(
        b"h:Maildir\0/home/me/Mail")[:16]}


def test_a_long_name_gets_a_short_stable_hashed_name():
    name = "a" * 251
    journal = syncmail.state_name(configured(name), ".journal")
    assert journal == syncmail.state_name(configured(name), ".journal")
    assert journal.startswith("a" * syncmail.STATE_HINT_CHARS + "-")
    assert journal.endswith(".journal") and len(journal) < 100
    other = syncmail.state_name(configured("a" * 252), ".journal")
    assert other != journal


# Names as the config gives them, and names it does not give today
# (a "/", a leading dot, control characters, non-ASCII, undecodable bytes).
ANY_NAME = st.one_of(
    st.from_regex(r"[_a-zA-Z][_a-zA-Z0-9]{0,400}", fullmatch=True),
    st.text(min_size=1, max_size=300),
    st.binary(min_size=1, max_size=300).map(os.fsdecode),
    st.sampled_from([".", "..", "/", "a/b", ".hidden", "-n", "\n", "é" * 200, "\udcff" * 90]),
)


@settings(max_examples=300)
@given(ANY_NAME, st.sampled_from(SUFFIXES))
def test_every_name_gives_a_file_name_the_file_system_takes(name, suffix):
    got = syncmail.state_name(configured(name), suffix)
    raw = os.fsencode(got)
    assert len(raw) <= syncmail.NAME_MAX
    assert b"/" not in raw and b"\0" not in raw
    assert not got.startswith((".", "-")) and got.isprintable()
    assert got.endswith(suffix)


@settings(max_examples=200)
@given(st.lists(ANY_NAME, min_size=2, max_size=2, unique=True))
def test_two_names_never_share_a_state_file(names):
    first, second = (syncmail.state_name(configured(n), ".journal") for n in names)
    assert first != second


def test_a_251_character_source_syncs_and_keeps_its_journal(world):
    """Its lock once was an internal error (exit 70), and names of 248-250
    characters could never read their journal (exit 1)."""
    name = "a" * 251
    made = fill_server(world, 3, sizes=[10, 20, 30])
    world.write_config(f'source {name} {{\n  host = "testhost"\n  remote = "{world.server}"\n'
                       f'  local = "{world.local}"\n}}\n')
    dry = world.run("-n")
    assert dry.returncode == 0, dry.stderr
    result = world.run()
    assert result.returncode == 0, result.stderr
    check_all_local(world, made)
    assert world.server_new() == set()
    state = world.home / ".local" / "state" / "roammail" / "syncmail"
    lock = state / syncmail.state_name(configured(name), ".lock")
    assert stat.S_ISREG(lock.stat().st_mode)
    assert all(len(os.fsencode(p.name)) <= 255 for p in state.iterdir())


def test_an_unusable_state_directory_is_one_line_not_an_internal_error(world, tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    world.basic_config()
    result = world.run("-n", XDG_STATE_HOME=str(tmp_path / "not-a-dir"))
    assert result.returncode == 74, result.stderr
    assert result.stderr.startswith("syncmail: cannot open ")
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
