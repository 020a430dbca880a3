"""Nested reuse across N: decisions made on a subset of the training points, kept for a superset.

Training sets are nested in N and the runner gives cells that differ only in N the same seed. A
candidate that fits a superset of points fits every subset, so the decisions of candidates
[0, R) on a point set S determine, for a superset S', that only the candidates accepted on S can
fit S'. The process-level cache (`DecisionCache`) keeps, per (seed, module structure, prior,
output_swap, tie rule), the accepted candidates on S below R; a later request whose points contain S
re-checks those on all its points and continues from R. The result is identical to a run
without the cache (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from benchsuite.records import SamplingRequest


@dataclass
class _CacheEntry:
    x: torch.Tensor
    y: torch.Tensor
    decided_below: int  # candidates [0, R) decided on (x, y)
    accepted: list[int]


@dataclass
class DecisionCache:
    """Process-level store of accepted candidate indices per (seed, structure, prior, points)."""

    entries: dict[tuple, list[_CacheEntry]] = field(default_factory=dict)
    max_entries_per_key: int = 8

    @staticmethod
    def key(request: SamplingRequest, output_swap: bool) -> tuple:
        structure = repr(request.module) + repr(
            [(n, tuple(p.shape)) for n, p in request.module.named_parameters()]
        )
        prior = (
            request.prior.name,
            request.prior.family,
            tuple(float(request.prior.scale(f)) for f in (1, 3, 25, 196, 1000)),
        )
        function_space = bool(request.options.get("function_space", False))
        return (
            int(request.seed),
            structure,
            prior,
            bool(output_swap),
            request.tie_rule,
            function_space,
            tuple(request.x_train.shape[1:]),
        )

    def lookup(self, key, x: torch.Tensor, y: torch.Tensor) -> _CacheEntry | None:
        best = None
        for entry in self.entries.get(key, []):
            if entry.x.shape[0] > x.shape[0] or not _is_subset(entry.x, entry.y, x, y):
                continue
            if best is None or entry.decided_below > best.decided_below:
                best = entry
        return best

    def store(self, key, x, y, decided_below: int, accepted: list[int]) -> None:
        bucket = self.entries.setdefault(key, [])
        for entry in bucket:
            if (
                entry.x.shape == x.shape
                and torch.equal(entry.x, x.cpu())
                and torch.equal(entry.y, y.cpu())
            ):
                if decided_below > entry.decided_below:
                    entry.decided_below, entry.accepted = decided_below, list(accepted)
                return
        bucket.append(
            _CacheEntry(
                x.detach().cpu().clone(), y.detach().cpu().clone(), decided_below, list(accepted)
            )
        )
        del bucket[: -self.max_entries_per_key]

    def clear(self) -> None:
        self.entries.clear()


def _is_subset(xs: torch.Tensor, ys: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Every (point, label) of (xs, ys) occurs in (x, y)."""
    x = x.detach().cpu().flatten(1)
    y = y.detach().cpu()
    for point, label in zip(xs.flatten(1), ys):
        match = (x == point).all(dim=1) & (y == label)
        if not bool(match.any()):
            return False
    return True

