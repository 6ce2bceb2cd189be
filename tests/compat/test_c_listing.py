"""Messages the C extsmail queued, listed by ours: its spool files (named
`XXXX` and six mkstemp letters, written in place) get short IDs like ours,
their headers and envelope are shown, and every queue command takes the
IDs.  The C extsmail itself has no listing."""

from __future__ import annotations

import pytest

from compat.test_c_spool import World, world  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow


def test_a_spool_written_by_the_c_extsmail_is_listed(world: World) -> None:  # noqa: F811
    c_message = (b"To: Ann <ann@example.org>\n"
                 b"Subject: =?ISO-8859-1?Q?caf=E9?= from C\n\nbody\n")
    our_message = b"From: Me <me@example.org>\nTo: bob@example.org\nSubject: ours\n\nbody\n"
    c_file = world.enqueue("c", [b"-oi", b"-f", b"me@home", b"--", b"ann@example.org"],
                           c_message)
    ours = world.enqueue("ours", [b"-oi", b"-t"], our_message)
    assert c_file.name.startswith("XXXX")
    res = world.ours("extsmaild", "--list")
    assert (res.returncode, res.stderr) == (0, b"")
    text = res.stdout.decode()
    entries = {line.split()[-1]: line.split()[0] for line in text.splitlines()
               if " file " in line}
    assert set(entries) == {c_file.name, ours.name}
    c_block = text.split(f"file {c_file.name}\n", 1)[1].split("\n  Arguments:", 1)[0]
    assert c_block.splitlines() == [
        "  From: me@home (envelope sender, no From: header)",
        "  To: Ann <ann@example.org>",
        "  Subject: café from C",
        "  Recipients: ann@example.org"]
    res = world.ours("extsmail", "-bp")
    assert (res.returncode, res.stderr) == (0, b"")
    rows = [line.split() for line in res.stdout.decode().splitlines()
            if line[:1].isalnum()]
    assert [(row[0], row[1], row[-1]) for row in rows] == [
        (entries[c_file.name], str(len(c_message)), "me@home"),
        (entries[ours.name], str(len(our_message)), "me@example.org")]
    shown = world.ours("extsmaild", "--show", entries[c_file.name])
    assert shown.returncode == 0 and shown.stdout.endswith(b"from C\n\nbody\n")
    assert world.ours("extsmaild", "--delete", entries[c_file.name]).returncode == 0
    assert world.home.queued() == [ours]
