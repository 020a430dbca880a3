"""The published Guess & Check approach, written plainly: the baseline the engine is measured by.

Peleg & Hein's code (and Chiang et al.'s before it) draws, for every chunk of M candidate networks,
all weights afresh with torch's uniform_, and evaluates the M networks on all N training images at
once with grouped convolutions (group g holds network g; a Linear layer is a grouped 1x1 conv).
A candidate is accepted iff its argmax is right on all N images (ties wrong, as in benchsuite).
No early rejection, no output swap, no reuse: every candidate costs its full parameter draw and a
full forward over all N images.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


def _grouped_forward(layers, weights, x, m):
    """Logits [N, M, 2] of M networks on x [N, C, H, W]; weights[i] stacked per network."""
    n = x.shape[0]
    h = x.repeat(1, m, 1, 1)  # [N, M*C, H, W]
    flat = False
    w_iter = iter(weights)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            w = next(w_iter)  # [M, Cout, Cin, k, k]
            h = F.conv2d(
                h, w.reshape(-1, *w.shape[2:]), stride=layer.stride, padding=layer.padding, groups=m
            )
        elif isinstance(layer, nn.Linear):
            w = next(w_iter)  # [M, out, in]
            if not flat:
                h = h.reshape(n, m * w.shape[2], 1)
                flat = True
            h = F.conv1d(h, w.reshape(-1, w.shape[2], 1), groups=m)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.max_pool2d(h, layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.Flatten):
            h = h.reshape(n, m, -1).reshape(n, -1, 1)
            flat = True
        else:
            raise TypeError(f"reference supports Conv2d/Linear/ReLU/MaxPool2d/Flatten, not {layer}")
    return h.reshape(n, m, 2)


@torch.no_grad()
def reference_guess_and_check(module: nn.Sequential, x, y, chunk: int, chunks: int, bound=1.0):
    """Runs `chunks` chunks of `chunk` candidates; returns (candidates, accepted, seconds)."""
    layers = list(module)
    shapes = [tuple(l.weight.shape) for l in layers if isinstance(l, (nn.Conv2d, nn.Linear))]
    accepted = 0
    start = time.perf_counter()
    for _ in range(chunks):
        weights = [
            torch.empty((chunk, *s), device=x.device).uniform_(-bound, bound) for s in shapes
        ]
        logits = _grouped_forward(layers, weights, x, chunk)  # [N, M, 2]
        right = torch.where(
            y.bool().view(-1, 1), logits[..., 1] > logits[..., 0], logits[..., 0] > logits[..., 1]
        )
        accepted += int(right.all(dim=0).sum())
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return chunk * chunks, accepted, time.perf_counter() - start
