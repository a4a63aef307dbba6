"""The base of every objective: what a loss reads at one step, and the `Objective` class.

A method's declaration (what it reads and needs) is its line in `hookunlearn.objectives.METHODS`;
its class, here subclassed, holds the loss and is given that declaration as ``spec``:

- ``activation`` methods read the residual stream at the hooked layer; the trainer never runs
  blocks above it and computes the frozen reference from the live blocks with the initial values
  of the trained tensors swapped in;
- ``output`` methods read the logits of a full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hookunlearn.objectives import MethodSpec
from hookunlearn.tokens import Batch


@dataclass
class StepInputs:
    """What a loss reads at one step (fields a method's kind does not use are None)."""

    forget: Batch
    retain: Batch
    forget_resid: Float[Tensor, "batch pos d_model"] | None = None
    retain_resid: Float[Tensor, "batch pos d_model"] | None = None
    retain_resid_ref: Float[Tensor, "batch pos d_model"] | None = None
    forget_logits: Float[Tensor, "batch pos d_vocab"] | None = None
    retain_logits: Float[Tensor, "batch pos d_vocab"] | None = None


@dataclass
class ObjectiveContext:
    """What a method may use to set itself up."""

    d_model: int
    layer: int
    seed: int
    subspace: Any | None = None
    """A `hookunlearn.subspace.Subspace` (SSPU, align), or None."""
    sae: Any | None = None
    """The SAE at the hooked layer (align)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class: a method's loss, plus optional hooks around the optimiser step."""

    Config: ClassVar[type]
    spec: ClassVar[MethodSpec]
    """The method's registry declaration (set by `hookunlearn.objectives.get_objective`)."""

    def __init__(self, config: Any, context: ObjectiveContext) -> None:
        self.config = config
        self.context = context
        if not hasattr(type(self), "spec"):
            # built from its module directly (not through `get_objective`): the registry line for it
            from hookunlearn.objectives import spec_for_module

            self.spec = spec_for_module(type(self).__module__)

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        """Loss terms; the ``"loss"`` entry is what is minimised. A method with a retain term also
        returns it, weighted and with its graph, as ``"retain_term"`` (so ``loss - retain_term`` is
        the forget part, which `hookunlearn.robust.sam` and `hookunlearn.robust.cir` treat apart)."""
        raise NotImplementedError

    def regularize(self, params: dict[str, Tensor], initial: dict[str, Tensor]) -> Tensor | None:
        """An extra loss term on the parameters (None: nothing)."""
        return None

    @torch.no_grad()
    def after_step(self, params: dict[str, Tensor], initial: dict[str, Tensor]) -> None:
        """Called after every optimiser step (e.g. to project updates)."""

    def state(self) -> dict[str, Tensor]:
        """Tensors that define the run (e.g. the control vector), saved with the result."""
        return {}


def masked_mse(a: Float[Tensor, "b p d"], b: Float[Tensor, "b p d"], mask: Bool[Tensor, "b p"]) -> Tensor:
    """Mean squared error over the masked positions and all features (F.mse_loss's 'mean')."""
    diff = (a - b)[mask.to(a.device)]
    return (diff.float() ** 2).mean()


def control_vector_loss(inputs: StepInputs, control: Tensor, alpha: float) -> dict[str, Tensor]:
    """RMU-style terms: forget activations to a fixed vector, retain activations to the frozen ones."""
    assert inputs.forget_resid is not None and inputs.retain_resid is not None
    assert inputs.retain_resid_ref is not None
    target = control.to(inputs.forget_resid.device).expand_as(inputs.forget_resid)
    forget = masked_mse(inputs.forget_resid, target, inputs.forget.mask)
    retain = masked_mse(inputs.retain_resid, inputs.retain_resid_ref, inputs.retain.mask)
    return {
        "loss": forget + alpha * retain,
        "forget": forget,
        "retain": retain,
        "retain_term": alpha * retain,
    }
