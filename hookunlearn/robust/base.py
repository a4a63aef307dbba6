"""The base of the trainer stages (`hookunlearn.robust.STAGES` with ``where="trainer"``).

The trainer calls a stage at three points of every micro-batch:

- `TrainerStage.perturbation`: an additive perturbation of the forget side's residual stream
  entering a block (``lat``); the method's loss then reads the perturbed run;
- `TrainerStage.backward`: a stage may compute the micro-batch's gradient itself (``sam``,
  ``cir``); at most one stage of a run does;
- `TrainerStage.cost`: what it added, recorded in the run (extra forward and backward passes).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from hookunlearn.tokens import Batch

if TYPE_CHECKING:
    from hookunlearn.train import Trainer


@dataclass
class StageContext:
    """What a stage may use to set itself up."""

    subspace: Any | None = None
    """The run's `hookunlearn.subspace.Subspace`, when it has one."""
    seed: int = 0


@dataclass
class MicroBatch:
    """One micro-batch of a step, as the trainer computed it at the current weights."""

    forget: Batch
    retain: Batch
    perturbation: tuple[int, Tensor] | None
    """(block, delta) added to the forget side's residual stream entering that block, or None."""
    losses: dict[str, Tensor]
    total: Tensor
    """The method's loss plus its parameter regulariser: what a plain step differentiates."""
    n_chunks: int
    extra: dict[str, Any] = field(default_factory=dict)


def forget_part(losses: dict[str, Tensor]) -> Tensor:
    """The forget part of a method's loss: ``loss`` minus its weighted retain term (``retain_term``,
    zero when the method has none, e.g. gradient ascent)."""
    retain = losses.get("retain_term")
    return losses["loss"] if retain is None else losses["loss"] - retain


def retain_part(losses: dict[str, Tensor]) -> Tensor:
    """The rest of a step's total: the weighted retain term plus the method's regulariser (zero
    when it has neither); built from those terms alone, so its backward never enters the forget graph."""
    parts = [losses[key] for key in ("retain_term", "regularizer") if key in losses]
    if not parts:
        return torch.zeros(())
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def predicting_mask(mask: Tensor) -> Tensor:
    """The positions a masked token's loss reads: the token itself (activation losses) and the one
    before it (whose logits predict it)."""
    before = torch.zeros_like(mask)
    before[:, :-1] = mask[:, 1:]
    return mask | before


class TrainerStage:
    """Base class: every hook is a no-op."""

    Config: ClassVar[type]
    name: ClassVar[str] = ""
    computes_gradient: ClassVar[bool] = False
    """True when `backward` computes the micro-batch's gradient (only one such stage per run)."""

    def __init__(self, config: Any, context: StageContext) -> None:
        self.config = config
        self.context = context
        self.counters: dict[str, float] = {}

    def count(self, key: str, value: float = 1.0) -> None:
        self.counters[key] = self.counters.get(key, 0.0) + value

    def setup(self, trainer: Trainer) -> None:
        """Called once, before the first step (after a resume's checkpoint is loaded)."""

    def perturbation(self, trainer: Trainer, forget: Batch) -> tuple[int, Tensor] | None:
        """(block, delta): an additive perturbation of the forget side's residual stream entering
        that block, for this micro-batch (None: none)."""
        return None

    def forward_context(self, trainer: Trainer) -> AbstractContextManager[Any]:
        """A context the trainer runs each micro-batch's loss forward in (e.g. capture hooks)."""
        return nullcontext()

    def after_step(self, trainer: Trainer) -> None:
        """Called once after every optimiser step (whatever the number of micro-batches)."""

    def backward(self, trainer: Trainer, micro: MicroBatch) -> None:
        """Accumulate the micro-batch's gradient into the trained parameters' ``.grad``."""
        raise NotImplementedError

    def cost(self) -> dict[str, float]:
        """What the stage added (counts of extra passes), for the run record."""
        return dict(self.counters)


def global_norm(tensors: list[Tensor | None]) -> Tensor:
    present = [t for t in tensors if t is not None]
    if not present:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in present]))
