"""smtpdcheck runs once per SMTP transaction from rule files: its start-up
must stay light.  As tests/core/test_import_cost.py does for extsmail, the
guard is the list of modules it loads (exact, never flaky), not a timing:
no asyncio (~30 ms), no docopt (~10 ms), nothing that pulls in re, typing
or dataclasses.  The timings are in bench/smtpdcheck_bench.py.
"""

from __future__ import annotations

from peers.imports import loaded_by

FORBIDDEN = ["asyncio", "docopt", "re", "typing", "dataclasses", "inspect", "subprocess",
             "logging", "json", "ipaddress", "concurrent", "ssl", "argparse"]


def test_importing_smtpdcheck_loads_nothing_heavy():
    loaded = loaded_by("roammail.smtpdcheck.cli")
    assert [name for name in FORBIDDEN if name in loaded] == []
