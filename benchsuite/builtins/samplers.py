"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.ranges import boolean_or, integer_or, positive_fraction
from benchsuite.records import SamplerSpec


def _guess_and_check(request):
    from benchsuite.engine.gnc import guess_and_check

    return guess_and_check(request)


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
            _guess_and_check,
            defaults=dict(DEFAULTS),
            performance_options=PERFORMANCE_OPTIONS,
            check=_check_gnc,
            description="Guess & Check: exact rejection sampling from the prior (counter-based "
            "Philox stream, output-swap symmetry, staged early rejection, nested reuse across N)",
        )
    ]
