"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.ranges import boolean_or, integer_at_least, integer_or, interval, positive_fraction
from benchsuite.records import SamplerSpec


class _LazyGuessAndCheck:
    """Imports the G&C engine on first use, so listing plugins stays cheap; owns the sampler (and
    with it the decision cache for nested reuse) for as long as the registry lives."""

    def __init__(self):
        self._sampler = None

    def __call__(self, request):
        if self._sampler is None:
            from benchsuite.engine.gnc import GuessAndCheck

            self._sampler = GuessAndCheck()
        return self._sampler(request)


def _check_gnc(options):
    """G&C's options that are "auto" or a number, checked here instead of deep inside a run."""
    integer_or(options, "chunk_size", "auto")
    integer_or(options, "cpu_threads", "auto")
    boolean_or(options, "early_rejection", "auto")
    positive_fraction(options, "memory_fraction")


def _subset_mcmc(request):
    from benchsuite.engine.subset import subset_mcmc

    return subset_mcmc(request)


def _check_subset_mcmc(options):
    for name in ("particles", "repeats", "moves", "final_moves", "particles_per_call"):
        integer_at_least(options, name, 1)
    interval(options, "survival", 0.01, 1.0)
    interval(options, "target_acceptance", 0.01, 1.0)
    positive_fraction(options, "initial_step")


@hookimpl
def benchsuite_samplers():
    from benchsuite.engine import subset
    from benchsuite.engine.gnc import DEFAULTS, PERFORMANCE_OPTIONS

    return [
        SamplerSpec(
            "gnc",
            _LazyGuessAndCheck(),
            defaults=dict(DEFAULTS),
            performance_options=PERFORMANCE_OPTIONS,
            check=_check_gnc,
            description="Guess & Check: exact rejection sampling from the prior (counter-based "
            "Philox stream, output-swap symmetry, staged early rejection, nested reuse across N)",
        ),
        SamplerSpec(
            "subset-mcmc",
            _subset_mcmc,
            defaults=dict(subset.DEFAULTS),
            performance_options=subset.PERFORMANCE_OPTIONS,
            check=_check_subset_mcmc,
            description="Subset simulation: prior | fit at large N by sequential Monte Carlo over "
            "the nested training sets with pCN moves; estimates P(fit) (docs/samplers.md)",
        ),
    ]
