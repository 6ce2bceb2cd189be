"""Black-box: folders created, removed and renamed while watch-maildirs
runs are followed, as the original watch_maildirs follows them (or, with
--exit-on-new-folder, make it exit 2, as the original's page documents);
the base maildir moved or removed makes it exit 2."""

from __future__ import annotations

import os
import shutil
import time

from peers.maildirs import add_message, folder_path, make_maildir


def test_folder_created_is_printed_and_then_watched(watcher, maildir):
    tool = watcher(maildir)
    tool.ready()
    make_maildir(maildir, ["lists.roam"])
    assert "lists.roam" in tool.expect(["lists.roam"])
    time.sleep(0.1)
    add_message(maildir, "lists.roam")
    assert tool.expect(["lists.roam"]) == ["lists.roam"]


def test_folder_whose_subdirectories_come_later_is_still_watched(watcher, maildir):
    # mbsync and maildrop make the folder directory first, cur/new/tmp after.
    tool = watcher(maildir)
    tool.ready()
    folder = maildir / ".late"
    folder.mkdir()
    time.sleep(0.2)
    assert tool.lines_for(0.1) == []  # not a maildir yet: nothing to sync
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir()
        time.sleep(0.05)
    assert "late" in tool.expect(["late"])
    time.sleep(0.1)
    add_message(maildir, "late")
    assert tool.expect(["late"]) == ["late"]


def test_folder_made_in_a_hurry_is_still_watched(watcher, maildir):
    # The race: directory and subdirectories appear while the tool is
    # placing its watches on the directory; a message follows at once.
    tool = watcher(maildir)
    tool.ready()
    for i in range(20):
        folder = maildir / f".quick{i}"
        folder.mkdir()
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir()
        add_message(maildir, f"quick{i}")
    tool.expect([f"quick{i}" for i in range(20)])
    time.sleep(0.1)
    for i in range(20):
        add_message(maildir, f"quick{i}")
    tool.expect([f"quick{i}" for i in range(20)])


def test_folder_removed_is_printed(watcher, maildir):
    tool = watcher(maildir)
    tool.ready()
    shutil.rmtree(folder_path(maildir, "Sent"))
    assert "Sent" in tool.expect(["Sent"])
    assert tool.proc.poll() is None


def test_folder_renamed_prints_both_names_and_follows_the_new_one(watcher, maildir):
    tool = watcher(maildir)
    tool.ready()
    os.rename(folder_path(maildir, "a.b"), folder_path(maildir, "a.c"))
    assert set(tool.expect(["a.b", "a.c"])) == {"a.b", "a.c"}
    time.sleep(0.1)
    add_message(maildir, "a.c")
    assert tool.expect(["a.c"]) == ["a.c"]


def test_folder_moved_out_and_back_in(watcher, maildir, tmp_path):
    tool = watcher(maildir)
    tool.ready()
    outside = tmp_path / "parked"
    os.rename(folder_path(maildir, "Sent"), outside)
    assert "Sent" in tool.expect(["Sent"])
    time.sleep(0.1)
    (outside / "new" / "while-away").write_bytes(b"x\n")  # no longer ours
    os.rename(outside, folder_path(maildir, "Sent"))
    assert "Sent" in tool.expect(["Sent"])
    time.sleep(0.1)
    add_message(maildir, "Sent")
    assert tool.expect(["Sent"]) == ["Sent"]


def test_inbox_subdirectory_replaced_is_followed(watcher, maildir):
    tool = watcher(maildir)
    tool.ready()
    os.rename(maildir / "new", maildir / "new.old")
    (maildir / "new").mkdir()
    assert "INBOX" in tool.expect(["INBOX"])
    time.sleep(0.1)
    add_message(maildir)
    assert tool.expect(["INBOX"]) == ["INBOX"]


def test_symlinked_folder_added_and_removed(watcher, maildir, tmp_path):
    elsewhere = make_maildir(tmp_path / "elsewhere")
    tool = watcher(maildir)
    tool.ready()
    os.symlink(elsewhere, maildir / ".ext")
    assert "ext" in tool.expect(["ext"])
    time.sleep(0.1)
    add_message(maildir, "ext")
    assert tool.expect(["ext"]) == ["ext"]
    time.sleep(0.1)
    os.unlink(maildir / ".ext")
    assert "ext" in tool.expect(["ext"])


def test_exit_on_new_folder_exits_2(watcher, maildir):
    tool = watcher(maildir, "--exit-on-new-folder")
    tool.ready()
    add_message(maildir, "Sent")
    assert tool.expect(["Sent"]) == ["Sent"]  # changes are reported as usual
    make_maildir(maildir, ["new.one"])
    assert tool.wait() == 2
    err = tool.stderr()
    assert err.startswith("watch-maildirs: ") and "new.one" in err
    assert len(err.splitlines()) == 1


def test_exit_on_new_folder_also_on_removal_and_rename(watcher, maildir):
    tool = watcher(maildir, "--exit-on-new-folder")
    tool.ready()
    shutil.rmtree(folder_path(maildir, "Sent"))
    assert tool.wait() == 2
    tool = watcher(maildir, "--exit-on-new-folder")
    tool.ready()
    os.rename(folder_path(maildir, "a.b"), folder_path(maildir, "a.z"))
    assert tool.wait() == 2


def test_base_maildir_renamed_exits_2_with_a_message(watcher, maildir, tmp_path):
    tool = watcher(maildir)
    tool.ready()
    os.rename(maildir, tmp_path / "old_Maildir")
    assert tool.wait() == 2
    err = tool.stderr()
    assert len(err.splitlines()) == 1 and str(maildir) in err and "moved" in err


def test_base_maildir_removed_exits_2(watcher, maildir):
    tool = watcher(maildir)
    tool.ready()
    shutil.rmtree(maildir)
    assert tool.wait() == 2
    err = tool.stderr()
    assert len(err.splitlines()) == 1 and "removed" in err


def test_parent_of_base_renamed_exits_2(watcher, tmp_path):
    base = make_maildir(tmp_path / "mail" / "Maildir")
    tool = watcher(base)
    tool.ready()
    os.rename(tmp_path / "mail", tmp_path / "mail.old")
    assert tool.wait() == 2
    assert str(tmp_path / "mail") in tool.stderr()


def test_base_given_as_a_symlink_that_is_replaced_exits_2(watcher, maildir, tmp_path):
    link = tmp_path / "current"
    os.symlink(maildir, link)
    tool = watcher(link)
    tool.ready()
    add_message(maildir)
    assert tool.expect(["INBOX"]) == ["INBOX"]
    other = make_maildir(tmp_path / "Other")
    os.symlink(other, tmp_path / "current.new")
    os.rename(tmp_path / "current.new", link)  # ln -sfn, atomically
    assert tool.wait() == 2
