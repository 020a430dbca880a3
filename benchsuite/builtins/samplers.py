"""Built-in random-interpolator samplers."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import Hyperparameter, SamplerSpec


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


def _subset_mcmc(request):
    from benchsuite.engine.subset import subset_mcmc

    return subset_mcmc(request)


def _count(default: int, help: str) -> Hyperparameter:
    return Hyperparameter(int, default, low=1, help=help)


def _auto_count(help: str) -> Hyperparameter:
    return Hyperparameter(int, "auto", low=1, words=("auto",), help=help)


def _switch(default: bool, help: str) -> Hyperparameter:
    return Hyperparameter(bool, default, help=help)


def _share(default: float, help: str) -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, high=1.0, open_low=True, help=help)


def _rate(default: float, help: str) -> Hyperparameter:
    return Hyperparameter(float, default, low=0.01, high=1.0, open_high=True, help=help)


# Declared here rather than read from the engines, so listing plugins imports no torch; a test
# keeps these defaults equal to engine.gnc.DEFAULTS and engine.subset.DEFAULTS.
GNC_OPTIONS = {
    "chunk_size": _auto_count("candidates per chunk; auto: from free device memory"),
    "output_swap": _switch(True, "decide the output-row swap of every draw too"),
    "early_rejection": Hyperparameter(
        bool, "auto", words=("auto",), help="decide on a few points first (auto: where it pays)"
    ),
    "memory_fraction": _share(0.5, "share of free device memory a chunk may use"),
    "reuse_nested": _switch(True, "reuse decisions made on a subset of the training points"),
    "fast_path": _switch(True, "specialised forward for plain Sequentials (else vmap)"),
    "cpu_threads": _auto_count("worker threads on CPU; auto: the CPUs this process may use"),
    "function_space": _switch(False, "Gaussian priors: draw first-layer pre-activations directly"),
}
GNC_PERFORMANCE_OPTIONS = frozenset(
    {"chunk_size", "early_rejection", "memory_fraction", "reuse_nested", "fast_path", "cpu_threads"}
)
SUBSET_MCMC_OPTIONS = {
    "particles": _count(512, "particles per repeat"),
    "repeats": _count(4, "independent repeats (interval and agreement check)"),
    "moves": _count(24, "pCN sweeps after each resampling"),
    "final_moves": _count(48, "extra sweeps at the last level"),
    "survival": _rate(0.5, "target share of survivors per level"),
    "target_acceptance": _rate(0.3, "pCN acceptance rate the step size adapts to"),
    "initial_step": _share(0.5, "pCN step at the first level"),
    "particles_per_call": _count(256, "networks evaluated at once (memory; speed only)"),
}
SUBSET_MCMC_PERFORMANCE_OPTIONS = frozenset({"particles_per_call"})


@hookimpl
def benchsuite_samplers():
    return [
        SamplerSpec(
            name="gnc",
            sample=_LazyGuessAndCheck(),
            options=GNC_OPTIONS,
            performance_options=GNC_PERFORMANCE_OPTIONS,
            description="Guess & Check: exact rejection sampling from the prior (counter-based "
            "Philox stream, output-swap symmetry, staged early rejection, nested reuse across N)",
        ),
        SamplerSpec(
            name="subset-mcmc",
            sample=_subset_mcmc,
            options=SUBSET_MCMC_OPTIONS,
            performance_options=SUBSET_MCMC_PERFORMANCE_OPTIONS,
            description="Subset simulation: prior | fit at large N by sequential Monte Carlo over "
            "the nested training sets with pCN moves; estimates P(fit) (docs/samplers.md)",
        ),
    ]
