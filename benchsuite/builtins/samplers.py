"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import SamplerSpec


def _guess_and_check(request):
    from benchsuite.engine.gnc import guess_and_check

    return guess_and_check(request)


@hookimpl
def benchsuite_samplers():
    from benchsuite.engine.gnc import DEFAULTS, PERFORMANCE_OPTIONS

    return [
        SamplerSpec(
            "gnc",
            _guess_and_check,
            defaults=dict(DEFAULTS),
            performance_options=PERFORMANCE_OPTIONS,
            description="Guess & Check: exact rejection sampling from the prior (counter-based "
            "Philox stream, output-swap symmetry, staged early rejection, nested reuse across N)",
        )
    ]
