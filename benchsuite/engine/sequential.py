"""Specialised forward for plain Sequentials of Linear / Conv2d / ReLU / MaxPool2d / Flatten.

Why: the generic path (vmap of functional_call) re-dispatches every layer per chunk and cannot
exploit that all candidates share the same inputs. Here the parameter-free prefix (e.g. the MLP's
max-pool + flatten) is applied once to the training images; the first weight layer is ONE matrix
product (all candidates' rows stacked against the shared points: [D*out, in] @ [in, k]) or ONE
convolution with D*out output channels; later layers are batched matmuls (bmm) or grouped
convolutions (groups = D). Each point's logits are computed by the same per-point arithmetic
whatever the other points in the batch, so staged evaluation decides exactly like a full forward.
Biases are zero under every prior (protocol.md) and are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity)


def _flatten_layers(module: nn.Module) -> list[nn.Module] | None:
    if isinstance(module, nn.Sequential):
        layers = []
        for child in module:
            inner = _flatten_layers(child)
            if inner is None:
                return None
            layers += inner
        return layers
    if isinstance(module, SUPPORTED):
        return [module]
    return None


def _conv_ok(layer: nn.Conv2d) -> bool:
    return layer.groups == 1 and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)


class SequentialPlan:
    """A module this path can run, split into a shared prefix and the per-candidate layers."""

    def __init__(self, module: nn.Module):
        layers = _flatten_layers(module)
        if layers is None:
            raise TypeError("not a plain Sequential of Linear/Conv2d/ReLU/MaxPool2d/Flatten")
        names = {id(m): n for n, m in module.named_modules()}
        first = next(
            (i for i, l in enumerate(layers) if isinstance(l, (nn.Linear, nn.Conv2d))), None
        )
        if first is None:
            raise TypeError("no weight layer")
        for layer in layers:
            if isinstance(layer, nn.Conv2d) and not _conv_ok(layer):
                raise TypeError("grouped / non-zero-padded convolutions are not supported")
            if isinstance(layer, nn.MaxPool2d) and (layer.return_indices or layer.dilation != 1):
                raise TypeError("unsupported max-pool")
        self.prefix = nn.Sequential(*layers[:first])
        self.layers = layers[first:]
        self.weight_names = [
            f"{names[id(l)]}.weight" for l in self.layers if isinstance(l, (nn.Linear, nn.Conv2d))
        ]

    @staticmethod
    def supports(module: nn.Module) -> bool:
        try:
            SequentialPlan(module)
            return True
        except TypeError:
            return False

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared prefix applied to the training points, once."""
        return self.prefix.eval()(x)

    @property
    def first_is_linear(self) -> bool:
        return isinstance(self.layers[0], nn.Linear)

    @torch.no_grad()
    def first_layer(
        self, weight: torch.Tensor, features: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[D, out, k] pre-activations of a leading Linear layer on the k shared points (written
        into `out`, contiguous [D, out, k], if given: the same product, no copy)."""
        k = features.shape[0]
        rows = weight.reshape(-1, weight.shape[-1])
        points = features.reshape(k, -1).t()
        if out is None:
            return torch.mm(rows, points).view(weight.shape[0], -1, k)
        torch.mm(rows, points, out=out.view(-1, k))
        return out

    @torch.no_grad()
    def logit_difference(
        self, weights: list[torch.Tensor], features: torch.Tensor, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[D, 2, k] logits of D candidates on k shared points.

        weights[i]: [D, *shape] of the i-th weight layer; features: [k, ...] (prefix output).
        `first`: the leading Linear layer's output [D, out, k], if already computed (CPU path:
        right after generating each piece, while its weights are still in cache).
        """
        k = features.shape[0]
        d = weights[0].shape[0]
        h = features
        state = (
            "shared"  # shared [k, ...] -> per-candidate: "conv" [k, D*C, H, W] / "flat" [D, F, k]
        )
        w_iter = iter(weights)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.Linear):
                w = next(w_iter)  # [D, out, in]
                if i == 0 and first is not None:
                    h = first
                elif state == "shared" and w.is_contiguous():
                    h = torch.mm(w.reshape(-1, w.shape[-1]), h.reshape(k, -1).t()).view(d, -1, k)
                elif state == "shared":  # strided view into the generator's rows (CUDA)
                    h = torch.bmm(w, h.reshape(k, -1).t().unsqueeze(0).expand(d, -1, -1))
                else:
                    if state == "conv":
                        h = h.reshape(k, d, -1).permute(1, 2, 0)
                    h = torch.bmm(w, h)
                state = "flat"
            elif isinstance(layer, nn.Conv2d):
                w = next(w_iter)  # [D, out, in, kh, kw]
                if state == "flat":
                    raise TypeError("convolution after a flattened layer")
                groups = 1 if state == "shared" else d
                h = F.conv2d(
                    h,
                    w.reshape(-1, *w.shape[2:]),
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    groups=groups,
                )
                state = "conv"
            elif isinstance(layer, nn.ReLU):
                h = torch.relu_(h) if state != "shared" else torch.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                if state == "flat":
                    raise TypeError("max-pool after a flattened layer")
                h = F.max_pool2d(
                    h, layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode
                )
            elif isinstance(layer, nn.Flatten):
                if state == "conv":
                    h = h.reshape(k, d, -1).permute(1, 2, 0)
                    state = "flat"
                elif state == "shared":
                    h = h.reshape(k, -1)
            # nn.Identity: nothing
        if state == "conv":
            h = h.reshape(k, d, -1).permute(1, 2, 0)
        return h  # [D, 2, k]
