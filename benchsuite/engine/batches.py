"""Seeds and mini-batch orders for many-model training, each a pure function of (seed, attempt).

Why per-network seeds: a trained network must be regenerable from the run's seed and its attempt
index alone (its init and, for independent orders, its batch sequence), so results do not depend on
how many networks were stacked in a round or on which round a network fell into.
"""

from __future__ import annotations

import hashlib

import torch

from benchsuite.protocol import BATCH_ORDERS


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that is a stable hash of (seed, *parts): independent streams per purpose."""
    text = repr((int(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def init_seed(seed: int, attempt: int) -> int:
    """Generator seed of network `attempt`'s initial parameters (stacked.draw_parameters_)."""
    return derive_seed(seed, "init", int(attempt))


def optimizer_seed(seed: int, attempt: int) -> int:
    """Seed of network `attempt`'s own random numbers inside its optimizer (records.Networks.seeds:
    SGLD's noise), so a network draws the same numbers whichever stack it trains in."""
    return derive_seed(seed, "optimizer", int(attempt))


def epoch_orders(n_train: int, epochs: int, generator_seed: int) -> torch.Tensor:
    """[epochs, n_train] training-point order per epoch: a fresh randperm every epoch.

    Drawn on the CPU with torch.randperm, as torch's RandomSampler does, so orders are the same
    on every device.
    """
    generator = torch.Generator().manual_seed(int(generator_seed))
    if epochs == 0:
        return torch.zeros(0, n_train, dtype=torch.long)
    return torch.stack([torch.randperm(n_train, generator=generator) for _ in range(epochs)])


def network_orders(seed: int, attempt: int, n_train: int, epochs: int) -> torch.Tensor:
    """[epochs, n_train] orders of network `attempt` under batch_order="independent"."""
    return epoch_orders(n_train, epochs, derive_seed(seed, "batch-order", int(attempt)))


def shared_orders(seed: int, first_attempt: int, n_train: int, epochs: int) -> torch.Tensor:
    """[epochs, n_train] orders every network of the round starting at `first_attempt` shares.

    Keyed by the round's first attempt, so consecutive rounds see different sequences; which
    networks share a sequence therefore depends on networks_per_round (the price of sharing).
    """
    return epoch_orders(
        n_train, epochs, derive_seed(seed, "shared-batch-order", int(first_attempt))
    )


def round_orders(
    seed: int, attempts: range, n_train: int, epochs: int, batch_order: str
) -> torch.Tensor:
    """[K, epochs, n_train] orders of the networks `attempts` of one round."""
    if batch_order == "independent":
        return torch.stack([network_orders(seed, a, n_train, epochs) for a in attempts])
    if batch_order == "shared":
        orders = shared_orders(seed, attempts.start, n_train, epochs)
        return orders.unsqueeze(0).expand(len(attempts), epochs, n_train)
    raise ValueError(f"batch_order must be one of {BATCH_ORDERS}, got {batch_order!r}")


def batch_indices(orders: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Per optimizer step, the [K, b] training indices of each network, from [K, epochs, n] orders.

    Consecutive slices of each epoch's order, the last one partial when n % batch_size != 0
    (torch DataLoader with drop_last=False). All networks share n and batch_size, so at every
    step all batches have the same size b and stack.
    """
    epochs, n_train = orders.shape[1:]
    steps = []
    for epoch in range(epochs):
        epoch_order = orders[:, epoch]
        for start in range(0, n_train, batch_size):
            steps.append(epoch_order[:, start : start + batch_size].contiguous())
    return steps


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)
