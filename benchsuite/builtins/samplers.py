"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.ranges import boolean_or, integer_or, positive_fraction
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


@hookimpl
def benchsuite_samplers():
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
        )
    ]
