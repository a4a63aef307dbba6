"""Known-to-unknown alignment (our reading of Yamashita et al., arXiv 2509.15631).

Forgetting = the target entity's SAE code is indistinguishable from the codes of entities the model
has never heard of. On the forget batch (the tokens of target-entity names, and every token of
texts about the targets), with ``f`` the SAE code of the residual at the hooked layer:
``loss = d(f, c_unknown) + push * relu(margin - d(f, c_known)) + alpha * MSE(h(retain), h^theta0(retain))``
where the centroids come from `build` (over all latents, or the selected ones with
``space="selected"``) and ``d`` is ``l2`` or ``cosine`` distance; the last term preserves the
activations at every token of known-entity prompts and retain texts (e.g. the retain people's
biographies and QA lines: without text in the QA format the preservation does not hold recall;
see docs/methods/index.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives.base import Objective, ObjectiveContext, StepInputs, masked_mse


@dataclass(frozen=True)
class AlignConfig:
    distance: Literal["l2", "cosine"] = "l2"
    """Distance between codes."""
    margin: float = 0.0
    """Push term: penalise d(f, c_known) below this margin (0 disables the push)."""
    push: float = 1.0
    """Weight of the push term."""
    alpha: float = 30.0
    """Weight of the retain activation preservation (world sweep: 10 forgets as well but costs
    more off-target MC accuracy; 100 forgets nothing)."""
    space: Literal["all", "selected"] = "all"
    """Compare codes over all latents or only the selected (relevant) ones."""


def code_distance(codes: Tensor, centroid: Tensor, kind: str) -> Tensor:
    if kind == "cosine":
        return 1 - F.cosine_similarity(codes, centroid.expand_as(codes), dim=-1)
    return (codes - centroid).norm(dim=-1)


class Align(Objective):
    Config = AlignConfig

    def __init__(self, config: AlignConfig, context: ObjectiveContext) -> None:
        super().__init__(config, context)
        if context.subspace is None or context.sae is None:
            raise HookunlearnError(
                "align needs an entity subspace (`hookunlearn build` on an entity selection) and its SAE."
            )
        centroids = context.subspace.centroids
        if "code_unknown_all" not in centroids or "code_known_all" not in centroids:
            raise HookunlearnError(
                "align needs known and unknown centroids: build the subspace from `select --objective entity`."
            )
        self.latents = torch.tensor(context.subspace.relevant.latents) if config.space == "selected" else None
        self.unknown = centroids["code_unknown_all"].float()
        self.known = centroids["code_known_all"].float()
        if self.latents is not None:
            self.unknown, self.known = self.unknown[self.latents], self.known[self.latents]
        self.sae = context.sae
        # the SAE is a fixed reading frame: no gradient into its weights (memory, and a backward pass)
        self.sae.requires_grad_(False)

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        assert inputs.forget_resid is not None and inputs.retain_resid is not None
        assert inputs.retain_resid_ref is not None
        h = inputs.forget_resid[inputs.forget.mask.to(inputs.forget_resid.device)]
        codes = self.sae.encode(h.to(self.sae.dtype)).float()
        if self.latents is not None:
            codes = codes[:, self.latents.to(codes.device)]
        to_unknown = code_distance(codes, self.unknown.to(codes.device), self.config.distance).mean()
        to_known = code_distance(codes, self.known.to(codes.device), self.config.distance)
        push = torch.relu(self.config.margin - to_known).mean()
        retain = masked_mse(inputs.retain_resid, inputs.retain_resid_ref, inputs.retain.mask)
        total = to_unknown + self.config.push * push + self.config.alpha * retain
        return {
            "loss": total,
            "to_unknown": to_unknown,
            "to_known": to_known.mean().detach(),
            "retain": retain,
            "retain_term": self.config.alpha * retain,
        }


OBJECTIVE = Align
