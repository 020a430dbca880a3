"""SAM and SGLD for K stacked networks: optimizers that own their step (OptimizerSpec.stacked).

Both take the host's `networks` (records.Networks) and step tensors whose leading axis indexes
networks; each keeps the networks independent, so K networks trained in one stack equal the same
K trained one by one (tests/test_optimizer_contract.py, against plain loops on one nn.Module):
- SAM reduces its gradient norm per network (over all non-leading dimensions of all tensors);
- SGLD draws each network's noise from that network's own generator.
They are also worked examples of the contract in docs/optimizer-contract.md.
"""

from __future__ import annotations

import math

import torch

from benchsuite.records import Networks


def network_norms(tensors: list[torch.Tensor], networks: Networks) -> torch.Tensor:
    """[K] L2 norm of each network's entries over all `tensors` (leading axis: networks).

    The same reduction, row by row, as the textbook norm of one network's tensors,
    `torch.linalg.vector_norm(torch.stack([t.norm() for t in tensors]))`: each [K, n] row and
    then each [K, P] row are contiguous, which torch reduces exactly as it reduces one vector.
    """
    if networks.model_axis != 0:
        raise ValueError(f"model_axis {networks.model_axis} is not supported (only 0)")
    count = networks.count
    per_tensor = [torch.linalg.vector_norm(t.reshape(count, -1), dim=1) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1)


def _per_network(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[K] values shaped to broadcast against a stacked tensor [K, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class SAM(torch.optim.SGD):
    """Sharpness-aware minimization over SGD (Foret et al., ICLR 2021), network by network.

    The host has computed g = grad L(w) on the current batch. For each network: e = rho g / (||g||
    + 1e-12), with ||g|| the norm over the network's whole parameter vector; w + e; the closure
    recomputes the gradient there; then w is restored (copied back, not subtracted) and SGD with
    momentum steps from w with the gradient taken at w + e. Foret et al.'s reference code
    (davda54/sam) computes the norm and the perturbation the same way.
    """

    def __init__(self, params, networks: Networks, lr=0.01, momentum=0.0, rho=0.05):
        if not 0.0 <= rho:
            raise ValueError(f"Invalid rho: {rho}")
        super().__init__(params, lr=lr, momentum=momentum)
        self.networks = networks
        for group in self.param_groups:
            group["rho"] = rho

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("SAM needs the closure: it takes a second gradient at w + e")
        tensors = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms = network_norms([p.grad for p in tensors], self.networks)
        originals = []
        for group in self.param_groups:
            scale = group["rho"] / (norms + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                originals.append((p, p.detach().clone()))
                p.add_(p.grad * _per_network(scale, p))
        with torch.enable_grad():
            loss = closure()
        for p, original in originals:
            p.copy_(original)
        super().step()
        return loss


class SGLD(torch.optim.SGD):
    """Stochastic gradient Langevin dynamics: an SGD step, then N(0, 2 lr T) noise on every entry.

    Each step network k draws one standard normal vector of its parameter count from its own
    torch.Generator, seeded with networks.seeds[k], and adds sqrt(2 lr temperature) times it to
    its parameters, split over them in order. So a network's noise is its own stream whichever
    stack it trains in (lr is the group's current learning rate, after the host's schedule).
    """

    def __init__(self, params, networks: Networks, lr=0.01, temperature=1e-4):
        if not 0.0 <= temperature:
            raise ValueError(f"Invalid temperature: {temperature}")
        super().__init__(params, lr=lr)
        self.networks = networks
        for group in self.param_groups:
            group["temperature"] = temperature
        tensors = [p for group in self.param_groups for p in group["params"]]
        if tensors and networks.model_axis != 0:
            raise ValueError(f"model_axis {networks.model_axis} is not supported (only 0)")
        device = tensors[0].device if tensors else torch.device("cpu")
        self.generators = [torch.Generator(device).manual_seed(int(s)) for s in networks.seeds]
        self.per_network = sum(p[0].numel() for p in tensors) if tensors else 0
        self.noise = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        super().step()
        tensors = [p for group in self.param_groups for p in group["params"]]
        if not tensors:
            return loss
        if self.noise is None:
            self.noise = torch.empty(
                self.networks.count, self.per_network, dtype=tensors[0].dtype,
                device=tensors[0].device,
            )  # fmt: skip
        for k, generator in enumerate(self.generators):
            torch.randn(self.per_network, generator=generator, out=self.noise[k])
        offset = 0
        for group in self.param_groups:
            std = math.sqrt(2.0 * group["lr"] * group["temperature"])
            for p in group["params"]:
                size = p[0].numel()
                p.view(self.networks.count, size).add_(
                    self.noise[:, offset : offset + size], alpha=std
                )
                offset += size
        return loss
