"""The numerics-divergence rule: which optimizer failures lose networks to numerics, not the run.

An optimizer that raises while a network's last loss, a weight or a gradient is NaN or inf failed
on a diverged network (Shampoo's SVD of a NaN gradient), and a torch.linalg.LinAlgError from a
step is its linear algebra failing on that network's numbers (an SVD that does not converge):
either way the network is lost to numerics (its parameters set to NaN, counted as diverged) and
the suite goes on; any other error is the plugin's and stops the run (docs/reliability.md).

One network at a time (engine/training.py's per-network path) the rule reads off the network.
A stack (the other paths) fails as a whole, so train_losing_diverged retrains its networks in
smaller stacks until every failure is alone: the networks that were finite when the stack failed
together, each one that was NaN or inf alone (it may stop where it blows up), and after a
LinAlgError on finite numbers the stack in halves. A stack of one that fails under the rule is
lost, exactly as on the per-network path. Every network thus ends as a stack without the lost
ones trains it, which for an optimizer that keeps networks apart (the contract) is what it gets
alone, or in the whole stack had nothing raised (tests/test_faults.py). An optimizer that
couples the networks of a stack (against the contract) gives the others what it gives them in
that smaller stack. Cost: the stack again without its failures, plus one short training per
network that blew up (about 2 log2 K stacks per LinAlgError); none unless a step failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from benchsuite.errors import OptimizerStepError


def blew_up(tensors: Iterable[torch.Tensor], losses: Iterable[torch.Tensor] = ()) -> bool:
    """Whether one network's last loss, a parameter or a gradient is NaN or inf."""
    tensors = list(tensors)
    values = [*losses, *tensors, *(t.grad for t in tensors if t.grad is not None)]
    return any(not bool(torch.isfinite(v.detach()).all()) for v in values)


def blown_up_networks(
    count: int, stacked: Iterable[torch.Tensor], loss: torch.Tensor | None = None
) -> torch.Tensor:
    """[count] bool: the networks of a stack with a NaN or inf in `stacked` (weights and
    gradients, [count, ...] each) or in their loss ([count]). A loss that is one number (the sum
    of the stack's losses) and not finite, with no network marked otherwise, marks them all."""
    bad = torch.zeros(count, dtype=torch.bool)
    for tensor in stacked:
        if tensor is not None and tensor.dim() > 0 and tensor.shape[0] == count:
            bad |= ~torch.isfinite(tensor.detach()).reshape(count, -1).all(dim=1).cpu()
    if isinstance(loss, torch.Tensor):
        finite = torch.isfinite(loss.detach()).cpu()
        if loss.shape == (count,):
            bad |= ~finite
        elif not bool(finite.all()) and not bool(bad.any()):
            bad[:] = True
    return bad


def note_blown_up(error: OptimizerStepError, stacked: list[torch.Tensor], stepper) -> None:
    """Record on a stacked step's error which networks were NaN or inf when it was raised
    (OptimizerStepError.blown_up): `stacked` the stack's weights and gradients, [K, ...] each,
    read before the caller clears them; `stepper.loss` the closure's last losses, if any."""
    if error.blown_up is None and stacked:
        count = stacked[0].shape[0]
        error.blown_up = blown_up_networks(count, stacked, getattr(stepper, "loss", None))


def lost_to_numerics(error: OptimizerStepError) -> bool:
    """A step's error (not the build's) that is a LinAlgError or came while a network of the
    stack was NaN or inf (blown_up, set by the stacked training loops)."""
    if error.step is None:
        return False
    blown = error.blown_up
    return isinstance(error.error, torch.linalg.LinAlgError) or (
        blown is not None and bool(blown.any())
    )


Trained = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def train_losing_diverged(
    train: Callable[[torch.Tensor | None], Trained],
    parameters: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
) -> Trained:
    """train(None): train the whole stack; train(index): the networks `index` (a CPU LongTensor
    into the stack) alone in a smaller stack. Both return the trained (parameters, buffers).

    When a stack fails under the rule, its networks are retrained in smaller stacks until every
    failure is a stack of one: those networks get NaN parameters (their buffers as given), the
    others what their stack gave them. Any other error is raised as it is.
    """
    try:
        return train(None)
    except OptimizerStepError as error:
        if not lost_to_numerics(error):
            raise
        failure = error
    count = next(iter(parameters.values())).shape[0]
    out = (
        {name: torch.empty_like(value) for name, value in parameters.items()},
        {name: value.clone() for name, value in buffers.items()},
    )
    _settle(train, torch.arange(count), failure, out)
    return out


def _settle(train, index: torch.Tensor, failure: OptimizerStepError, out: Trained) -> None:
    """The networks `index`, whose stack failed under the rule with `failure`, into `out`."""
    parameters, _ = out
    if len(index) == 1:
        for value in parameters.values():
            value[int(index)] = float("nan")
        return
    blown = failure.blown_up
    if blown is not None and len(blown) == len(index) and bool(blown.any()):
        # the finite ones in one stack, each one NaN or inf alone
        groups = [index[~blown]] if not bool(blown.all()) else []
        groups += list(index[blown].split(1))
    else:  # a LinAlgError on finite numbers: halves, until the failing networks are alone
        half = len(index) // 2
        groups = [index[:half], index[half:]]
    for group in groups:
        try:
            trained = train(group)
        except OptimizerStepError as error:
            if not lost_to_numerics(error):
                raise
            _settle(train, group, error, out)
            continue
        for into, values in zip(out, trained):
            for name, value in values.items():
                into[name].index_copy_(0, group.to(value.device), value)
