"""smtpdcheck runs once per SMTP transaction from rule files: its start-up
must stay light.  As tests/core/test_import_cost.py does for extsmail, the
guard is the list of modules it loads (exact, never flaky), not a timing:
no asyncio (~30 ms), no docopt (~10 ms), nothing that pulls in re, typing
or dataclasses.  The timings are in bench/smtpdcheck_bench.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"

FORBIDDEN = ["asyncio", "docopt", "re", "typing", "dataclasses", "inspect", "subprocess",
             "logging", "json", "ipaddress", "concurrent", "ssl", "argparse"]

PROBE = """
import sys
sys.path[:0] = [sys.argv[1]]
import roammail.smtpdcheck.cli
sys.stdout.write("\\n".join(sorted(sys.modules)))
"""


def test_importing_smtpdcheck_loads_nothing_heavy():
    result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(LIB)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split("\n")
    assert "roammail.smtpdcheck.cli" in loaded
    assert [name for name in FORBIDDEN if name in loaded] == []
