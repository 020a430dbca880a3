"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
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


@hookimpl
def benchsuite_samplers():
    from benchsuite.engine.gnc import DEFAULTS, PERFORMANCE_OPTIONS

    return [
        SamplerSpec(
            "gnc",
            _LazyGuessAndCheck(),
            defaults=dict(DEFAULTS),
            performance_options=PERFORMANCE_OPTIONS,
            description="Guess & Check: exact rejection sampling from the prior (counter-based "
            "Philox stream, output-swap symmetry, staged early rejection, nested reuse across N)",
        )
    ]
