"""Subset simulation (engine/subset.py) against answers obtained without it: an exact geometric
answer for a linear classifier, and exact Guess & Check on a small MLP."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import subset
from benchsuite.engine.gnc import guess_and_check
from benchsuite.records import SamplingRequest
from benchsuite.stacked import accuracy

PRIORS = {p.name: p for p in benchsuite_priors()}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small kernels: see conftest.py


def request(module, x, y, prior="uniform", target=64, seed=3, budget=10**9, **options):
    return SamplingRequest(
        module=module, x_train=x, y_train=y, prior=PRIORS[prior], target=target,
        max_candidates=budget, seed=seed, device=CPU, options=options,
    )


# ---------------------------------------------------------------------------------------------
# A case with a known answer: a bias-free linear classifier in the plane


def plane_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points at angles spread around the circle, labelled by a line through the origin at 30°,
    with a gap around it; shaped [n, 1, 1, 2] so the module flattens them."""
    generator = torch.Generator().manual_seed(seed)
    angles = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * math.pi
    boundary = math.radians(30)
    side = torch.sin(angles - boundary)
    keep = side.abs() > 0.05
    angles, side = angles[keep], side[keep]
    radius = 0.5 + torch.rand(angles.numel(), generator=generator, dtype=torch.float64)
    points = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1)
    labels = (side > 0).long()
    return points.float().view(-1, 1, 1, 2), labels


def balanced(points, labels, per_class):
    zeros = (labels == 0).nonzero().flatten()[:per_class]
    ones = (labels == 1).nonzero().flatten()[:per_class]
    index = torch.cat([zeros, ones])
    return points[index], labels[index]


def exact_linear_answer(x_train, y_train, x_test, y_test, grid=200_000):
    """P(fit) and the mean test accuracy of prior | fit for logits W x, W with i.i.d. Gaussian
    entries: the decision is sign(v . x) with v = w1 - w0 isotropic, so the direction of v is
    uniform on the circle. Both are integrals over that angle, done on a fine grid."""
    theta = torch.linspace(0, 2 * math.pi, grid + 1, dtype=torch.float64)[:-1]
    v = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    sign_train = (2 * y_train - 1).double()
    fits = ((x_train.view(-1, 2).double() @ v.T) * sign_train[:, None] > 0).all(dim=0)
    p_fit = float(fits.double().mean())
    predictions = (x_test.view(-1, 2).double() @ v[fits].T) > 0
    test_accuracy = float((predictions == y_test.bool()[:, None]).double().mean())
    return p_fit, test_accuracy


def test_linear_classifier_matches_the_exact_answer():
    module = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    points, labels = plane_data(400, seed=0)
    x, y = balanced(points[:200], labels[:200], 30)
    x_test, y_test = points[200:], labels[200:]
    p_fit, test_accuracy = exact_linear_answer(x, y, x_test, y_test)
    assert 3 < -math.log2(p_fit) < 9  # small enough that the levels matter
    population = subset.subset_mcmc(
        request(module, x, y, prior="kaiming-normal", target=400, particles=200, repeats=4)
    )
    estimate = population.estimates["neg_log2_p_fit"]
    error = population.estimates["neg_log2_p_fit_se"]
    assert abs(estimate - (-math.log2(p_fit))) < 4 * error + 0.15, (estimate, -math.log2(p_fit), error)
    sampled = float(accuracy(module, population.parameters, population.buffers, x_test, y_test).mean())
    assert abs(sampled - test_accuracy) < 0.01, (sampled, test_accuracy)


# ---------------------------------------------------------------------------------------------
# Against exact Guess & Check


def small_mlp():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 8, bias=False),
        nn.ReLU(),
        nn.Linear(8, 6, bias=False),
        nn.ReLU(),
        nn.Linear(6, 2, bias=False),
    )


