"""Named protocol choices shared by the suite schema and the engines (no torch: the CLI reads it).

The defaults are the reference code's (Peleg & Hein, AmitPeleg/generalization); docs/protocol.md,
"Differences from the reference code", lists what each alternative changes.
"""

from __future__ import annotations

TIE_RULES = ("argmax", "strict")
"""How a point with two equal logits is decided (suite key `tie_rule`), for acceptance and for
test accuracy alike. "argmax": the reference's `argmax`, so a tie predicts class 0. "strict": a tie
is wrong for both classes (symmetric in the labels; a network with constant output fits nothing)."""
DEFAULT_TIE_RULE = "argmax"

TRAINING_DRAWS = ("reference", "per-class")
"""How the training images are drawn (task key `training_draw`; benchsuite.tasks.class_permutations):

- "reference": Peleg & Hein's code, exactly. One generator: seeded with the class-pair seed, it
  draws the pair (randperm(10)); it is reseeded with the training-set seed only when the two seeds
  differ; then, class by class (label 0 first), one permutation of that class's training-split
  indices and one of its test-split indices (which the reference draws there, unused here).
  Given explicit `classes` there is no class-pair seed, and the generator starts from the
  training-set seed (what the reference does whenever the two seeds differ).
- "per-class": benchsuite 0.1's draw: a fresh generator seeded with the training-set seed for each
  class, so both classes use the same permutation positions. Kept to rerun earlier results.
"""
DEFAULT_TRAINING_DRAW = "reference"

# The gradient baseline (protocol.md): an optimizer entry's defaults, which the training engine
# shares (engine/training.py's TrainingSettings), kept here so the two cannot drift apart.
DEFAULT_OPTIMIZER_PRIOR = "kaiming-uniform"
DEFAULT_BATCH_SIZE = 2
FULL_BATCH = "full"
"""`batch_size: full`: gradient descent on the whole training set (a batch of N)."""
DEFAULT_EPOCHS = 60
BATCH_ORDERS = ("independent", "shared")
"""Mini-batch orders (engine/batches.py): each network reshuffles on its own, or the networks of a
round share one sequence, as the reference code does."""
DEFAULT_BATCH_ORDER = "independent"
DEFAULT_BUDGET_PER_TARGET = 10
"""`max_networks` default: networks trained at most per interpolating network wanted."""

DEFAULT_SAMPLER_PRIOR = "uniform"

BIAS_AUTO = "auto"
"""Architecture `bias: auto`: gradient optimizers train biases initialised at zero; random
interpolators have none (the reference keeps them at zero, the same function)."""

CELL_STATUSES = ("ok", "diverged", "timed_out")
"""How a finished cell ended (results.sqlite `cells.status`). "ok": its population is stored.
"diverged": the optimizer found no interpolating network and some of its networks ended with a
NaN or inf loss (training stops early when every network so far did).
"timed_out": the suite's `max_seconds_per_cell` ran out first. Cells that are not "ok" store no
networks, so nothing they produced is ever counted as an interpolator."""
