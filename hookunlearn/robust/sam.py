"""Sharpness-aware unlearning (Fan et al. 2025, arXiv 2502.05374; code: OPTML-Group/Unlearn-Smooth).

The paper's objective is ``min_theta max_{|e| <= rho} l_f(theta + e) + gamma * l_r(theta)``: the
forget loss is minimised at the worst nearby weights, so the unlearned solution sits in a flat
region of the forget loss, where a few relearning steps do not climb back out. Their
``SAMTrainer`` takes, at every step, the forget loss's gradient ``g`` at ``theta``, moves to
``theta + rho * g / |g|`` (one global L2 norm over all trained tensors), takes the forget
gradient there, moves back, and adds the retain gradient taken **at the original weights**.

Ours is that step for any weight-editing method of the registry: the forget part is the method's
``loss`` minus its weighted ``retain_term`` (all of it for gradient ascent), the retain part and
the method's parameter regulariser (SSPU's) are differentiated at ``theta``. Ours: a ``1e-12``
guard in the norm (as UNDO's SAM baseline), and the perturbation is applied per micro-batch
(the reference overwrites ``.grad`` and so cannot accumulate). Cost: one extra forward and
backward pass of the whole loss per micro-batch (``extra_passes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hookunlearn.errors import HookunlearnError
from hookunlearn.robust.base import MicroBatch, TrainerStage, forget_part, global_norm, retain_part

if TYPE_CHECKING:
    from hookunlearn.train import Trainer

from hookunlearn.train import TrainingDivergedError


@dataclass(frozen=True)
class SAMConfig:
    rho: float = 0.01
    """Radius of the weight perturbation (one global L2 norm): the reference's WMDP and MUSE runs
    (7B models). On the world, 0.01-1.0 did not change relearning (docs/methods/robust.md)."""

    def __post_init__(self) -> None:
        if not (self.rho > 0 and math.isfinite(self.rho)):
            raise HookunlearnError(f"stage sam: rho {self.rho} must be a positive finite number.")


class SAM(TrainerStage):
    Config = SAMConfig
    name = "sam"
    computes_gradient = True

    def backward(self, trainer: Trainer, micro: MicroBatch) -> None:
        params = list(trainer.params.values())
        forget = forget_part(micro.losses)
        rest = retain_part(micro.losses)
        grads = torch.autograd.grad(forget, params, retain_graph=rest.requires_grad, allow_unused=True)
        if rest.requires_grad:
            (rest / micro.n_chunks).backward()
        norm = global_norm(list(grads))
        if float(norm) == 0.0:  # nothing to climb: the plain forget gradient (zero) is the answer
            return
        saved = [
            p.detach().clone() for p in params
        ]  # restored exactly (theta + e - e is not theta in floats)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p.add_(self.config.rho * g / (norm + 1e-12))
        try:
            losses, _ = trainer.losses(micro.forget, micro.retain, micro.perturbation)
            perturbed = forget_part(losses)
            if not torch.isfinite(perturbed):
                raise TrainingDivergedError(
                    f"stage sam: the forget loss at the perturbed weights became {float(perturbed)} at step "
                    f"{trainer.step}; lower rho or --lr (the weights were restored to the last good step)."
                )
            (perturbed / micro.n_chunks).backward()
        finally:
            with torch.no_grad():
                for p, value in zip(params, saved, strict=True):
                    p.copy_(value)
        self.count("extra_passes")


Config = SAMConfig
STAGE = SAM
