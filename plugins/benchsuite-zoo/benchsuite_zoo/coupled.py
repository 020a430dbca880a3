"""The zoo's optimizers that couple the entries of a network: layer-wise trust ratios and norms
(LARS, Lamb, NovoGrad, AdamP, Apollo), gradient centralization (Ranger), matrix preconditioners
(Shampoo, SOAP, Muon), a step size estimated from all parameters (Prodigy) and a second gradient
at a perturbed point (ASAM). None is declared elementwise: benchsuite trains each network with
its own optimizer (exact, slower); the conformance kit checks that against the plain loop."""

from __future__ import annotations

import pytorch_optimizer as po

from benchsuite.records import Hyperparameter, OptimizerSpec, Search
from benchsuite_zoo.factories import asam, muon, plain, with_betas
from benchsuite_zoo.settings import (
    LARGE_SGD,
    MULTIPLIER,
    SGD_LIKE,
    betas,
    choice,
    count,
    eps,
    flag,
    fraction,
    lr,
    positive,
    steps,
    unit,
    weight_decay,
)  # fmt: skip


def specs() -> list[OptimizerSpec]:
    return [
        OptimizerSpec(
            name="adamp", factory=with_betas(po.AdamP),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-8), **weight_decay(),
                             "delta": positive(0.1, "cosine threshold for projecting out the radial part"),
                             "wd_ratio": unit(0.1, "weight decay kept after projection"),
                             "nesterov": flag(False, "Nesterov momentum")},
            description="AdamP (Heo et al. 2021): Adam without the radial step on scale-invariant weights",
        ),
        OptimizerSpec(
            name="lamb", factory=with_betas(po.Lamb),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-6), **weight_decay()},
            description="LAMB (You et al. 2020): Adam with a layer-wise trust ratio",
        ),
        OptimizerSpec(
            name="lars", factory=plain(po.LARS),
            hyperparameters={"lr": lr(1e-3, LARGE_SGD), "momentum": fraction(0.9, "momentum"),
                             "trust_coefficient": positive(1e-3, "layer-wise trust ratio coefficient"),
                             **weight_decay()},
            description="LARS (You et al. 2017): SGD with a layer-wise trust ratio",
        ),
        OptimizerSpec(
            name="ranger", factory=with_betas(po.Ranger),
            hyperparameters={"lr": lr(1e-3), **betas(0.95, 0.999), **eps(1e-5), **weight_decay(),
                             "k": count(6, "Lookahead: fast steps between synchronizations"),
                             "alpha": unit(0.5, "Lookahead: how far the slow weights move"),
                             "use_gc": flag(True, "gradient centralization")},
            description="Ranger (Wright 2019): RAdam, Lookahead and gradient centralization",
        ),
        OptimizerSpec(
            name="novograd", factory=with_betas(po.NovoGrad),
            hyperparameters={"lr": lr(1e-3), **betas(0.95, 0.98), **eps(1e-8), **weight_decay(),
                             "grad_averaging": flag(False, "scale the gradient by 1 - beta1")},
            description="NovoGrad (Ginsburg et al. 2019): second moments per layer",
        ),
        OptimizerSpec(
            name="apollo", factory=plain(po.ApolloDQN),
            hyperparameters={"lr": lr(1e-2, SGD_LIKE), "beta": fraction(0.9, "momentum decay"),
                             "init_lr": positive(1e-5, "learning rate at the start of the warm-up"),
                             "warmup_steps": steps(500, "linear warm-up steps"),
                             "rebound": choice("constant", ("constant", "belief"), "how the curvature bound is set"),
                             **eps(1e-4), **weight_decay()},
            description="Apollo (Ma 2020): a diagonal quasi-Newton method, the update scaled per layer",
        ),
        OptimizerSpec(
            name="prodigy", factory=with_betas(po.Prodigy),
            hyperparameters={"lr": lr(1.0, MULTIPLIER), **betas(0.9, 0.999), **weight_decay(),
                             "d_coef": positive(1.0, "multiplier of the estimated step size"),
                             "d0": positive(1e-6, "initial step-size estimate")},
            description="Prodigy (Mishchenko & Defazio 2023): Adam with a step size estimated from all parameters",
        ),
        OptimizerSpec(
            name="shampoo", factory=plain(po.Shampoo),
            hyperparameters={"lr": lr(1e-3, SGD_LIKE), "momentum": fraction(0.0, "momentum"),
                             "preconditioning_compute_steps": count(1, "steps between inverse-root computations"),
                             "matrix_eps": positive(1e-6, "regularizer of the preconditioners"), **weight_decay()},
            description="Shampoo (Gupta et al. 2018): Kronecker-factored preconditioning per tensor",
        ),
        OptimizerSpec(
            name="soap", factory=with_betas(po.SOAP),
            hyperparameters={"lr": lr(3e-3), **betas(0.95, 0.95), **eps(1e-8), **weight_decay(0.01),
                             "precondition_frequency": count(10, "steps between eigenbasis updates")},
            description="SOAP (Vyas et al. 2024): Adam in Shampoo's eigenbasis",
        ),
        OptimizerSpec(
            name="muon", factory=muon,
            hyperparameters={"lr": lr(0.02, SGD_LIKE), "momentum": fraction(0.95, "momentum"),
                             "nesterov": flag(True, "Nesterov momentum"),
                             "ns_steps": count(5, "Newton-Schulz iterations"),
                             "adamw_lr": positive(3e-4, "learning rate of the AdamW on biases and the head"),
                             **weight_decay()},
            description="Muon (Jordan et al. 2024): orthogonalized momentum on hidden matrices, AdamW on the rest",
        ),
        OptimizerSpec(
            name="asam", factory=asam,
            hyperparameters={"lr": lr(1e-2, SGD_LIKE), "momentum": fraction(0.0, "momentum of the SGD step"),
                             "rho": Hyperparameter(float, 0.5, low=0.0, open_low=True, search=Search(0.01, 2.0),
                                                  help="ascent radius (relative to the weights)")},
            uses_closure=True,
            description="ASAM (Kwon et al. 2021): SAM with the ascent scaled by the weights, over SGD",
        ),
    ]
