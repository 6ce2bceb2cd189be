"""Rules route by List-Id and From; discard and archive."""

from __future__ import annotations

RULES = r'''
    match header "^List-Id:.*<dev\\.lists\\.example\\.org>" folder "lists.dev"
    match header "^From:.*nagios@monitor\\.example" discard
    match header "^From:.*boss@example\\.org" archive "ARCHIVE"
    match header "^Subject:.*keep me" inbox
'''


def test_rules_route_discard_archive(world, tmp_path):
    archive = tmp_path / "archive"
    world.basic_config(RULES.replace("ARCHIVE", str(archive)))
    msgs = {
        "1.list.host": b"From: someone@x\nList-Id: Dev list <dev.lists.example.org>\n\nbody\n",
        "2.nagios.host": b"From: Nagios <nagios@monitor.example>\nSubject: PROBLEM\n\nx\n",
        "3.boss.host": b"From: The Boss <boss@example.org>\nSubject: raise\n\nyes\n",
        "4.plain.host": b"From: friend@example.net\nSubject: hi\n\nhello\n",
        "5.folded.host": b"Subject: x\nList-Id: folded\n <dev.lists.example.org>\n\nb\n",
        "6.listy-body.host": b"Subject: hi\n\nList-Id: <dev.lists.example.org>\n",
    }
    for name, data in msgs.items():
        world.deliver_remote(name, data, 1_700_000_000)
    result = world.run("-v")
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set()
    dev = world.local / ".lists.dev"
    assert set(world.local_messages(dev)) == {"1.list.host", "5.folded.host"}
    assert set(world.local_messages()) == {"3.boss.host", "4.plain.host", "6.listy-body.host"}
    assert set(world.local_messages(archive)) == {"3.boss.host"}
    assert (archive / "new" / "3.boss.host").read_bytes() == msgs["3.boss.host"]
    assert "discarded 2.nagios.host" in result.stderr


def test_name_in_a_rule_folder_counts_as_present(world):
    world.basic_config(RULES.replace("ARCHIVE", "/nonexistent-never-used"))
    dev = world.local / ".lists.dev"
    for sub in ("cur", "new", "tmp"):
        (dev / sub).mkdir(parents=True)
    (dev / "cur" / "1.dup.host:2,S").write_bytes(b"old\n")
    world.deliver_remote("1.dup.host", b"From: a\n\nnew\n")
    result = world.run()
    assert result.returncode == 1
    assert "1.dup.host left on the server" in result.stderr
    assert (dev / "cur" / "1.dup.host:2,S").read_bytes() == b"old\n"
