"""Every declared dependency is imported by the tools, in pyproject.toml and
in the .deb alike: a dependency nothing imports is not declared."""

from __future__ import annotations

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
LIB = TOP / "lib" / "roammail"

# Distribution or Debian package name -> the module the code imports.
IMPORT_NAME = {
    "docopt-ng": "docopt",
    "python-daemon": "daemon",
    "inotify_simple": "inotify_simple",
    "python3-docopt": "docopt",
    "python3-daemon": "daemon",
    "python3-pyinotify": "pyinotify",
    "pyroute2": "pyroute2",
    "jeepney": "jeepney",
    "python3-pyroute2": "pyroute2",
    "python3-jeepney": "jeepney",
}


def declared_in_pyproject() -> list[str]:
    text = (TOP / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)
    assert block, "no dependencies list in pyproject.toml"
    return [re.split(r"[<>=!~ ;\[]", name, maxsplit=1)[0]
            for name in re.findall(r'"([^"]+)"', block.group(1))]


def declared_in_debian() -> list[str]:
    text = (TOP / "debian" / "control").read_text()
    binary = text[text.index("\nPackage: roammail"):]
    depends = re.search(r"^Depends:(.*?)^\S", binary, re.M | re.S)
    assert depends, "no Depends in debian/control"
    return [name for name in re.findall(r"python3-[\w.-]+", depends.group(1))]


def imported_modules() -> set[str]:
    found = set()
    for path in LIB.rglob("*.py"):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from|import)\s+([A-Za-z_]\w*)", line)
            if m:
                found.add(m.group(1))
    return found


def test_every_pyproject_dependency_is_imported():
    imported = imported_modules()
    for dist in declared_in_pyproject():
        assert dist in IMPORT_NAME, f"{dist}: say which module it provides"
        assert IMPORT_NAME[dist] in imported, f"{dist} is declared but nothing imports it"


def test_every_debian_python_dependency_is_imported():
    imported = imported_modules()
    names = declared_in_debian()
    assert names
    for package in names:
        assert package in IMPORT_NAME, f"{package}: say which module it provides"
        assert IMPORT_NAME[package] in imported, f"{package} is declared but nothing imports it"
