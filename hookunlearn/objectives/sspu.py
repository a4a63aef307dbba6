"""SSPU: SAE-guided subspace projection unlearning (our reading of Wang et al., arXiv 2505.24428).

Control vector ``u = c * P_irr r / |P_irr r|`` with ``r ~ U[0,1)^d`` fixed per run (seeded), so
the forget activations are driven into the *irrelevant* subspace; loss =
``MSE(h_l(forget), u) + alpha * MSE(h_l(retain), h_l^theta0(retain)) + lambda * R``.
``R``: ``soft`` = sum over trainable W of ``|(W - W_0)(I - P_rel)|^2`` (the model-space side: the
last axis of TransformerLens weights that write to the residual stream); ``hard`` = no penalty, but
every update is projected onto span(U_rel) after each step, so ``W - W_0`` stays in it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives.base import Objective, ObjectiveContext, StepInputs, control_vector_loss


@dataclass(frozen=True)
class SSPUConfig:
    steering_coeff: float = 50.0
    """c: norm of the control vector (residual-stream units at the hooked layer; world sweep)."""
    alpha: float = 100.0
    """Weight of the retain activation-preservation term."""
    lam: float = 1.0
    """lambda: weight of the soft subspace regulariser (ignored for ``hard``)."""
    regularizer: Literal["soft", "hard", "none"] = "soft"
    """``soft`` penalty, ``hard`` projection of updates onto span(U_rel), or ``none``."""


def _model_space_side(name: str, delta: Tensor, d_model: int) -> Tensor:
    if delta.shape[-1] != d_model:
        raise HookunlearnError(
            f"SSPU's regulariser acts on the model-space side, but parameter {name} has last axis "
            f"{delta.shape[-1]} != d_model {d_model}; train output weights (e.g. mlp.W_out, attn.W_O)."
        )
    return delta


class SSPU(Objective):
    Config = SSPUConfig

    def __init__(self, config: SSPUConfig, context: ObjectiveContext) -> None:
        super().__init__(config, context)
        if context.subspace is None:
            raise HookunlearnError("sspu needs a subspace (run `hookunlearn build` first).")
        generator = torch.Generator().manual_seed(context.seed)
        r = torch.rand(context.d_model, generator=generator)
        u_irr = context.subspace.U_irr.float()
        projected = u_irr @ (u_irr.T @ r)
        if float(projected.norm()) == 0.0:
            raise HookunlearnError("the irrelevant subspace is empty; rebuild with a larger k.")
        self.control = config.steering_coeff * projected / projected.norm()
        u_rel = context.subspace.U_rel.float()
        self.complement = torch.eye(context.d_model) - u_rel @ u_rel.T
        self.relevant_projector = u_rel @ u_rel.T

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        return control_vector_loss(inputs, self.control, self.config.alpha)

    def regularize(self, params: dict[str, Tensor], initial: dict[str, Tensor]) -> Tensor | None:
        if self.config.regularizer != "soft":
            return None
        total = torch.zeros(())
        for name, param in params.items():
            # in float32 whatever the model's dtype: the projector is float32, and a bf16 sum of
            # squares loses the small deviations the penalty is about
            delta = _model_space_side(name, param.float() - initial[name].float(), self.context.d_model)
            total = total.to(delta.device) + ((delta @ self.complement.to(delta.device)) ** 2).sum()
        return self.config.lam * total

    @torch.no_grad()
    def after_step(self, params: dict[str, Tensor], initial: dict[str, Tensor]) -> None:
        if self.config.regularizer != "hard":
            return
        for name, param in params.items():
            delta = _model_space_side(name, param.float() - initial[name].float(), self.context.d_model)
            param.copy_(initial[name].float() + delta @ self.relevant_projector.to(delta.device))

    def state(self) -> dict[str, Tensor]:
        return {"control_vector": self.control}


OBJECTIVE = SSPU
