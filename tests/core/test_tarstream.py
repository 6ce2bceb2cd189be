"""tarstream.py against Python's tarfile, on archives written by real tar
programs (GNU tar in its three formats, busybox, bsdtar, MirBSD pax) from
a directory of awkward names and sizes; and its failures: truncation at
any point, corrupt headers."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from peers.require import require_program
from roammail.syncmail import tarstream

NAMES = [
    "plain.host",
    "with space.host",
    "quote'\"q.host",
    "-leading-dash",
    "$(touch pwned)",
    "new\nline",
    "tab\tname",
    "caf\xe9-latin1",          # not UTF-8 on disk: surrogateescape
    "日本語.host",
    "x" * 99,
    "y" * 100,
    "z" * 101,
    "1700000000.M123456P7890Q12." + "long-host-name." * 14,  # > 200 bytes
]
SIZES = [0, 1, 511, 512, 513, 10_000, 300_000]


def fill(directory: Path) -> dict[str, bytes]:
    rng = random.Random(3)
    made = {}
    for i, name in enumerate(NAMES):
        data = bytes(rng.getrandbits(8) for _ in range(SIZES[i % len(SIZES)]))
        path = os.path.join(os.fsencode(directory), os.fsencode(name))
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
        made[name] = data
    os.symlink("/etc/passwd", directory / "a-symlink")
    os.mkfifo(directory / "a-fifo")
    (directory / "a-directory").mkdir()
    (directory / "linked").write_bytes(b"one file, two names")
    os.link(directory / "linked", directory / "a-hard-link")  # one is a '1' entry
    return made


PRODUCERS = {
    "gnu": ["tar", "cf", "-", "--format=gnu", "."],
    "posix": ["tar", "cf", "-", "--format=posix", "."],
    "ustar": ["tar", "cf", "-", "--format=ustar", "."],
    "busybox": ["busybox", "tar", "cf", "-", "."],
    "bsdtar": ["bsdtar", "cf", "-", "."],
    "pax": ["pax", "-w", "-x", "ustar", "."],
}


def archive_of(directory: Path, producer: str) -> bytes:
    argv = PRODUCERS[producer]
    require_program(argv[0])
    # ustar and pax cannot store every name: they skip it with a warning.
    proc = subprocess.run(argv, cwd=directory, capture_output=True)
    assert proc.stdout, proc.stderr
    return proc.stdout


def ours(data: bytes) -> list[tuple]:
    stream = io.BytesIO(data)
    out = []
    for member, body in tarstream.members(stream.read):
        content = body.read(member.size // 2) + body.read() if body is not None else None
        # tarfile drops the trailing "/" of a directory's name
        out.append((member.name.rstrip("/") or "/", member.size if member.regular else None,
                    int(member.mtime), member.regular, content))
    return out


def reference(data: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8",
                      errors="surrogateescape") as archive:
        for info in archive:
            body = archive.extractfile(info) if info.isreg() else None
            out.append((info.name, info.size if info.isreg() else None, int(info.mtime),
                        info.isreg(), body.read() if body is not None else None))
    return out


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
def test_members_agree_with_tarfile(tmp_path: Path, producer: str) -> None:
    made = fill(tmp_path)
    data = archive_of(tmp_path, producer)
    got = ours(data)
    assert got == reference(data)
    regular = {name.removeprefix("./"): content for name, _, _, reg, content in got if reg}
    # Every name the format can hold came through whole, with its bytes.
    for name, content in made.items():
        if producer in ("ustar", "pax") and len(os.fsencode(name)) > 99:
            continue
        assert regular.get(name) == content, (producer, name)
    kinds = {name.removeprefix("./"): reg for name, _, _, reg, _ in got}
    assert kinds["a-symlink"] is False and kinds["a-fifo"] is False
    assert kinds["a-directory"] is False


def test_pax_keeps_subsecond_mtimes(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"x")
    os.utime(tmp_path / "m", ns=(1_600_000_000_250_000_000, 1_600_000_000_250_000_000))
    data = archive_of(tmp_path, "posix")
    [(member, _)] = [(m, b) for m, b in tarstream.members(io.BytesIO(data).read)
                     if m.name == "./m"]
    assert member.mtime == pytest.approx(1_600_000_000.25)


def test_gnu_base_256_numbers() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, mtime in (("far", 8 ** 12), ("before-1970", -86_400)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = 3, mtime
            archive.addfile(info, io.BytesIO(b"abc"))
    members = [(m.name, m.mtime, b.read())
               for m, b in tarstream.members(io.BytesIO(buffer.getvalue()).read)]
    assert members == [("far", 8 ** 12, b"abc"), ("before-1970", -86_400, b"abc")]


def test_unread_bodies_are_skipped(tmp_path: Path) -> None:
    fill(tmp_path)
    data = archive_of(tmp_path, "gnu")
    names = [m.name.rstrip("/") for m, _ in tarstream.members(io.BytesIO(data).read)]
    assert names == [name for name, *_ in reference(data)]


def test_every_truncation_is_eof(tmp_path: Path) -> None:
    fill(tmp_path)
    data = archive_of(tmp_path, "posix")
    end = data.index(bytes(1024), len(data) - 20480)  # the end-of-archive marker
    rng = random.Random(5)
    cuts = sorted({0, 1, 511, 512, end - 1} | {rng.randrange(end) for _ in range(200)})
    for cut in cuts:
        with pytest.raises(EOFError):
            for _member, body in tarstream.members(io.BytesIO(data[:cut]).read):
                if body is not None:
                    body.read()


def test_corrupt_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"data")
    data = bytearray(archive_of(tmp_path, "gnu"))
    start = data.index(b"./m\0")
    data[start + 1] ^= 0x20  # the name changes, the checksum does not
    refused(bytes(data), "checksum")


def pax_archive(headers: dict[str, str], data: bytes = b"") -> bytes:
    """One member "m" with these pax headers, written by tarfile."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("m")
        info.size = len(data)
        info.pax_headers = headers
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def refused(data: bytes, why: str) -> None:
    with pytest.raises(tarstream.TarFormatError, match=why):
        list(tarstream.members(io.BytesIO(data).read))


def test_bad_pax_record_is_refused() -> None:
    data = bytearray(pax_archive({"comment": "x"}))
    start = data.index(b"comment=x\n")
    data[start - 3:start - 1] = b"xx"  # the record's length is no number now
    refused(bytes(data), "pax")


def test_a_negative_pax_size_is_refused() -> None:
    data = pax_archive({"size": "17"}, b"x" * 17)
    assert b"size=17\n" in data
    refused(data.replace(b"size=17\n", b"size=-1\n"), "pax size")  # the same length