def mlp_task(n: int, seed: int = 1):
    """A teacher network labels Gaussian inputs, so the classes are learnable, not noise."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(16, generator=generator)
    x = torch.randn(4 * n + 400, 1, 4, 4, generator=generator)
    labels = (x.flatten(1) @ teacher > 0).long()
    train_x, train_y = balanced(x[: 4 * n], labels[: 4 * n], n // 2)
    return train_x, train_y, x[4 * n :], labels[4 * n :]


def test_agrees_with_exact_guess_and_check_on_a_small_mlp():
    module = small_mlp()
    x, y, x_test, y_test = mlp_task(8)
    exact = guess_and_check(request(module, x, y, target=300, reuse_nested=False))
    exact_value = -math.log2(exact.size / exact.candidates_tried)
    assert exact_value > 6  # G&C needs tens of thousands of candidates here
    population = subset.subset_mcmc(request(module, x, y, target=300, particles=300, repeats=4))
    estimate = population.estimates["neg_log2_p_fit"]
    error = math.hypot(
        population.estimates["neg_log2_p_fit_se"],
        math.sqrt((1 - 2**-exact_value) / exact.size) / math.log(2),  # G&C's own error in bits
    )
    assert abs(estimate - exact_value) < 4 * error + 0.2, (estimate, exact_value, error)
    # the test accuracies of the two populations: same distribution (two-sample KS)
    from scipy.stats import ks_2samp

    ours = accuracy(module, population.parameters, population.buffers, x_test, y_test)
    theirs = accuracy(module, exact.parameters, exact.buffers, x_test, y_test)
    assert abs(float(ours.mean()) - float(theirs.mean())) < 0.02
    assert ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("tie_rule", ["argmax", "strict"])
def test_every_network_fits_and_a_seed_repeats(tie_rule):
    module = small_mlp()
    x, y, _, _ = mlp_task(10)
    make = lambda: subset.subset_mcmc(
        SamplingRequest(
            module=module, x_train=x, y_train=y, prior=PRIORS["uniform"], target=40,
            max_candidates=10**9, seed=9, device=CPU,
            options={"particles": 64, "repeats": 2, "moves": 4, "final_moves": 4},
            tie_rule=tie_rule,
        )
    )  # fmt: skip
    first, again = make(), make()
    assert first.size == 40 and not first.exhausted
    assert bool((accuracy(module, first.parameters, first.buffers, x, y, tie_rule) == 1).all())
    assert torch.equal(first.found_at, again.found_at)
    for name in first.parameters:
        assert torch.equal(first.parameters[name], again.parameters[name])
    assert first.chains.tolist() == [0] * 20 + [1] * 20  # half from each repeat
    for key in ("neg_log2_p_fit", "neg_log2_p_fit_se", "acceptance_mean", "unique_parents_min", "levels"):
        assert math.isfinite(first.estimates[key])


def test_levels_rank_margins_of_any_size():
    """The next level kills the particles at or below the K-th score, whatever the logits' scale.
    Summed into one float64 (points + exp(margin)), margins below about -35 vanished: every
    particle scored its point count, the level stayed where it was, and a run on MLP width 1,
    depth 4 (U[-1, 1], logits in the thousands) never ended."""
    m = 64
    margins = torch.full((m, 4), -1.0)
    margins[:, 0] = 1.0  # every particle fits point 1 and fails point 2, far from its boundary
    margins[:, 1] = -torch.linspace(100.0, 5000.0, m)
    right = margins > 0
    level = subset.next_level(margins, right, subset.Level(1, None), survival=0.5)
    assert level.points == 1 and level.threshold is not None
    # K = M - ceil(M / 2) + 1 = 33: the 33 lowest die, 31 survive
    assert int((margins[:, 1] > level.threshold).sum()) == m // 2 - 1


def test_a_run_does_not_depend_on_the_scale_of_the_logits():
    """A bias-free ReLU network's logits scale with its input, and its fits do not: inputs times
    2**12 (exact in float) must give the same run, bit for bit."""
    module = small_mlp()
    x, y, _, _ = mlp_task(12)
    options = {"particles": 64, "repeats": 2, "moves": 4, "final_moves": 4}
    plain = subset.subset_mcmc(request(module, x, y, target=20, **options))
    scaled = subset.subset_mcmc(request(module, x * 2.0**12, y, target=20, **options))
    assert plain.estimates["neg_log2_p_fit"] == scaled.estimates["neg_log2_p_fit"]
    assert plain.estimates["levels"] == scaled.estimates["levels"]
    for name in plain.parameters:
        assert torch.equal(plain.parameters[name], scaled.parameters[name])


def test_the_uniform_reparametrization_is_the_prior():
    """erf(z / sqrt 2) of a standard normal is uniform on [-1, 1]: moments and range."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(50, 2, bias=False))
    from benchsuite.engine.layout import build_layout

    reparametrization = subset.GaussianReparametrization.of(build_layout(module, PRIORS["uniform"]))
    z = torch.randn(4000, reparametrization.dimensions, generator=torch.Generator().manual_seed(0))
    weights = reparametrization.parameters(z)["1.weight"]
    assert float(weights.abs().max()) <= 1.0
    assert abs(float(weights.mean())) < 0.005
    assert abs(float(weights.var()) - 1 / 3) < 0.005


