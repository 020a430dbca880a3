"""`benchsuite --help` and `import benchsuite` (a plugin's first line) do not import torch: the
CLI answers in a fraction of a second and a plugin's own import stays cheap. A real process, since
the test run itself has torch loaded."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from click.testing import CliRunner
import benchsuite, benchsuite.cli, benchsuite.records, benchsuite.hookspecs
result = CliRunner().invoke(benchsuite.cli.main, ["--help"])
assert result.exit_code == 0, result.output
assert "run" in result.output and "publish" in result.output
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_help_and_package_import_load_no_torch():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
