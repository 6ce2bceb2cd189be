"""Everything syncmail does before ssh starts is on the clock of every run
(and most runs find nothing new); what it does after overlaps with the
login.  So the modules loaded at the moment ssh would start must not
include any known to be slow to import.

The guard is the list of modules, not a timing: a fresh `python -I -S`
with sys.path set to lib/ runs syncmail.main() with remote.Child (what
starts ssh) replaced by a probe that writes out sys.modules and fails as
a missing ssh would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"

# Each costs milliseconds to import, or pulls in more that does.
FORBIDDEN = [
    "re", "typing", "dataclasses", "inspect", "shlex", "docopt", "plumbum", "subprocess",
    "logging", "threading", "hashlib", "enum", "selectors", "locale",
    "roammail.syncmail.move", "roammail.syncmail.log", "roammail.core.durable",
    "roammail.core.child",
]

PROBE = """
import sys
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])  # docopt's, for the command lines only docopt reads
from roammail.syncmail import remote

def start(self, argv):
    sys.stdout.write("\\n".join(sorted(sys.modules)))
    sys.stdout.flush()
    raise FileNotFoundError(2, "not started by the probe")

remote.Child.__init__ = start
from roammail.syncmail import cli as syncmail
sys.exit(syncmail.main(sys.argv[3:]))
"""


def loaded_when_ssh_starts(tmp_path: Path, *args: str) -> list[str]:
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
           "XDG_CONFIG_HOME": str(home / "config"), "PATH": "/usr/bin:/bin"}
    import docopt

    packages = str(Path(docopt.__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(LIB), packages, *args],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 75, result.stderr  # "cannot run ssh", as the probe says
    assert "not started by the probe" in result.stderr
    return result.stdout.split("\n")


@pytest.mark.parametrize("form", ["one-shot", "config"])
def test_nothing_slow_to_import_before_ssh_starts(tmp_path, form):
    if form == "one-shot":
        args = ["-v", "testhost:Maildir", str(tmp_path / "Mail")]
    else:
        conf = tmp_path / "syncmail.conf"
        conf.write_text(f'source laptop {{\n  host = "testhost"\n  remote = "Maildir"\n'
                        f'  local = "{tmp_path / "Mail"}"\n}}\n')
        args = ["-c", str(conf), "laptop"]
    loaded = loaded_when_ssh_starts(tmp_path, *args)
    assert "roammail.syncmail.remote" in loaded and "roammail.syncmail.cli" in loaded
    heavy = [name for name in FORBIDDEN if name in loaded]
    assert heavy == [], f"loaded before ssh starts: {heavy}"


def test_the_probe_sees_what_docopt_brings(tmp_path):
    # A command line the plain reader leaves to docopt: the probe must see
    # docopt (and re, which it imports) arrive.
    loaded = loaded_when_ssh_starts(tmp_path, "-nv", "testhost:Maildir", str(tmp_path / "Mail"))
    assert "docopt" in loaded and "re" in loaded
