"""roammail.core.paths gives posixpath's answers without importing os."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.core import paths

PARTS = st.text(alphabet=list("ab./"), max_size=10)


@settings(max_examples=2000)
@given(PARTS)
def test_split_family_is_posixpath(path: str) -> None:
    assert paths.split(path) == posixpath.split(path)
    assert paths.dirname(path) == posixpath.dirname(path)
    assert paths.basename(path) == posixpath.basename(path)
    assert paths.normpath(path) == posixpath.normpath(path)


@settings(max_examples=2000)
@given(PARTS, st.lists(PARTS, max_size=3))
def test_join_is_posixpath(first: str, rest: list[str]) -> None:
    assert paths.join(first, *rest) == posixpath.join(first, *rest)


@given(PARTS)
def test_abspath_is_posixpath(path: str) -> None:
    assert paths.abspath(path) == posixpath.abspath(path)


def test_file_tests(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    os.symlink("d", tmp_path / "l")
    os.symlink("missing", tmp_path / "dangling")
    for name in ("d", "f", "l", "dangling", "none"):
        p = str(tmp_path / name)
        assert (paths.exists(p), paths.lexists(p), paths.isdir(p), paths.islink(p)) == \
            (os.path.exists(p), os.path.lexists(p), os.path.isdir(p), os.path.islink(p)), name


def test_makedirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    paths.makedirs(str(target), 0o700)
    assert target.is_dir()
    paths.makedirs(str(target), 0o700, exist_ok=True)
    with pytest.raises(FileExistsError):
        paths.makedirs(str(target), 0o700)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        paths.makedirs(str(tmp_path / "file"), exist_ok=True)


@given(st.text(max_size=10))
def test_fs_coding_is_os(name: str) -> None:
    encoded = os.fsencode(name)
    assert paths.fsencode(name) == encoded
    assert paths.fsdecode(encoded) == os.fsdecode(encoded)
