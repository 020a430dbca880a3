"""`benchsuite new-plugin KIND NAME`: a ready-to-install plugin distribution that conforms as written.

Each template is the smallest complete plugin of its kind (pyproject with the entry point, the
module, a test that runs benchsuite.testing on it, a README); an author edits from working code.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchsuite.errors import BenchsuiteError

NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "benchsuite-{name}"
version = "0.1.0"
description = "{summary} as a benchsuite plugin."
requires-python = ">=3.10"
dependencies = ["benchsuite", "torch"]

[project.entry-points.benchsuite]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
'''

TEST = '''"""benchsuite's conformance checks on this plugin (the same as `benchsuite check-plugin {name}`)."""

from benchsuite.testing import assert_conforms


def test_{module}_conforms():
    assert_conforms("{name}", kind="{kind}")
'''

README = '''# benchsuite-{name}

{summary} as a [benchsuite](https://pypi.org/project/benchsuite/) plugin.

    pip install -e .
    benchsuite plugins {name}        # what a suite may set
    benchsuite check-plugin {name}   # the conformance checks
    python -m pytest tests

Then name it in a suite, e.g. `{usage}`.
'''

OPTIMIZER = '''"""{summary}: a benchsuite optimizer plugin.

The host calls it as torch.optim's contract says (docs/writing-plugins.md): per mini-batch it
computes the gradients, then calls step(closure). Declare every setting; say elementwise=True only
if each entry's update depends on that entry's own history alone (check-plugin verifies it).
"""

import torch

from benchsuite import hookimpl
from benchsuite.records import Hyperparameter, OptimizerSpec, Search


class {classname}(torch.optim.Optimizer):
    """Heavy-ball SGD; replace the update with your own."""

    def __init__(self, params, lr=0.01, momentum=0.9):
        super().__init__(params, {{"lr": lr, "momentum": momentum}})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                velocity.mul_(group["momentum"]).add_(p.grad)
                p.add_(velocity, alpha=-group["lr"])


@hookimpl
def benchsuite_optimizers():
    return [
        OptimizerSpec(
            name="{name}",
            factory={classname},
            hyperparameters={{
                "lr": Hyperparameter(float, 0.01, low=0.0, search=Search(1e-4, 1.0)),
                "momentum": Hyperparameter(float, 0.9, low=0.0, high=1.0, open_high=True),
            }},
            elementwise=True,
            description="{summary}",
        )
    ]
'''

SAMPLER = '''"""{summary}: a benchsuite random-interpolator plugin.

A sampler returns networks drawn from the prior that fit the training set. This one is plain
Guess & Check: draw a chunk of networks, keep those that fit, until it has enough.
"""

import time

import torch

from benchsuite import hookimpl
from benchsuite.records import Hyperparameter, Population, SamplerSpec
from benchsuite.stacked import accuracy, init_stacked


def sample(request):
    started = time.perf_counter()
    chunk = request.options["chunk"]
    kept, found_at, tried = [], [], 0
    while len(found_at) < request.target and tried < request.max_candidates:
        count = min(chunk, request.max_candidates - tried)
        seeds = [request.seed * 1_000_003 + tried + i for i in range(count)]  # one seed per candidate
        parameters, buffers = init_stacked(request.module, request.prior, seeds, request.device)
        fits = accuracy(request.module, parameters, buffers, request.x_train, request.y_train, request.tie_rule) == 1
        for i in fits.nonzero().flatten().tolist()[: request.target - len(found_at)]:
            kept.append({{name: value[i] for name, value in parameters.items()}})
            found_at.append(tried + i)
        tried += count
        if request.progress is not None:
            request.progress(len(found_at), tried)
    stacked = {{name: torch.stack([k[name] for k in kept]) if kept else parameters[name][:0] for name in parameters}}
    return Population(
        parameters=stacked,
        buffers={{name: value[: len(kept)] for name, value in buffers.items()}},
        found_at=torch.tensor(found_at, dtype=torch.int64),
        candidates_tried=tried if len(found_at) < request.target else found_at[-1] + 1,
        seconds=time.perf_counter() - started,
        exhausted=len(found_at) < request.target,
    )


@hookimpl
def benchsuite_samplers():
    return [
        SamplerSpec(
            name="{name}",
            sample=sample,
            options={{"chunk": Hyperparameter(int, 4096, low=1, help="candidates drawn at once")}},
            performance_options=frozenset({{"chunk"}}),
            description="{summary}",
        )
    ]
'''

DATASET = '''"""{summary}: a benchsuite dataset plugin.

`load` returns the full train and test splits of all classes as [n, C, H, W] images (uint8, or
floats in [0, 1]) and integer labels; the host draws class pairs and training sets from them.
Replace the synthetic images below with your reader (read from `options.root`; download only
when `options.download` is true).
"""

import torch

from benchsuite import hookimpl
from benchsuite.records import DatasetSpec, ImageSplits

CLASSES = 10
SHAPE = (1, 8, 8)


def _split(per_class, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    centres = torch.rand(CLASSES, *SHAPE, generator=torch.Generator().manual_seed(0))
    images = centres[labels] + 0.1 * torch.randn(len(labels), *SHAPE, generator=generator)
    return images.clamp(0, 1), labels


def load(options):
    train_images, train_labels = _split(200, 1)
    test_images, test_labels = _split(50, 2)
    return ImageSplits(train_images, train_labels, test_images, test_labels)


@hookimpl
def benchsuite_datasets():
    return [
        DatasetSpec(
            name="{name}",
            load=load,
            description="{summary}",
            num_classes=CLASSES,
            holdout_per_class=16,
            input_shape=SHAPE,
        )
    ]
'''

METRIC = '''"""{summary}: a benchsuite per-network metric plugin.

`compute` gets a MetricInput (the template module, the K networks' stacked parameters and
buffers, the task's tensors) and returns one value per network, computed for all K at once.
This one is the parameter norm; replace it with your own.
"""

import torch

from benchsuite import hookimpl
from benchsuite.records import MetricSpec


def compute(data):
    squares = [value.detach().double().flatten(1).pow(2).sum(dim=1) for value in data.parameters.values()]
    return torch.stack(squares).sum(dim=0).sqrt()


@hookimpl
def benchsuite_metrics():
    return [MetricSpec(name="{name}", compute=compute, label="parameter norm", description="{summary}")]
'''

KINDS = {
    "optimizer": (OPTIMIZER, "optimizers: [{name}]"),
    "sampler": (SAMPLER, "baselines: [{name}]"),
    "dataset": (DATASET, "tasks: [{{dataset: {name}, classes: [[0, 1]], n_train: [4]}}]"),
    "metric": (METRIC, "metrics: [{name}]"),
}


def new_plugin(kind: str, name: str, out: str | Path = ".") -> Path:
    """Write the distribution benchsuite-NAME under `out`; returns its folder. Nothing is written
    if the name is invalid or the folder exists."""
    if kind not in KINDS:
        raise BenchsuiteError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if not NAME.match(name):
        raise BenchsuiteError(f"plugin name {name!r}: use 1-40 lower-case letters, digits or '-', starting with a letter")
    folder = Path(out) / f"benchsuite-{name}"
    if folder.exists():
        raise BenchsuiteError(f"{folder}: already exists; choose another name or folder")
    module = "benchsuite_" + name.replace("-", "_")
    classname = "".join(part.capitalize() for part in name.split("-")) or "Optimizer"
    summary = f"The {name} {kind}"
    template, usage = KINDS[kind]
    values = {"name": name, "module": module, "classname": classname, "summary": summary, "kind": kind}
    files = {
        "pyproject.toml": PYPROJECT.format(**values),
        f"{module}/__init__.py": template.format(**values),
        f"tests/test_{module}.py": TEST.format(**values),
        "README.md": README.format(**values, usage=usage.format(name=name)),
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