def test_batchnorm_and_bad_options_are_refused():
    x, y, _, _ = mlp_task(4)
    with_bn = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2, bias=False))
    with pytest.raises(ValueError, match="BatchNorm"):
        subset.subset_mcmc(request(with_bn, x, y))
    for options in ({"particles": 0}, {"survival": 1.5}, {"colour": 1}):
        with pytest.raises(ValueError, match="subset-mcmc"):
            subset.subset_mcmc(request(small_mlp(), x, y, **options))


def test_gelman_rubin_against_the_textbook_formula():
    from benchsuite.statistics import gelman_rubin

    same = [[0.0, 0.5, 1.0, 0.25], [1.0, 0.0, 0.5, 0.75]]
    # by hand: n = 4; chain means 0.4375 and 0.5625; both chains' squared deviations sum to
    # 0.546875, so W = 0.546875 / 3; B = n * sample variance of the two means
    w = 0.546875 / 3
    b = 4 * ((0.4375 - 0.5) ** 2 + (0.5625 - 0.5) ** 2) / 1
    assert gelman_rubin(same) == pytest.approx(math.sqrt((3 / 4 * w + b / 4) / w))
    apart = [[0.0, 0.1, 0.2], [5.0, 5.1, 5.2]]
    assert gelman_rubin(apart) > 3
    assert gelman_rubin([[1.0, 2.0]]) is None


# ---------------------------------------------------------------------------------------------
# Through the host: stored estimates and chains, the leaderboard's -log2 P(fit) and its marking


