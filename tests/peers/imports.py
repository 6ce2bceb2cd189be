"""What importing a module loads: the one probe of the import-budget tests.

`loaded_by(module)` imports `module` in a fresh `python -I -S` (no site,
no user paths, as close to a bare interpreter as it gets) whose sys.path
starts with lib/, imports nothing but sys before it, and returns every
name in sys.modules afterwards.  A failed import fails the caller.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"

PROBE = """
import sys
sys.path[:0] = [sys.argv[1]]
import {module}
sys.stdout.write("\\n".join(sorted(sys.modules)))
"""


def loaded_by(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE.format(module=module), str(LIB)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split("\n")
    assert module in loaded  # the probe really imported it from lib/
    return loaded
