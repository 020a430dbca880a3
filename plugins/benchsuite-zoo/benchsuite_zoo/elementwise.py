"""The zoo's elementwise optimizers: each entry's update depends on that entry's own history and
on step counts alone (no norm, statistic or random number across entries), so benchsuite trains
K networks under one optimizer, stacked. The conformance kit verifies every one of these claims
(stacked training equals each network trained alone)."""

from __future__ import annotations

import pytorch_optimizer as po

from benchsuite.records import OptimizerSpec
from benchsuite_zoo.factories import lookahead_adam, plain, with_betas
from benchsuite_zoo.settings import (
    LARGE_SGD,
    SGD_LIKE,
    betas,
    count,
    eps,
    flag,
    fraction,
    lr,
    nonnegative,
    positive,
    steps,
    unit,
    weight_decay,
)  # fmt: skip


def specs() -> list[OptimizerSpec]:
    return [
        OptimizerSpec(
            name="adabelief", factory=with_betas(po.AdaBelief),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-16), **weight_decay(),
                             "rectify": flag(False, "RAdam-style rectification")},
            elementwise=True, description="AdaBelief (Zhuang et al. 2020): Adam scaled by the belief in the gradient",
        ),
        OptimizerSpec(
            name="adabound", factory=with_betas(po.AdaBound),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-8), **weight_decay(),
                             "final_lr": positive(0.1, "the SGD learning rate the bounds converge to"),
                             "gamma": positive(1e-3, "speed of the bounds' convergence")},
            elementwise=True, description="AdaBound (Luo et al. 2019): Adam with step sizes bounded towards SGD's",
        ),
        OptimizerSpec(
            name="radam", factory=with_betas(po.RAdam),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-8), **weight_decay()},
            elementwise=True, description="RAdam (Liu et al. 2020): Adam with the adaptive step rectified early on",
        ),
        OptimizerSpec(
            name="adan", factory=with_betas(po.Adan, betas=3),
            hyperparameters={"lr": lr(1e-3), **betas(0.98, 0.92, 0.99), **eps(1e-8), **weight_decay()},
            elementwise=True, description="Adan (Xie et al. 2022): adaptive Nesterov momentum",
        ),
        OptimizerSpec(
            name="lookahead", factory=lookahead_adam,
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999), **eps(1e-8), **weight_decay(),
                             "k": count(5, "fast steps between synchronizations"),
                             "alpha": unit(0.5, "how far the slow weights move towards the fast ones")},
            elementwise=True, description="Lookahead over Adam (Zhang et al. 2019)",
        ),
        OptimizerSpec(
            name="madgrad", factory=plain(po.MADGRAD),
            hyperparameters={"lr": lr(1e-3, SGD_LIKE), "momentum": fraction(0.9, "momentum"),
                             **eps(1e-6), **weight_decay()},
            elementwise=True, description="MADGRAD (Defazio & Jelassi 2021): momentumized dual averaging",
        ),
        OptimizerSpec(
            name="tiger", factory=plain(po.Tiger),
            hyperparameters={"lr": lr(1e-3), "beta": fraction(0.965, "momentum decay"), **weight_decay(0.01)},
            elementwise=True, description="Tiger (Su 2023): sign of the momentum, decoupled weight decay",
        ),
        OptimizerSpec(
            name="aggmo", factory=with_betas(po.AggMo, betas=3),
            hyperparameters={"lr": lr(1e-3, SGD_LIKE), **betas(0.0, 0.9, 0.99), **weight_decay()},
            elementwise=True, description="AggMo (Lucas et al. 2019): several momentum buffers averaged",
        ),
        OptimizerSpec(
            name="yogi", factory=with_betas(po.Yogi),
            hyperparameters={"lr": lr(1e-2), **betas(0.9, 0.999), **eps(1e-3), **weight_decay(),
                             "initial_accumulator": nonnegative(1e-6, "initial second moment")},
            elementwise=True, description="Yogi (Zaheer et al. 2018): additive second-moment updates",
        ),
        OptimizerSpec(
            name="adopt", factory=with_betas(po.ADOPT),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.9999), **eps(1e-6), **weight_decay()},
            elementwise=True, description="ADOPT (Taniguchi et al. 2024): Adam with the current gradient left out of its own scaling",
        ),
        OptimizerSpec(
            name="ademamix", factory=with_betas(po.AdEMAMix, betas=3),
            hyperparameters={"lr": lr(1e-3), **betas(0.9, 0.999, 0.9999), **eps(1e-8), **weight_decay(),
                             "alpha": positive(5.0, "weight of the slow moving average")},
            elementwise=True, description="AdEMAMix (Pagliardini et al. 2024): a mixture of a fast and a slow momentum",
        ),
        OptimizerSpec(
            name="laprop", factory=with_betas(po.LaProp),
            hyperparameters={"lr": lr(4e-4), **betas(0.9, 0.999), **eps(1e-15), **weight_decay()},
            elementwise=True, description="LaProp (Ziyin et al. 2020): momentum of the normalized gradient",
        ),
        OptimizerSpec(
            name="schedulefree-sgd", factory=plain(po.ScheduleFreeSGD),
            hyperparameters={"lr": lr(1.0, LARGE_SGD), "momentum": fraction(0.9, "interpolation between the average and the iterate"),
                             **weight_decay(), "warmup_steps": steps(0, "linear warm-up steps")},
            elementwise=True, description="Schedule-free SGD (Defazio et al. 2024), scored at its averaged weights",
        ),
        OptimizerSpec(
            name="schedulefree-adamw", factory=with_betas(po.ScheduleFreeAdamW),
            hyperparameters={"lr": lr(2.5e-3), **betas(0.9, 0.999), **eps(1e-8), **weight_decay(),
                             "warmup_steps": steps(0, "linear warm-up steps")},
            elementwise=True, description="Schedule-free AdamW (Defazio et al. 2024), scored at its averaged weights",
        ),
    ]
