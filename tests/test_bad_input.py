"""Bad input beyond the suite file (issue 11, item 3): suites that are odd but valid run; a
damaged results database, an impossible output folder, a read-only result folder and damaged
dataset files each give one line and exit code 2, write nothing and lose nothing. Real files,
folders and databases; the commands run in-process (cli_runner) except where a read-only mount
needs a process of its own."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_runner import cli

ROOT = Path(__file__).resolve().parents[1]


def tiny_suite(**changes) -> dict:
    suite = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": [1], "depths": [1]}],
        "baselines": [{"name": "gnc", "max_candidates": 20_000}],
    }
    suite.update(changes)
    return suite


def write(path: Path, document) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def error_line(result) -> str:
    """The one error line of a refused command (`run` announces its output folder only once the
    run starts, so a refused run prints the error alone)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# odd but valid suites run (each is small: a digits pair, N=2, a width-1 MLP)

SGD = {"name": "sgd", "lr": 0.1, "epochs": 2}
ODD_BUT_VALID = {
    "batch_size far beyond N": {"optimizers": [{**SGD, "batch_size": 10**12}], "baselines": []},
    "the largest seed": {"seed": 2**63 - 1},
    "the largest training-set seed": {"tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2], "training_set_seeds": [2**63 - 1]}]},
    "the largest class-pair seed": {"tasks": [{"dataset": "digits", "class_pair_seeds": [2**63 - 1], "n_train": [2]}]},
    "a budget of one candidate": {"baselines": [{"name": "gnc", "max_candidates": 1}]},
    "a budget of one network": {"optimizers": [{**SGD, "max_networks": 1}], "baselines": []},
    "more models than max_networks": {"optimizers": [{**SGD, "models": 5, "max_networks": 1}], "baselines": []},
    "a subnormal learning rate": {"optimizers": [{**SGD, "lr": 5e-324}], "baselines": []},
    "a learning rate at float32's edge": {"optimizers": [{**SGD, "lr": 3.4e38}], "baselines": []},
    "a huge chunk and thread count": {"baselines": [{"name": "gnc", "max_candidates": 1000, "chunk_size": 2**62, "cpu_threads": 10**9}]},
    "an empty name": {"name": ""},
    "a name of dots": {"name": ".."},
    "control characters and emoji in names": {"name": "\u202e\x1b[2J\U0001f600", "baselines": [{"name": "gnc", "label": "\r\n\x1b]0;x\x07", "max_candidates": 1000}]},
    "a data root with a NUL byte (digits read no files)": {"data": {"root": "a\x00b"}},
    "a data root that is a file (digits read no files)": {"data": {"root": "/dev/null"}},
    "a budget of a picosecond per cell": {"max_seconds_per_cell": 1e-12},
    "a budget of a year per cell": {"max_seconds_per_cell": 365 * 24 * 3600},
    "per-class training draw": {"tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2], "training_draw": "per-class"}]},
    "the largest N digits can give": {"tasks": [{"dataset": "digits", "classes": [[8, 1]], "n_train": [200]}], "models_per_cell": 1},
}


@pytest.mark.parametrize("changes", list(ODD_BUT_VALID.values()), ids=list(ODD_BUT_VALID))
def test_odd_but_valid_suites_run_or_stop_in_one_line(tmp_path, changes):
    path = write(tmp_path / "suite.yaml", tiny_suite(**changes))
    assert cli("validate", str(path)).returncode == 0
    result = cli("run", str(path), "--out", str(tmp_path / "out"), "-q", timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file()


# ---------------------------------------------------------------------------------------------
# a damaged results database: one line from every command, and the file untouched


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("stored")
    suite = write(root / "suite.yaml", tiny_suite())
    result = cli("run", str(suite), "--out", str(root / "good"), "-q")
    assert result.returncode == 0, result.stderr
    return root / "good", suite


def _damaged(good: bytes) -> dict[str, bytes]:
    return {
        "truncated": good[: len(good) // 3],
        "header only": good[:100],
        "garbage": bytes((i * 7919 + 13) % 256 for i in range(20_000)),
        "text": b"not a database\n" * 100,
        "zeros": bytes(8192),
        "gzip": gzip.compress(good),
    }


DAMAGE = ["truncated", "header only", "garbage", "text", "zeros", "gzip"]
COMMANDS = ["run", "leaderboard", "plot", "publish", "compare"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_database_is_one_line_from_every_command_and_stays_as_it_was(stored, tmp_path, damage, command):
    good, suite = stored
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "results.sqlite").write_bytes(_damaged((good / "results.sqlite").read_bytes())[damage])
    before = snapshot(folder)
    words = {
        "run": ["run", suite, "--out", folder, "-q"],
        "leaderboard": ["leaderboard", folder],
        "plot": ["plot", folder],
        "publish": ["publish", folder, "--to", tmp_path / "published", "--no-figures"],
        "compare": ["compare", folder, good],
    }[command]
    line = error_line(cli(*words))
    assert "results.sqlite" in line and ("not a readable results database" in line or "is missing" in line), line
    assert snapshot(folder) == before  # nothing written beside it, nothing changed in it
    assert not (tmp_path / "published").exists()


# ---------------------------------------------------------------------------------------------
# output folders that cannot be made or written


def test_an_impossible_out_is_one_line_and_nothing_is_written(stored, tmp_path):
    _, suite = stored
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        a_file: "it is a file; give a folder",
        a_file / "sub": f"{a_file} is not a folder",
        Path("/dev/null/x"): "/dev/null is not a folder",
    }
    if Path("/proc/self").is_dir():
        cases[Path("/proc/x")] = "cannot create it"
    for out, words in cases.items():
        line = error_line(cli("run", suite, "--out", out, "-q"))
        assert f"output folder {out}" in line and words in line, line
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_run_that_fails_before_its_first_cell_leaves_no_database_and_no_folder(tmp_path):
    """A plugin that fails in the first cell (after the database was created): the run stops with
    its error, and the empty database and the folders it created are gone."""
    import torch

    from benchsuite import hookimpl
    from benchsuite.plugins import load_registry
    from benchsuite.records import OptimizerSpec
    from benchsuite.runner import run_suite
    from benchsuite.suite import validate_suite

    def factory(params, **settings):
        if sum(p.numel() for p in params) > 1:  # validation builds it on one number; a cell does not
            raise RuntimeError("this optimizer fails on real networks")
        return torch.optim.SGD(params, lr=0.1)

    class FailingPlugin:
        @hookimpl
        def benchsuite_optimizers(self):
            return [OptimizerSpec(name="fails-late", factory=factory, elementwise=False)]

    registry = load_registry(include_entry_points=False, extra=[("fails-late", FailingPlugin())])
    suite = validate_suite(tiny_suite(optimizers=[{"name": "fails-late", "epochs": 1}], baselines=[]), registry, "late.yaml")
    out = tmp_path / "new" / "out"
    from benchsuite.errors import OptimizerStepError

    with pytest.raises(OptimizerStepError, match="failed while being built: RuntimeError: this optimizer fails on real networks"):
        run_suite(suite, out, registry)
    assert not (tmp_path / "new").exists()


def test_only_a_database_without_cells_is_removed_after_a_failure(stored, tmp_path):
    """What a failed run removes (Store.remove_if_no_cells): never finished cells, never a file it
    cannot read as a database."""
    from benchsuite.store import Store

    good, _ = stored
    shutil.copy(good / "results.sqlite", tmp_path / "results.sqlite")
    assert not Store.remove_if_no_cells(tmp_path / "results.sqlite")
    (tmp_path / "other.sqlite").write_bytes(b"not a database" * 100)
    assert not Store.remove_if_no_cells(tmp_path / "other.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite", "results.sqlite"]


# ---------------------------------------------------------------------------------------------
# a read-only result folder: reading commands work and write nothing; plot says why it cannot


def _read_only_runner(folder: Path):
    """Run benchsuite commands with `folder` read-only, and give the folder back writable.

    Not root: chmod, and the commands in-process. Root ignores permissions, so there the folder is
    bind-mounted read-only in a private mount namespace (unshare -m) and each command is a process
    of its own inside it; where that is not allowed the test is skipped, never passed untested."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)

        def run(*words):
            return cli(*words)

        def restore():
            for p, mode in modes.items():
                p.chmod(mode)

        return run, restore
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run(
        [unshare, "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && ! touch "$0/.probe" 2>/dev/null', str(folder)],
        capture_output=True,
        check=False,
    )
    if not probe or probe.returncode != 0:
        pytest.skip("running as root without a private read-only mount (unshare -m): chmod would not stop root's writes")

    def run(*words):
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        command = [unshare, "-m", "sh", "-c", script, str(folder), sys.executable, "-m", "benchsuite.cli", *map(str, words)]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, check=False)

    return run, lambda: None


def test_reading_commands_work_in_a_read_only_result_folder_and_plot_says_why_it_cannot(stored, tmp_path):
    good, suite = stored
    folder = tmp_path / "read-only"
    shutil.copytree(good, folder)
    before = snapshot(folder)
    run, restore = _read_only_runner(folder)
    try:
        board = run("leaderboard", folder, "--format", "csv")
        assert board.returncode == 0 and "gnc" in board.stdout, board.stderr
        assert "is read-only; its leaderboard files were not rewritten" in board.stderr
        compared = run("compare", folder, good)
        assert compared.returncode == 0, compared.stderr
        plotted = run("plot", folder)
        line = error_line(plotted)
        assert "figures" in line and "not writable" in line, line
        resumed = run("run", suite, "--out", folder / "sub", "-q")
        assert "not writable" in error_line(resumed)
    finally:
        restore()
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------
# damaged dataset files


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


DATA_DAMAGE = {
    "a truncated gzip": (True, lambda root: _truncate(root / "train-images-idx3-ubyte.gz", 500), "corrupt gzip data"),
    "a truncated IDX file": (False, lambda root: _truncate(root / "train-images-idx3-ubyte", 5000), "malformed IDX file"),
    "garbage": (False, lambda root: (root / "train-labels-idx1-ubyte").write_bytes(b"\x93\xe7" * 500), "not an IDX file"),
    "an empty file": (False, lambda root: (root / "t10k-images-idx3-ubyte").write_bytes(b""), "not an IDX file: only 0 bytes"),
    "a folder in its place": (True, lambda root: ((root / "t10k-labels-idx1-ubyte.gz").unlink(), (root / "t10k-labels-idx1-ubyte.gz").mkdir()), "but not t10k-labels-idx1-ubyte"),
}


@pytest.mark.parametrize("damage", list(DATA_DAMAGE), ids=list(DATA_DAMAGE))
def test_damaged_dataset_files_are_one_line_and_nothing_is_written(tmp_path, damage):
    from test_datasets import write_mnist_format

    compress, spoil, words = DATA_DAMAGE[damage]
    root = tmp_path / "data"
    write_mnist_format(root, 1400, 40, compress=compress)
    spoil(root)
    suite = write(tmp_path / "suite.yaml", tiny_suite(
        data={"root": str(root)}, tasks=[{"dataset": "fashion-mnist", "classes": [[0, 7]], "n_train": [2]}]))
    line = error_line(cli("run", suite, "--out", tmp_path / "out", "-q"))
    assert words in line, line
    assert not (tmp_path / "out").exists()
