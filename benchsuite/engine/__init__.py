"""Population engine: fast exact Guess & Check (gnc.py) and its counter-based random stream.

- gnc.guess_and_check(SamplingRequest) -> Population  (registered as sampler "gnc")
- gnc.regenerate(module, prior, seed, found_at, device, x_train=None) -> (parameters, buffers)
- gnc.regenerate_function_space(...)  for populations drawn with function_space=True
- random.py: the Philox stream (numpy on CPU, Triton kernel on CUDA, torch ops anywhere)
"""

from benchsuite.engine.gnc import (
    CACHE,
    DEFAULTS,
    guess_and_check,
    regenerate,
    regenerate_function_space,
)

__all__ = ["CACHE", "DEFAULTS", "guess_and_check", "regenerate", "regenerate_function_space"]
