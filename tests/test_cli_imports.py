"""`benchsuite --help`, `import benchsuite` (a plugin's first line) and the commands that only read
results (`leaderboard`, `compare`, `publish`) do not import torch: the CLI answers in a fraction of
a second and a plugin's own import stays cheap. A real process, since the test run itself has
torch loaded."""

from __future__ import annotations

import json
import subprocess
import sys

from stored_results import make_results

CHECK = """
import sys
from click.testing import CliRunner
import benchsuite, benchsuite.cli, benchsuite.records, benchsuite.hookspecs
result = CliRunner().invoke(benchsuite.cli.main, ["--help"])
assert result.exit_code == 0, result.output
assert "run" in result.output and "publish" in result.output
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""

# Each command in turn, in one process: after each, whether torch has been imported so far.
COMMANDS = """
import json, sys
from click.testing import CliRunner
from benchsuite.cli import main
a, b, target = sys.argv[1:]
commands = {
    "leaderboard": ["leaderboard", a, "--format", "md", "--format", "html"],
    "compare": ["compare", a, b, "--format", "md"],
    "compare --optimizers": ["compare", a, "--optimizers", "sgd", "gnc"],
    "publish": ["publish", a, b, "--to", target],
}
loaded = {}
for name, arguments in commands.items():
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, (name, result.output)
    loaded[name] = "torch" in sys.modules
print(json.dumps(loaded))
"""


def test_help_and_package_import_load_no_torch():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_leaderboard_compare_and_publish_load_no_torch(tmp_path):
    small = {"pairs": ((0, 1),), "n_trains": (4, 8), "seeds": (200, 201, 202), "models": 8}
    a = make_results(tmp_path / "a", skip_optimizers=("adam",), **small)
    b = make_results(tmp_path / "b", skip_optimizers=("sgd",), **small)
    result = subprocess.run(
        [sys.executable, "-c", COMMANDS, str(a), str(b), str(tmp_path / "published")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(loaded, False), f"imported torch: {loaded}"
    assert (tmp_path / "published" / "leaderboard.html").exists()
