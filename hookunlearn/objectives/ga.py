"""Gradient ascent (open-unlearning's GradAscent): maximise the forget set's next-token NLL."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hookunlearn.objectives.base import Objective, StepInputs
from hookunlearn.tokens import mean_token_nll


@dataclass(frozen=True)
class GAConfig:
    """Gradient ascent has no knobs beyond the trainer's (lr, steps, trainable parameters)."""


class GradientAscent(Objective):
    Config = GAConfig

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        assert inputs.forget_logits is not None
        nll = mean_token_nll(inputs.forget_logits, inputs.forget.tokens, inputs.forget.mask)
        return {"loss": -nll, "forget_nll": nll.detach()}


OBJECTIVE = GradientAscent
