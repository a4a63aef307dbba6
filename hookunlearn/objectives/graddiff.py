"""GradDiff (open-unlearning): ascend the forget NLL while descending the retain NLL."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hookunlearn.objectives.base import Objective, StepInputs
from hookunlearn.tokens import mean_token_nll


@dataclass(frozen=True)
class GradDiffConfig:
    alpha: float = 1.0
    """Weight of the retain NLL (open-unlearning's default gamma/alpha = 1)."""


class GradDiff(Objective):
    Config = GradDiffConfig

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        assert inputs.forget_logits is not None and inputs.retain_logits is not None
        forget = mean_token_nll(inputs.forget_logits, inputs.forget.tokens, inputs.forget.mask)
        retain = mean_token_nll(inputs.retain_logits, inputs.retain.tokens, inputs.retain.mask)
        return {
            "loss": -forget + self.config.alpha * retain,
            "retain_term": self.config.alpha * retain,
            "forget_nll": forget.detach(),
            "retain_nll": retain.detach(),
        }


OBJECTIVE = GradDiff
