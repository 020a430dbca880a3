"""`benchsuite estimate`: each kind of cell probed on real data through the real engine, the rest
extrapolated by the rules of benchsuite/estimate.py (the figures themselves depend on the
machine, so the tests check the rules, never a time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchsuite.estimate import estimate, training_seconds
from benchsuite.plugins import default_registry
from benchsuite.resolved import expand
from benchsuite.suite import validate_suite
from tests.cli_runner import cli


def suite_of(**changes):
    document = {
        "name": "estimate-me",
        "seed": 0,
        "device": "cpu",
        "models_per_cell": 4,
        "tasks": [{"dataset": "digits", "classes": [[3, 8]], "n_train": [4, 8], "training_set_seeds": [200, 201]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}],
        "optimizers": [{"name": "sgd", "epochs": 20}],
        "baselines": [{"name": "gnc", "max_candidates": 10**9}],
    }
    document.update(changes)
    return validate_suite(document, default_registry(), "estimate-me.yaml")


def by_cell(found):
    return {(c.cell.entry.label, c.cell.n_train, c.cell.training_set_seed): c for c in found.costs}


def test_gradient_cells_scale_with_their_steps_from_one_probe():
    found = estimate(suite_of(baselines=[]), seconds=0.2)
    costs = by_cell(found)
    assert len(found.costs) == 4 and all(c.basis == "extrapolated" and c.seconds > 0 for c in found.costs)
    # one probe serves N = 4 and N = 8 (batch 2): 2 and 4 steps per epoch, so exactly twice the
    # training time; testing the networks is timed once per task and architecture
    small, large = costs[("sgd", 4, 200)], costs[("sgd", 8, 200)]
    assert large.seconds - large.evaluation == pytest.approx(2 * (small.seconds - small.evaluation), rel=1e-12)
    assert large.evaluation == small.evaluation > 0
    # the training sets share it too
    assert costs[("sgd", 4, 201)].seconds == costs[("sgd", 4, 200)].seconds
    assert found.seconds == pytest.approx(sum(c.seconds for c in found.costs))


def test_tuning_trials_are_counted_as_networks_trained():
    suite = suite_of(
        baselines=[],
        tuning={"trials": 3, "networks": 2, "hyperparameters": ["lr"]},
        optimizers=[{"name": "sgd", "epochs": 20}],
    )
    cell = expand(suite)[0]
    assert cell.tuned
    steps = 20 * 2  # N = 4, batch 2
    assert training_seconds(cell, 0.5) == pytest.approx((4 + 3 * 2) * steps * 0.5)
    # half of them interpolate: twice the networks; none: the cell's cap
    assert training_seconds(cell, 0.5, fit=0.5) == pytest.approx((8 + 3 * 2) * steps * 0.5)
    cap = cell.entry.settings.max_networks
    assert training_seconds(cell, 0.5, fit=0.0) == pytest.approx((cap + 3 * 2) * steps * 0.5)
    # the trials' small stacks at their own rate
    assert training_seconds(cell, 0.5, tuning_per_step=2.0) == pytest.approx((4 * 0.5 + 3 * 2 * 2.0) * steps)


def test_a_sampler_cell_that_finishes_within_its_probe_is_measured():
    found = estimate(suite_of(optimizers=[], models_per_cell=2), seconds=30)
    assert {c.basis for c in found.costs} == {"measured"}
    assert all(0 < c.seconds < 30 for c in found.costs)


def test_gnc_that_sees_no_fit_takes_p_fit_from_a_subset_simulation():
    # digits 3 vs 8 at N = 48 with MLP 1/6: far too many bits for a fit in a 0.2 s probe
    suite = suite_of(
        optimizers=[], models_per_cell=500,
        tasks=[{"dataset": "digits", "classes": [[3, 8]], "n_train": [48], "training_set_seeds": [200]}],
        architectures=[{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
        baselines=[{"name": "gnc", "max_candidates": 10**12}],
    )  # fmt: skip
    (cost,) = estimate(suite, seconds=0.2).costs
    assert cost.basis == "subset simulation", cost
    bits = float(cost.note.split("~ ")[1].split(",")[0])
    assert 10 < bits < 60
    rate = float(cost.note.split(", ")[1].split(" candidates/s")[0].replace(",", ""))
    assert cost.seconds == pytest.approx(500 * 2**bits / rate, rel=0.05)  # the note rounds bits to 0.1


def test_subset_mcmc_beyond_its_probe_is_one_small_repeat_scaled():
    """subset-mcmc reports only after each repeat, so a probe of `seconds` saw nothing and the
    cell was a bare "at least": one repeat of 32 particles runs to the end, scaled by particles x
    repeats."""
    suite = suite_of(
        optimizers=[], models_per_cell=100,
        tasks=[{"dataset": "digits", "classes": [[3, 8]], "n_train": [32], "training_set_seeds": [200]}],
        architectures=[{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
        baselines=[{"name": "subset-mcmc", "particles": 256, "repeats": 4}],
    )  # fmt: skip
    (cost,) = estimate(suite, seconds=0.1).costs
    assert cost.basis == "scaled", cost
    assert "1 repeat of 32 particles" in cost.note and cost.note.endswith("x 32")
    took = float(cost.note.split(": ")[1].split(" s")[0])
    assert cost.seconds - cost.evaluation == pytest.approx(32 * took, abs=32 * 0.05)  # note: 0.1 s


def test_the_candidate_budget_and_the_time_budget_cap_a_cell():
    tasks = [{"dataset": "digits", "classes": [[3, 8]], "n_train": [64], "training_set_seeds": [200]}]
    capped = suite_of(
        optimizers=[], models_per_cell=500, tasks=tasks, baselines=[{"name": "gnc", "max_candidates": 10**9}],
        architectures=[{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
    )  # fmt: skip
    (cost,) = estimate(capped, seconds=0.2).costs  # about 35 bits: 500 x 2^35 candidates > 10^9
    assert cost.basis == "budget" and "max_candidates 1,000,000,000 runs out first" in cost.note, cost
    rate = float(cost.note.split(", ")[1].split(" candidates/s")[0].replace(",", ""))
    assert cost.seconds == pytest.approx(10**9 / rate, rel=1e-3)
    timed = suite_of(baselines=[], max_seconds_per_cell=0.001)
    assert {(c.basis, c.seconds) for c in estimate(timed, seconds=0.2).costs} == {("budget", 0.001)}


def test_a_batchnorm_network_without_a_fit_is_a_lower_bound():
    suite = suite_of(
        optimizers=[], models_per_cell=50,
        tasks=[{"dataset": "digits", "classes": [[3, 8]], "n_train": [32, 48], "training_set_seeds": [200]}],
        architectures=[{"name": "resnet4", "widths": ["1/6"], "depths": ["layer3"]}],
    )  # fmt: skip
    found = estimate(suite, seconds=0.3)
    smaller, larger = found.costs
    assert smaller.basis == larger.basis == "at least" and found.lower_bound
    # nested training sets: the bound found at N = 32 serves N = 48 without another probe
    assert larger.seconds == smaller.seconds and larger.note == f"{smaller.note} at N=32"


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_command_prints_a_table_or_json_and_writes_nothing(tmp_path):
    document = {
        "name": "estimate-me", "seed": 0, "device": "cpu", "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}],
        "optimizers": [{"name": "sgd", "epochs": 5}], "baselines": [{"name": "gnc"}],
    }  # fmt: skip
    suite = write(tmp_path / "suite.yaml", document)
    before = sorted(p.name for p in tmp_path.iterdir())
    shown = cli("estimate", suite, "--seconds", "0.2", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Estimate: estimate-me on cpu" in shown.stdout and "mlp[width=1/6,depth=2]" in shown.stdout
    assert "total:" in shown.stdout
    as_json = cli("estimate", suite, "--seconds", "0.2", "--json", cwd=tmp_path)
    answer = json.loads(as_json.stdout)
    assert answer["device"] == "cpu" and len(answer["cells"]) == 2
    assert answer["seconds"] == pytest.approx(sum(c["seconds"] for c in answer["cells"]))
    assert answer["workers"] == 1 and answer["wall_seconds"] == pytest.approx(answer["seconds"])
    assert answer["cpus"] >= 1 and "load_average" in answer and "busy" in answer
    two = cli("estimate", suite, "--seconds", "0.2", "-j", "2", cwd=tmp_path)
    assert two.returncode == 0 and "of wall time on 2 workers" in two.stdout
    assert cli("estimate", suite, "-j", "0", cwd=tmp_path).returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/ folder, nothing


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"name": "x", "tasks": [], "architectures": [{"name": "nope"}]})
    result = cli("estimate", bad)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert cli("estimate", bad, "--device", "gpu0").returncode == 2


def test_with_a_result_folder_only_the_cells_it_lacks_are_estimated(tmp_path):
    """`--out DIR`: what running into DIR would still do. A folder run with N = 4 holds those
    cells of the grown suite (N = 4 and 8); its database is read, never written."""
    document = {
        "name": "estimate-me", "seed": 0, "device": "cpu", "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200, 201]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}],
        "optimizers": [{"name": "sgd", "epochs": 5}], "baselines": [{"name": "gnc"}],
    }  # fmt: skip
    first = write(tmp_path / "first.yaml", document)
    assert cli("run", first, "--out", "out", "-q", cwd=tmp_path).returncode == 0
    document["tasks"][0]["n_train"] = [4, 8]
    grown = write(tmp_path / "grown.yaml", document)
    database = tmp_path / "out" / "results.sqlite"
    before = database.read_bytes()
    answer = json.loads(cli("estimate", grown, "--seconds", "0.2", "--json", "--out", "out", cwd=tmp_path).stdout)
    assert answer["finished"] == 4 and sorted((c["method"], c["n_train"]) for c in answer["cells"]) == [
        ("gnc", 8), ("gnc", 8), ("sgd", 8), ("sgd", 8)
    ]
    shown = cli("estimate", grown, "--seconds", "0.2", "--out", "out", cwd=tmp_path)
    assert "out: 4 of the suite's cells finished; estimating the other 4" in shown.stdout
    reused = json.loads(cli("estimate", grown, "--seconds", "0.2", "--json", "--reuse", "out", cwd=tmp_path).stdout)
    assert reused["finished"] == 4 and len(reused["cells"]) == 4  # as `run --reuse out` would leave them
    assert database.read_bytes() == before
    missing = cli("estimate", grown, "--out", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "no results database here" in missing.stderr
    assert len([line for line in missing.stderr.splitlines() if line.strip()]) == 1


def test_wall_time_on_workers_hands_out_the_runs_units_in_order():
    """Units as a run forms them (a stack's training sets together, a G&C stream's N in order),
    each to the worker free first: here the units cost 3 (sgd N=4: 1 + 2), 7 (sgd N=8: 3 + 4),
    11 (gnc 200: 5 + 6) and 15 (gnc 201: 7 + 8) seconds."""
    from dataclasses import replace

    from benchsuite.estimate import CellCost, SuiteEstimate

    seconds = {("sgd", 4, 200): 1, ("sgd", 4, 201): 2, ("sgd", 8, 200): 3, ("sgd", 8, 201): 4,
               ("gnc", 4, 200): 5, ("gnc", 8, 200): 6, ("gnc", 4, 201): 7, ("gnc", 8, 201): 8}  # fmt: skip
    costs = tuple(
        CellCost(cell, float(seconds[(cell.entry.label, cell.n_train, cell.training_set_seed)]), "measured")
        for cell in expand(suite_of())
    )
    found = SuiteEstimate(costs, probe_seconds=0.0, device="cpu")
    assert found.wall_seconds(1) == found.seconds == 36
    # two workers: 3 -> A (free at 3), 7 -> B (7), 11 -> A (14), 15 -> B (22)
    assert found.wall_seconds(2) == 22
    # three: 3 -> A, 7 -> B, 11 -> C, then 15 -> A (free first, at 3): 18
    assert found.wall_seconds(3) == 18
    assert found.wall_seconds(4) == found.wall_seconds(40) == 15  # the largest unit: never split
    # in suite order, not longest first: the same units costing 15, 11, 7, 3 would take 18 on two
    reversed_costs = replace(found, costs=tuple(replace(c, seconds=9.0 - c.seconds) for c in found.costs))
    assert reversed_costs.wall_seconds(2) == 18  # 15 -> A, 11 -> B, 7 -> B (18), 3 -> A (18)


def test_a_busy_machine_is_said_beside_the_figures():
    """Probes that share the CPUs with other work read slow (with a run on both cores beside it,
    the zoo's wide-MLP estimate said 4.0 h of one process for cells that then took 28 min of wall
    time on two workers): the answer says so when the load average leaves no core free."""
    from rich.console import Console

    from benchsuite.estimate import SuiteEstimate
    from benchsuite.reporting.terminal import estimate_table

    assert SuiteEstimate((), 0.0, "cpu", load=1.4, cpus=2).busy is None  # a core free for the probe
    assert SuiteEstimate((), 0.0, "cpu").busy is None  # no load average on this system
    busy = SuiteEstimate((), 0.0, "cpu", load=2.3, cpus=2)
    assert "busy when the probes started (load 2.3 on 2 CPUs)" in busy.busy
    console = Console(record=True, width=400)
    estimate_table(busy, "x", console)
    assert f"note: {busy.busy}" in console.export_text()
    found = estimate(suite_of(models_per_cell=2), seconds=0.05)  # the real load of this machine
    assert found.cpus >= 1 and (found.load is None or found.load >= 0)


def test_gnc_is_probed_on_every_training_set_and_gradient_cells_once():
    """P(fit) differs between training sets of one pair and N (13x at N = 32 of a hard pair), so
    each G&C cell's data is probed; a gradient probe's rate serves every training set."""
    labels = []
    estimate(suite_of(models_per_cell=2), seconds=0.05, progress=lambda label, done, total: labels.append(label))
    probed = [label for label in labels if label.startswith("gnc ")]
    assert sorted(probed) == sorted(f"gnc mlp[width=1/6,depth=2] N={n} set {s}" for n in (4, 8) for s in (200, 201))
    assert len([label for label in labels if label.startswith("sgd ")]) == 1  # batch 2 at both N


def test_a_gnc_probe_with_few_fits_takes_p_fit_from_the_subset_simulation():
    """A probe stopped by the clock with 1-4 fits reads P(fit) high (a count of 0 goes to the
    subset simulation, so the counts kept over-represent luck): below FEW_FITS the simulation
    decides; from FEW_FITS on, or where no simulation runs, the fits extrapolate."""
    from benchsuite.estimate import FEW_FITS, cost_from_probe

    (cell, *_) = [c for c in expand(suite_of(models_per_cell=20)) if c.role == "baseline"]
    asked = []

    def bits(value):
        return lambda: asked.append(value) or value

    few = cost_from_probe(cell, FEW_FITS - 1, 4000, 0.5, bits(12.0))
    assert few.basis == "subset simulation" and asked == [12.0]
    assert few.seconds == pytest.approx(20 * 2**12 / 8000)  # 8,000 candidates/s
    assert f"the probe's {FEW_FITS - 1} of 20 in 0.5 s too few to extrapolate" in few.note
    enough = cost_from_probe(cell, FEW_FITS, 4000, 0.5, bits(12.0))
    assert enough.basis == "extrapolated" and enough.seconds == pytest.approx(0.5 * 20 / FEW_FITS)
    assert asked == [12.0]  # not asked again
    no_simulation = cost_from_probe(cell, 2, 4000, 0.5, bits(None))
    assert no_simulation.basis == "extrapolated" and no_simulation.seconds == pytest.approx(5.0)
    nothing = cost_from_probe(cell, 0, 4000, 0.5, bits(None))
    assert nothing.lower_bound and nothing.seconds == pytest.approx(0.5 * 20 / 3)
    subset = [c for c in expand(suite_of(baselines=[{"name": "subset-mcmc"}])) if c.role == "baseline"][0]
    assert cost_from_probe(subset, 1, 100, 1.0, bits(3.0)).basis == "extrapolated" and asked[-1] != 3.0
