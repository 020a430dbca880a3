"""Suite validation: every class of error names the file and key; expansion and seeds are stable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from cli_runner import cli

from benchsuite.errors import SuiteError
from benchsuite.plugins import load_registry
from benchsuite.resolved import content_hash, expand
from benchsuite.suite import load_suite, validate_suite

REGISTRY = load_registry(include_entry_points=False)

MINIMAL = {
    "name": "t",
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4, 8], "training_set_seeds": [200, 201]}],
    "architectures": [{"name": "mlp", "widths": ["1/6", 1]}],
    "optimizers": [{"name": "sgd"}],
    "baselines": [{"name": "gnc"}],
}


def with_change(path: tuple, value) -> dict:
    """A deep copy of MINIMAL with the value at `path` replaced (or a key added)."""
    document = yaml.safe_load(yaml.safe_dump(MINIMAL))
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return document


def error_of(document) -> SuiteError:
    with pytest.raises(SuiteError) as caught:
        validate_suite(document, REGISTRY, "suite.yaml")
    return caught.value


@pytest.mark.parametrize(
    "path, value, key, words",
    [
        # unknown keys
        (("colour",), "red", "colour", "unknown key"),
        (("tasks", 0, "n_trian"), [4], "tasks[0].n_trian", "did you mean 'n_train'"),
        (("optimizers", 0, "learning_rate"), 0.1, "optimizers[0].learning_rate", "unknown key"),
        # wrong types
        (("seed",), "zero", "seed", "expected an integer"),
        (("optimizers", 0, "lr"), "fast", "optimizers[0].lr", "expected a finite number"),
        (("architectures", 0, "bias"), "no", "architectures[0].bias", "expected auto, true or false"),
        (("tasks",), {"dataset": "digits"}, "tasks", "expected a list"),
        # impossible values
        (("tasks", 0, "n_train"), [4, 5], "tasks[0].n_train[1]", "must be even"),
        (("tasks", 0, "n_train"), [0], "tasks[0].n_train[0]", ">= 2"),
        (("tasks", 0, "classes"), [[3, 3]], "tasks[0].classes[0]", "must differ"),
        (("tasks", 0, "classes"), [[0, 12]], "tasks[0].classes[0][1]", "classes 0..9"),
        (("models_per_cell",), 0, "models_per_cell", ">= 1"),
        (("device",), "tpu", "device", "auto, cpu, cuda"),
        (("optimizers", 0, "batch_order"), "random", "optimizers[0].batch_order", "independent"),
        (("architectures", 0, "widths"), ["1/0"], "architectures[0]", "mlp"),
        # unknown plugins
        (("optimizers", 0, "name"), "adma", "optimizers[0].name", "did you mean 'adam'"),
        (("baselines", 0, "prior"), "kaiming", "baselines[0].prior", "kaiming-normal"),
        (("tasks", 0, "dataset"), "mnsit", "tasks[0].dataset", "did you mean 'mnist'"),
        (("architectures", 0, "name"), "lenet5", "architectures[0].name", "lenet"),
        # protocol choices
        (("tie_rule",), "coin", "tie_rule", "argmax"),
        (("tasks", 0, "training_draw"), "fresh", "tasks[0].training_draw", "per-class"),
        (("tasks", 0, "class_pair_seeds"), [201], "tasks[0].classes", "disagrees with class_pair_seeds"),
    ],
)
def test_every_error_names_file_key_and_what_is_valid(path, value, key, words):
    error = error_of(with_change(path, value))
    assert error.file == "suite.yaml"
    assert error.key == key
    assert words in str(error)
    assert "\n" not in str(error)


def test_lenet_on_digits_fails_at_validation():
    error = error_of(with_change(("architectures",), [{"name": "lenet"}]))
    assert error.key.startswith("architectures[0]") and "digits" in str(error)


def test_defaults_are_resolved_and_the_id_is_stable():
    suite = validate_suite(MINIMAL, REGISTRY, "a.yaml")
    sgd = suite.resolved["optimizers"][0]
    assert sgd["settings"] == {
        "prior": "kaiming-uniform", "batch_size": 2, "epochs": 60, "batch_order": "independent",
        "max_networks": 200,
    }  # fmt: skip
    assert sgd["hyperparameters"]["lr"] == 0.01 and sgd["hyperparameters"]["momentum"] == 0.0
    assert suite.resolved["baselines"][0]["settings"]["prior"] == "uniform"
    assert suite.reference_baseline == "gnc"
    assert suite.suite_id == validate_suite(MINIMAL, REGISTRY, "b.yaml").suite_id
    assert suite.suite_id == content_hash(suite.resolved)


def test_resolved_suite_is_typed_and_frozen():
    """Code reads named fields, built once by validation; the engine's training defaults are the
    suite's (one place: benchsuite.protocol)."""
    from benchsuite.engine.training import TrainingSettings

    suite = validate_suite(MINIMAL, REGISTRY)
    sgd = next(c for c in expand(suite) if c.role == "optimizer")
    settings = sgd.entry.settings
    engine = TrainingSettings()
    assert (settings.batch_size, settings.epochs, settings.batch_order) == (
        engine.batch_size, engine.epochs, engine.batch_order,
    )  # fmt: skip
    assert settings.max_networks == 10 * sgd.entry.models == 200
    assert sgd.architecture.label == sgd.architecture_label == "mlp[width=1/6,depth=4]"
    assert suite.tasks[0].classes == ((0, 1),) and suite.entries == suite.optimizers + suite.baselines
    with pytest.raises(dataclasses.FrozenInstanceError):
        sgd.entry.models = 1
    with pytest.raises(TypeError):
        sgd.entry.hyperparameters["lr"] = 1.0
    assert sgd.entry.hyperparameters["lr"] == 0.01


