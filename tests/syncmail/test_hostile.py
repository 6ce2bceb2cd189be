"""A hostile server: odd names, links, fifos, directories in new/."""

from __future__ import annotations

import os


def test_hostile_names_and_files(world, tmp_path):
    canary = tmp_path / "pwned"
    odd = {
        "1.with space.host": b"Subject: a\n\n1\n",
        "2.quote'\"q.host": b"Subject: b\n\n2\n",
        f"3.$(touch {canary}).host".replace("/", "_"): b"Subject: c\n\n3\n",
        "4.`touch x`;rm -rf ~.host": b"Subject: d\n\n4\n",
        "-5.leading-dash.host": b"Subject: e\n\n5\n",
        "--6.double.host": b"Subject: f\n\n6\n",
        "7.*glob?[x].host": b"Subject: g\n\n7\n",
        "8.backslash\\n.host": b"Subject: h\n\n8\n",
        "9.caf\xe9.host": b"Subject: i\n\n9\n",
    }
    for name, data in odd.items():
        world.deliver_remote(name, data, 1_700_000_000)
    new = world.server / "new"
    bad = {
        "10.new\nline.host": "control character",
        "11.tab\t.host": "control character",
        ".12.hidden": "starts with '.'",
    }
    for name in bad:
        (new / name).write_bytes(b"Subject: bad\n\nx\n")
    os.symlink("/etc/passwd", new / "13.symlink.host")
    os.mkfifo(new / "14.fifo.host")
    os.mkdir(new / "15.directory.host")
    (new / "15.directory.host" / "inner").write_bytes(b"x")
    world.basic_config()
    result = world.run()
    assert result.returncode == 1, result.stderr
    assert not canary.exists()
    local = world.local_messages()
    assert set(local) == set(odd)
    for name, data in odd.items():
        assert local[name].read_bytes() == data
    # Refused entries are left alone and each one is reported.
    left = world.server_new()
    assert left == set(bad) | {"13.symlink.host", "14.fifo.host", "15.directory.host"}
    assert os.path.islink(new / "13.symlink.host")
    assert "13.symlink.host left on the server: refused: a symbolic link" in result.stderr
    assert "14.fifo.host left on the server: refused: not a regular file" in result.stderr
    assert "15.directory.host left on the server: refused: a directory" in result.stderr
    assert "10.new\\nline.host left on the server: refused: control character" in result.stderr
    assert "11.tab\\t.host left on the server: refused: control character" in result.stderr
    assert ".12.hidden left on the server: refused: message name starts with" in result.stderr
    assert result.stderr.count("left on the server") == 6
    # Nothing of /etc/passwd came over.
    for path in (world.local / "new").iterdir():
        assert b"root:" not in path.read_bytes()


def test_symlinked_message_is_never_followed_even_if_swapped_in(world):
    """A name listed as a file that becomes a symlink is not copied through."""
    world.deliver_remote("1.ok.host", b"Subject: x\n\n1\n")
    os.symlink("/etc/passwd", world.server / "new" / "2.link.host")
    world.basic_config()
    result = world.run()
    assert result.returncode == 1
    assert "2.link.host" not in world.local_messages()
    assert os.path.islink(world.server / "new" / "2.link.host")
