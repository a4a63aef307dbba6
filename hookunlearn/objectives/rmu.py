"""RMU (WMDP paper): drive forget activations at the hooked layer toward a fixed random vector.

``u = c * r / |r|`` with ``r ~ U[0,1)^d`` (seeded); loss =
``MSE(h_l(forget), u) + alpha * MSE(h_l(retain), h_l^theta0(retain))``. The WMDP repository
trains the MLP down-projections of layers l-2..l (our trainer's default) with AdamW lr 5e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hookunlearn.objectives.base import Objective, ObjectiveContext, StepInputs, control_vector_loss


@dataclass(frozen=True)
class RMUConfig:
    steering_coeff: float = 50.0
    """c: norm of the random control vector (world sweep; the WMDP repo uses 6.5 for zephyr-7b)."""
    alpha: float = 100.0
    """Weight of the retain term (the WMDP repo uses 1200 for zephyr-7b)."""


class RMU(Objective):
    Config = RMUConfig

    def __init__(self, config: RMUConfig, context: ObjectiveContext) -> None:
        super().__init__(config, context)
        generator = torch.Generator().manual_seed(context.seed)
        r = torch.rand(context.d_model, generator=generator)
        self.control = config.steering_coeff * r / r.norm()

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        return control_vector_loss(inputs, self.control, self.config.alpha)

    def state(self) -> dict[str, Tensor]:
        return {"control_vector": self.control}


OBJECTIVE = RMU
