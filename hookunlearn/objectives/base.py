"""Unlearning objectives: a registry keyed by method name, one module per method.

Every weight-editing method declares what its loss reads:

- ``activation`` methods (``sspu``, ``rmu``, ``align``) read the residual stream at the hooked
  layer; the trainer never runs blocks above it and computes the frozen reference from frozen
  copies of the trainable blocks only;
- ``output`` methods (``ga``, ``graddiff``, ``npo``) read the logits of a full forward pass.

``clamp`` is an inference-time intervention, registered separately (`hookunlearn.clamp`).
Adding a method is one module with an `Objective` subclass and one line in `_MODULES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hookunlearn.errors import HookunlearnError

Kind = Literal["activation", "output"]


@dataclass
class Batch:
    """A tokenised batch; ``mask`` marks the positions the loss reads (real tokens, or entity tokens)."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    index: Int[Tensor, " batch"]
    """Row indices into the dataset (NPO's cached reference log-probs are looked up by them)."""


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

    name: ClassVar[str]
    kind: ClassVar[Kind]
    Config: ClassVar[type]
    needs_subspace: ClassVar[bool] = False

    def __init__(self, config: Any, context: ObjectiveContext) -> None:
        self.config = config
        self.context = context

    def loss(self, inputs: StepInputs) -> dict[str, Tensor]:
        """Loss terms; the ``"loss"`` entry is what is minimised."""
        raise NotImplementedError

    def regularize(self, params: dict[str, Tensor], initial: dict[str, Tensor]) -> Tensor | None:
        """An extra loss term on the parameters (None: nothing)."""
        return None

    @torch.no_grad()
    def after_step(self, params: dict[str, torch.nn.Parameter], initial: dict[str, Tensor]) -> None:
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
    return {"loss": forget + alpha * retain, "forget": forget, "retain": retain}


_MODULES = {
    "sspu": "hookunlearn.objectives.sspu",
    "align": "hookunlearn.objectives.align",
    "rmu": "hookunlearn.objectives.rmu",
    "ga": "hookunlearn.objectives.ga",
    "graddiff": "hookunlearn.objectives.graddiff",
    "npo": "hookunlearn.objectives.npo",
}
METHODS: tuple[str, ...] = (*_MODULES, "clamp")
"""Every method name the CLI accepts (``clamp`` is an intervention, see `hookunlearn.clamp`)."""


def get_objective(name: str) -> type[Objective]:
    """The objective class registered under ``name``."""
    if name not in _MODULES:
        raise HookunlearnError(
            f"method {name!r} is not a weight-editing method; choose one of {', '.join(_MODULES)}."
        )
    module = importlib.import_module(_MODULES[name])
    return module.OBJECTIVE