def test_grid_expands_into_labelled_entries():
    document = with_change(("optimizers",), [{"name": "sgd", "grid": {"lr": [0.1, 0.01], "epochs": [1, 60]}}])
    labels = [e["label"] for e in validate_suite(document, REGISTRY).resolved["optimizers"]]
    assert labels == ["sgd[lr=0.1,epochs=1]", "sgd[lr=0.1,epochs=60]", "sgd[lr=0.01,epochs=1]", "sgd[lr=0.01,epochs=60]"]


def test_class_pair_seeds_resolve_to_pairs():
    document = with_change(("tasks", 0), {"dataset": "digits", "class_pair_seeds": [202], "n_train": [4]})
    assert validate_suite(document, REGISTRY).resolved["tasks"][0]["classes"] == [[7, 0]]


def test_reference_choices_are_the_defaults_and_recorded():
    resolved = validate_suite(MINIMAL, REGISTRY).resolved
    assert resolved["tie_rule"] == "argmax"
    assert resolved["tasks"][0]["training_draw"] == "reference"
    assert resolved["tasks"][0]["class_pair_seeds"] is None
    seeded = with_change(("tasks", 0), {"dataset": "digits", "class_pair_seeds": [202], "n_train": [4]})
    task = validate_suite(seeded, REGISTRY).resolved["tasks"][0]
    assert task["class_pair_seeds"] == [202] and task["classes"] == [[7, 0]]
    cells = expand(validate_suite(seeded, REGISTRY))
    assert {c.class_pair_seed for c in cells} == {202}
    assert {c.class_pair_seed for c in expand(validate_suite(MINIMAL, REGISTRY))} == {None}


def test_the_tie_rule_changes_cells_but_not_their_streams():
    """Under either rule a cell tries the same candidates: the rules compare on one sample."""
    argmax = expand(validate_suite(MINIMAL, REGISTRY))
    strict = expand(validate_suite(with_change(("tie_rule",), "strict"), REGISTRY))
    assert {c.tie_rule for c in strict} == {"strict"}
    assert not {c.cell_id for c in argmax} & {c.cell_id for c in strict}
    assert [c.seed for c in argmax] == [c.seed for c in strict]


def test_the_training_draw_changes_cells_and_streams():
    reference = expand(validate_suite(MINIMAL, REGISTRY))
    old = expand(validate_suite(with_change(("tasks", 0, "training_draw"), "per-class"), REGISTRY))
    assert {c.training_draw for c in old} == {"per-class"}
    assert not {c.cell_id for c in reference} & {c.cell_id for c in old}
    assert not {c.seed for c in reference} & {c.seed for c in old}


def test_cells_are_independent_of_other_cells():
    cells = {c.cell_id: c for c in expand(validate_suite(MINIMAL, REGISTRY))}
    # 1 pair x 2 seeds x 2 widths x 2 methods x 2 N
    assert len(cells) == 16
    bigger = with_change(("tasks", 0, "n_train"), [4, 8, 16])
    bigger["optimizers"].append({"name": "adam"})
    more = {c.cell_id: c for c in expand(validate_suite(bigger, REGISTRY))}
    assert set(cells) <= set(more)
    assert all(more[i].seed == c.seed for i, c in cells.items())


def test_sampler_stream_is_shared_across_n():
    cells = [c for c in expand(validate_suite(MINIMAL, REGISTRY)) if c.role == "baseline"]
    by_stream = {}
    for cell in cells:
        by_stream.setdefault((cell.training_set_seed, cell.architecture_label), set()).add(cell.seed)
    assert all(len(seeds) == 1 for seeds in by_stream.values())
    assert len({next(iter(s)) for s in by_stream.values()}) == len(by_stream)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("tasks:\n  - dataset: digits\n    n_train: [4, 8\n")
    with pytest.raises(SuiteError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_suite(path, REGISTRY)


def test_cli_validation_error_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_change(("optimizers", 0, "name"), "adma")))
    out = tmp_path / "out"
    for command in (["validate", str(path)], ["run", str(path), "--out", str(out)]):
        result = cli(*command)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "bad.yaml: optimizers[0].name: unknown optimizer 'adma'" in lines[0]
    assert not out.exists()


def test_shipped_quickstart_is_valid():
    suite = load_suite(Path(__file__).parents[1] / "suites" / "quickstart.yaml", REGISTRY)
    assert suite.resolved["tasks"][0]["dataset"] == "digits"
    assert {e["name"] for e in suite.resolved["optimizers"]} == {"sgd", "adam"}
    assert suite.reference_baseline == "gnc"


def test_resolved_suite_round_trips_to_a_runnable_file(tmp_path):
    document = with_change(("optimizers",), [{"name": "sgd", "grid": {"lr": [0.1, 0.01]}}, {"name": "adam", "epochs": 5}])
    suite = validate_suite(document, REGISTRY)
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(suite.as_document()))
    again = load_suite(path, REGISTRY)
    assert again.resolved == suite.resolved
    assert again.suite_id == suite.suite_id


def test_performance_options_leave_cells_and_seeds_alone():
    def cells(baseline: dict) -> dict:
        document = with_change(("baselines",), [baseline])
        return {c.cell_id: c.seed for c in expand(validate_suite(document, REGISTRY)) if c.role == "baseline"}

    plain = cells({"name": "gnc"})
    assert cells({"name": "gnc", "chunk_size": 4096, "cpu_threads": 1, "early_rejection": False}) == plain
    assert set(cells({"name": "gnc", "output_swap": False}).values()).isdisjoint(plain.values())
