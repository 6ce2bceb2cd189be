"""extsmail runs for every mail sent: importing it must stay cheap.

The guard is the list of modules it loads, not a timing: in a fresh
interpreter (`-I -S`: no site, no user paths, as close to a bare `python3`
as it gets) with sys.path set to lib/, `import roammail.extsmail.extsmail`
must not
load any module known to be slow to import or to belong to the daemons.
Timings are left to bench/; a module list is exact and does not flake.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peers.imports import LIB, loaded_by

# Each costs milliseconds (typing, dataclasses and inspect together about
# 10 ms) or pulls in much more; none is needed to spool one message.
FORBIDDEN = [
    "re",
    "typing",
    "dataclasses",
    "inspect",
    "shlex",
    "docopt",
    "plumbum",
    "subprocess",
    "logging",
]

# What extsmail itself loads must not even include these: os (with the
# _collections_abc it brings) is a third of its cost above the bare
# interpreter, and __future__, fcntl and itertools are not free either.
ENQUEUE_FORBIDDEN = FORBIDDEN + ["os", "__future__", "fcntl", "itertools", "posixpath"]
ENQUEUE_PATH = ["roammail.extsmail.extsmail", "roammail.extsmail.conf", "roammail.core.tokens",
                "roammail.core.times", "roammail.extsmail.spool", "roammail.core.cli",
                "roammail.core.locations", "roammail.core.paths", "roammail.core.durable",
                "roammail.core.maildir", "roammail.core.lockfile", "roammail.core",
                "roammail.extsmail"]


@pytest.mark.parametrize(
    "module,forbidden",
    [(name, ENQUEUE_FORBIDDEN) for name in ENQUEUE_PATH]
    + [(f"roammail.extsmail.{name}", FORBIDDEN)
       for name in ("externals", "extsmaild", "settings", "deliver", "notify", "queue")],
)
def test_extsmail_imports_nothing_heavy(module: str, forbidden: list[str]) -> None:
    loaded = loaded_by(module)
    assert module in loaded  # the probe really imported it from lib/
    heavy = [name for name in forbidden if name in loaded]
    assert heavy == [], f"importing {module} loads {heavy}"


def test_probe_sees_a_heavy_import() -> None:
    # The probe itself must not hide a forbidden module: headers.py uses
    # re and dataclasses (extsmaild imports it once a message is there).
    loaded = loaded_by("roammail.core.headers")
    assert "dataclasses" in loaded and "re" in loaded


# A cron job runs `extsmaild` every few minutes, mostly over an empty
# queue: that run reads both files, locks the spool, finds nothing and
# exits, and must load nothing heavy on the way.
EMPTY_RUN = """
import os, sys
sys.path[:0] = [sys.argv[1]]
from roammail.extsmail.extsmaild import main
status = main(sys.argv[2:])
sys.stdout.write(str(status) + "\\n" + "\\n".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("argv", [[], ["-m", "batch"]])
def test_an_empty_queue_run_imports_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    home = tmp_path / "home"
    (home / ".extsmail").mkdir(parents=True)
    (home / ".extsmail" / "conf").write_text(f'spool_dir = "{tmp_path}/spool"\n')
    (home / ".extsmail" / "externals").write_text(
        'group {\n  match header "^To:.*@work\\\\.example"\n'
        '  external w { sendmail = "ssh -q \'a host\' /usr/sbin/sendmail -t" }\n}\n'
        'group { external x { sendmail = "/bin/true" } }\n')
    (tmp_path / "spool").mkdir(mode=0o700)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", EMPTY_RUN, str(LIB), *argv],
        capture_output=True, text=True, timeout=60, env={"HOME": str(home), "PATH": "/bin"})
    assert result.returncode == 0, result.stderr
    status, *loaded = result.stdout.split("\n")
    assert status == "0"
    heavy = [name for name in FORBIDDEN + ["signal", "random", "roammail.core.child",
                                           "roammail.core.headers"] if name in loaded]
    assert heavy == [], f"an empty queue run loads {heavy}"
