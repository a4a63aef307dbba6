"""Latent adversarial unlearning (Sheshadri et al. 2024, arXiv 2407.15549; code:
aengusl/latent-adversarial-training, ``run_rmu`` and ``GDAdversary``).

Targeted LAT trains the model to forget *under* an adversary that perturbs its hidden activations
to bring the forgotten behaviour back. For RMU+LAT the reference, per batch:

1. starts a fresh perturbation at zero on the residual stream after one layer (their layer 7,
   just below RMU's hooked layer 8, inside the trained layers 6-8), on every forget-text token;
2. runs 16 steps of AdamW (lr 5e-2) on the perturbation, minimising the cross-entropy of the
   forget text ("toward"), projecting after each step onto a per-token L2 ball of radius 2;
3. computes the unlearning loss (RMU's MSE to the control vector) **with** the perturbation and
   the retain loss **without** it, and steps the model.

Ours, for every weight-editing method of the registry:

- the perturbation is added to the forget side's residual stream **entering the hooked layer's
  block** (``blocks.{l}.hook_resid_pre``, the output of block l-1), as the reference (after layer
  7 for RMU's layer 8, inside the trained layers 6-8); ``layer`` moves it to any trained block's
  input at or below the layer the loss reads (a perturbation of the hooked layer's *output* could
  not change a loss that reads it);
- the adversary minimises the forget text's next-token NLL through the whole model ("toward");
  the reference's "away" term (raising the retain text's loss) is left out: it makes the attack
  damage retain behaviour rather than restore forgotten behaviour;
- the perturbed positions are the forget tokens and the positions whose logits predict them
  (the reference perturbs every prompt token);
- ``space="relevant"`` (the SAE-guided variant our data makes natural) keeps the perturbation
  inside span(U_rel), the subspace `build` found the knowledge in: after every adversary step it
  is projected onto span(U_rel) and then onto the ball (U_rel is orthonormal, so the ball
  projection keeps it in the span); ``space="full"`` is the reference's unconstrained one. U_rel
  is a basis of the residual stream after the hooked block (``hook_resid_post``, where the SAE
  reads); the default perturbation point is that block's *input*, one block earlier: the same
  residual-stream coordinates, but not the exact activations the SAE was trained on;
- defaults from the world sweep (docs/methods/robust.md): the radius is in the model's residual
  units, so it is a fraction of the typical residual norm, not the reference's 2 (for a 4096-wide
  model).

Cost: ``steps`` forward and backward passes of the forget side through the whole model per
micro-batch (``adversary_passes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hookunlearn.errors import HookunlearnError
from hookunlearn.robust.base import StageContext, TrainerStage, predicting_mask
from hookunlearn.tokens import Batch, mean_token_nll

if TYPE_CHECKING:
    from hookunlearn.train import Trainer


@dataclass(frozen=True)
class LATConfig:
    eps: float = 4.0
    """Per-token L2 radius (residual-stream units; ~20% of the world model's residual norm entering
    block 2). The seed-1 sweep tried 1 and 4; neither changed sspu's relearning, 4 helped align a
    little (docs/methods/robust.md)."""
    steps: int = 8
    """PGD steps per micro-batch (the reference: 16)."""
    lr: float = 0.05
    """The adversary's AdamW learning rate (the reference: 5e-2)."""
    space: Literal["relevant", "full"] = "relevant"
    """``relevant``: inside span(U_rel) of the run's subspace; ``full``: anywhere."""
    layer: int | None = None
    """The block whose input (``hook_resid_pre``) is perturbed; None: the hooked layer's, i.e. the
    output of the block below it, as the reference (perturb after layer 7, RMU reads layer 8)."""

    def __post_init__(self) -> None:
        if self.space not in ("relevant", "full"):
            raise HookunlearnError(f"stage lat: space {self.space!r}: choose 'relevant' or 'full'.")
        for key in ("eps", "lr"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise HookunlearnError(f"stage lat: {key} {value} must be a positive finite number.")
        if self.steps < 1:
            raise HookunlearnError(f"stage lat: steps {self.steps} must be at least 1.")
        if self.layer is not None and self.layer < 0:
            raise HookunlearnError(f"stage lat: layer {self.layer} must be >= 0.")


_NEEDS_SUBSPACE = (
    "stage lat with space=relevant needs a subspace (span(U_rel)): pass a `build` directory, "
    "or use --stage lat:space=full."
)


def check_inputs(config: LATConfig, *, world_dir: object = None, subspace: bool = False) -> None:
    """Before anything loads: ``space=relevant`` has its subspace."""
    if config.space == "relevant" and not subspace:
        raise HookunlearnError(_NEEDS_SUBSPACE)


def project_ball(delta: Float[Tensor, "batch pos d_model"], eps: float) -> Float[Tensor, "batch pos d_model"]:
    """Scale each token's perturbation down to L2 norm ``eps`` when it is longer (GDAdversary's clip)."""
    norms = delta.norm(dim=-1, keepdim=True)
    return delta / torch.clamp(norms / eps, min=1.0)


class LAT(TrainerStage):
    Config = LATConfig
    name = "lat"

    def __init__(self, config: LATConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.basis: Tensor | None = None
        if config.space == "relevant":
            if context.subspace is None:
                raise HookunlearnError(_NEEDS_SUBSPACE)
            self.basis = context.subspace.U_rel.float()

    def project(self, delta: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """Onto span(U_rel) (``relevant``), then onto the per-token ball."""
        if self.basis is not None:
            basis = self.basis.to(delta.device, delta.dtype)
            delta = (delta @ basis) @ basis.T
        return project_ball(delta, self.config.eps)

    def setup(self, trainer: Trainer) -> None:
        at = trainer.layer if self.config.layer is None else self.config.layer
        kind = trainer.objective.spec.kind
        top = trainer.layer if kind == "activation" else trainer.model.cfg.n_layers - 1
        if at > top:
            raise HookunlearnError(
                f"stage lat: layer {at} is above the layer the {trainer.objective.spec.name} loss reads "
                f"({top}); perturb the input of a block at or below it."
            )
        if at > max(trainer.layers):
            raise HookunlearnError(
                f"stage lat: layer {at} is above every trained block ({list(trainer.layers)}); "
                "the model could not learn to resist it."
            )
        self.at = at

    def perturbation(self, trainer: Trainer, forget: Batch) -> tuple[int, Tensor]:
        model = trainer.model
        resid = trainer.resid_at(forget, self.at)
        # the forget tokens and the positions whose logits predict them (a one-token entity span
        # is read from the position before it)
        mask = predicting_mask(forget.mask).to(resid.device)
        delta = torch.zeros_like(resid, requires_grad=True)
        optimizer = torch.optim.AdamW([delta], lr=self.config.lr)
        for _ in range(self.config.steps):
            optimizer.zero_grad(set_to_none=True)
            logits = model(resid + delta * mask[..., None], start_at_layer=self.at, return_type="logits")
            nll = mean_token_nll(logits, forget.tokens, forget.mask)
            (grad,) = torch.autograd.grad(nll, [delta])
            delta.grad = grad
            optimizer.step()
            with torch.no_grad():
                delta.copy_(self.project(delta))
            self.count("adversary_passes")
        return self.at, (delta * mask[..., None]).detach()


Config = LATConfig
STAGE = LAT
