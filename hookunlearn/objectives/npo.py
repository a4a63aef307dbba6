"""NPO as open-unlearning implements it.

``loss = (2 / beta) * mean log(1 + (pi_theta / pi_ref)^beta)`` over forget sequences (log-ratio of
summed token NLLs), ``+ alpha * NLL(retain)``. The reference log-probs are computed once for the
whole forget set before training (``reference_nll``, looked up by row index), not every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives.base import Objective, ObjectiveContext, StepInputs
from hookunlearn.tokens import mean_token_nll, token_nll


@dataclass(frozen=True)
class NPOConfig:
    beta: float = 0.1
    """NPO's inverse temperature (open-unlearning default 0.1)."""
    alpha: float = 1.0
    """Weight of the retain NLL."""


class NPO(Objective):
    Config = NPOConfig

    def __init__(self, config: NPOConfig, context: ObjectiveContext) -> None:
        super().__init__(config, context)
        reference = context.extra.get("reference_nll")
        if reference is None:
            raise HookunlearnError(
                "npo needs the forget set's reference NLLs (the trainer computes them once)."
            )
        self.reference_nll: Tensor = reference

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        assert inputs.forget_logits is not None and inputs.retain_logits is not None
        nll = token_nll(inputs.forget_logits, inputs.forget.tokens, inputs.forget.mask)
        ref = self.reference_nll[inputs.forget.index].to(nll.device)
        # log(pi_theta / pi_ref) = ref_nll - nll;  -logsigmoid(-beta * x) = log(1 + exp(beta * x))
        log_ratio = ref - nll
        npo = (2.0 / self.config.beta) * (-F.logsigmoid(-self.config.beta * log_ratio)).mean()
        retain = mean_token_nll(inputs.retain_logits, inputs.retain.tokens, inputs.retain.mask)
        return {
            "loss": npo + self.config.alpha * retain,
            "npo": npo.detach(),
            "retain_nll": retain.detach(),
            "retain_term": self.config.alpha * retain,
        }


OBJECTIVE = NPO