def test_a_run_stores_and_shows_the_estimate(tmp_path):
    import sqlite3

    from benchsuite.leaderboard import leaderboard_from_store
    from benchsuite.plugins import load_registry
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    registry = load_registry(include_entry_points=False)
    suite = validate_suite(
        {
            "name": "subset",
            "seed": 2,
            "device": "cpu",
            "models_per_cell": 20,
            "tasks": [{"dataset": "digits", "classes": [[3, 8]], "n_train": [4, 8], "training_set_seeds": [200, 201]}],
            "architectures": [{"name": "mlp", "widths": ["2/6"], "depths": [2]}],
            "baselines": [
                {"name": "gnc"},
                {"name": "subset-mcmc", "particles": 64, "repeats": 2, "moves": 4, "final_moves": 8},
            ],
            "leaderboard": {"baseline": "gnc"},
        },
        registry,
        "subset.yaml",
    )
    run_suite(suite, tmp_path, registry)
    database = tmp_path / "results.sqlite"
    with sqlite3.connect(database) as db:
        stored = dict(
            db.execute(
                "SELECT c.cell_id, e.value FROM cells c JOIN cell_estimates e USING (cell_id) "
                "WHERE e.name = 'neg_log2_p_fit'"
            ).fetchall()
        )
        chains = db.execute(
            "SELECT c.optimizer, COUNT(n.chain), COUNT(*) FROM networks n JOIN cells c USING (cell_id) GROUP BY 1"
        ).fetchall()
        optimizer_of = dict(db.execute("SELECT cell_id, optimizer FROM cells").fetchall())
        names = db.execute("SELECT cell_id, name FROM cell_estimates").fetchall()
    assert {optimizer_of[c] for c in stored} == {"subset-mcmc"} and len(stored) == 4
    assert sorted(chains) == [("gnc", 0, 80), ("subset-mcmc", 80, 80)]
    diagnostics = {"ess_test_acc", "rhat_test_acc", "rhat_neg_log2_p", "ess_p_fit", "evaluations", "pcn_steps"}
    for cell_id in stored:  # every estimated cell stores its diagnostics, the host's among them
        assert diagnostics <= {name for c, name in names if c == cell_id}
    with Store(database, read_only=True) as store:
        rows = {(r["optimizer"], r["n_train"]): r for r in leaderboard_from_store(store)}
        cells = {c["cell_id"]: c for c in store.cells()}
    for n_train in (4, 8):
        row = rows[("subset-mcmc", n_train)]
        expected = [v for cell_id, v in stored.items() if cells[cell_id]["n_train"] == n_train]
        assert row["neg_log2_p_fit"] == pytest.approx(sum(expected) / 2)
        assert row["neg_log2_p_fit_se"] is not None and isinstance(row["unreliable"], list)
        assert 0 < row["ess_test_acc"] <= row["models"]
        counted = rows[("gnc", n_train)]
        assert counted.get("neg_log2_p_fit_se") is None and counted["unreliable"] == []
        assert abs(row["neg_log2_p_fit"] - counted["neg_log2_p_fit"]) < 2.0


def test_agrees_with_exact_guess_and_check_on_real_digits():
    """Real data, the protocol's architecture: digits 3 vs 8, MLP width 1/6 depth 4, N = 6, the
    reference tie rule. The published check at N up to 32 is leaderboards/subset-mcmc-validation."""
    from scipy.stats import ks_2samp

    from benchsuite.architectures.build import build_module
    from benchsuite.plugins import load_registry
    from benchsuite.records import DataOptions
    from benchsuite.tasks import TaskCache

    registry = load_registry(include_entry_points=False)
    task = TaskCache().get(registry.dataset("digits"), DataOptions(), (3, 8), 6, 200, CPU)
    module = build_module(registry.architecture("mlp"), task.input_shape, "1/6", 4, False)

    def sample(name, options):
        return registry.sampler(name).sample(
            SamplingRequest(
                module=module, x_train=task.x_train, y_train=task.y_train, prior=PRIORS["uniform"],
                target=200, max_candidates=10**9, seed=5, device=CPU, options=options, tie_rule="argmax",
            )
        )  # fmt: skip

    exact = sample("gnc", {"cpu_threads": 1})
    population = sample("subset-mcmc", {"particles": 128, "repeats": 4, "moves": 12, "final_moves": 32})
    exact_value = -math.log2(exact.size / exact.candidates_tried)
    assert exact_value > 7  # about 600 candidates per interpolator
    error = math.hypot(
        population.estimates["neg_log2_p_fit_se"],
        math.sqrt((1 - 2**-exact_value) / exact.size) / math.log(2),
    )
    assert abs(population.estimates["neg_log2_p_fit"] - exact_value) < 4 * error + 0.2
    ours = accuracy(module, population.parameters, population.buffers, task.x_test, task.y_test)
    theirs = accuracy(module, exact.parameters, exact.buffers, task.x_test, task.y_test)
    assert abs(float(ours.mean()) - float(theirs.mean())) < 0.03
    assert ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 1e-3
