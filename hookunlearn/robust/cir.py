"""Removing shared directions from the unlearning update (CIR: Sondej & Yang 2025, arXiv 2509.11816;
code: filyp/unlearning, ``src/CIR.py``).

CIR's observation: most of an unlearning gradient moves weights along directions that the forget
text's activations share with everything else (their mean and top principal components), so the
update damages general ability and is easy to undo. Before each update it projects, for every
trained linear module, the module's **input activations** and its **output gradients** onto the
complement of those directions, and rebuilds the weight gradient from them:
``grad W = sum_t (P_a x_t) (P_g g_t)^T``. The directions are the mean plus the top principal
components (``pca_lowrank``) of the unprojected activations and gradients of the forget batches
of the previous epoch (24 for activations, 36 for gradients), refreshed every epoch; only the
unlearning gradient is projected (the retain step is separate).

Ours, for every weight-editing method of the registry:

- since the projections are linear, ``grad W = P_a^perp (sum_t x_t g_t^T) P_g^perp``: we
  project the forget part's weight gradient (the method's loss minus its ``retain_term``) on both
  sides; the retain part and the method's regulariser are added unprojected;
- the mean and components are orthonormalised together (QR), so the projection is exact (the
  reference subtracts them one after another);
- the first directions come from ``warmup_batches`` forget batches at the initial weights (the
  reference spends its first epoch collecting, with no update); then they are refreshed every
  ``refresh_every`` steps from the rows seen since (at most ``max_rows`` per module);
- trained parameters: ``mlp.W_out``, ``mlp.W_in``, ``mlp.W_gate`` (the linear maps whose input
  and output the model's hook points expose); any other trained parameter is an error.

SSPU's ``soft``/``hard`` regulariser aims at the same thing from the SAE side: it keeps the update
inside span(U_rel), the directions the SAE found specific to the forget set, where CIR removes the
directions found shared with the rest. The comparison is in docs/methods/robust.md.

Cost: ``warmup_batches`` forward and backward passes before training, and one PCA per refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hookunlearn.errors import HookunlearnError
from hookunlearn.robust.base import (
    MicroBatch,
    StageContext,
    TrainerStage,
    forget_part,
    predicting_mask,
    retain_part,
)
from hookunlearn.tokens import batch_indices

if TYPE_CHECKING:
    from hookunlearn.train import Trainer


@dataclass(frozen=True)
class CIRConfig:
    act_components: int = 24
    """Directions removed from the input activations: the mean plus this many minus one principal
    components (the reference's 24)."""
    grad_components: int = 36
    """Directions removed from the output gradients (the reference's 36)."""
    refresh_every: int = 40
    """Recompute the directions every N steps (about one pass over the world's forget corpus at
    batch 16, the reference's per-epoch refresh); 0: keep the first ones."""
    warmup_batches: int = 8
    """Forget batches at the initial weights that give the first directions."""
    max_rows: int = 8192
    """Rows (token positions) kept per module for a refresh."""

    def __post_init__(self) -> None:
        for key in ("act_components", "grad_components"):
            if getattr(self, key) < 0:
                raise HookunlearnError(
                    f"stage cir: {key} {getattr(self, key)} must be >= 0 (0: leave that side)."
                )
        for key in ("warmup_batches", "max_rows"):
            if getattr(self, key) < 1:
                raise HookunlearnError(f"stage cir: {key} {getattr(self, key)} must be at least 1.")
        if self.refresh_every < 0:
            raise HookunlearnError(f"stage cir: refresh_every {self.refresh_every} must be >= 0.")


def orthonormal_basis(rows: Float[Tensor, "n d"], components: int) -> Float[Tensor, "d k"] | None:
    """An orthonormal basis of the rows' mean and their top ``components - 1`` principal components
    (None for 0 components: nothing removed)."""
    if components == 0:
        return None
    rows = rows.float()
    mean = rows.mean(dim=0, keepdim=True)
    parts = [mean.T]
    k = min(components - 1, rows.shape[0] - 1, rows.shape[1] - 1)
    if k > 0:
        _, _, v = torch.pca_lowrank(rows, q=k, center=True, niter=16)
        parts.append(v[:, :k])
    q, _ = torch.linalg.qr(torch.cat(parts, dim=1))
    return q


def remove(matrix: Float[Tensor, "n d"], basis: Float[Tensor, "d k"] | None) -> Float[Tensor, "n d"]:
    """``matrix`` with its components along ``basis`` removed (rows projected onto the complement)."""
    if basis is None:
        return matrix
    basis = basis.to(matrix.device, matrix.dtype)
    return matrix - (matrix @ basis) @ basis.T


_INPUT_OUTPUT = {
    # parameter -> (hook of its input, hook of its output), inside blocks.{i}
    "mlp.W_out": ("mlp.hook_post", "hook_mlp_out"),
    "mlp.W_in": ("ln2.hook_normalized", "mlp.hook_pre"),
    "mlp.W_gate": ("ln2.hook_normalized", "mlp.hook_pre"),
}


def _hooks_for(name: str, gated: bool) -> tuple[str, str]:
    if name == "mlp.W_in" and gated:
        return "ln2.hook_normalized", "mlp.hook_pre_linear"
    return _INPUT_OUTPUT[name]


class CIR(TrainerStage):
    Config = CIRConfig
    name = "cir"
    computes_gradient = True

    def __init__(self, config: CIRConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.bases: dict[str, tuple[Tensor | None, Tensor | None]] = {}
        """Per trained parameter: (activation basis, gradient basis)."""
        self.buffers: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self._acts: dict[str, Tensor] = {}

    # --- capture ------------------------------------------------------------------------------

    def setup(self, trainer: Trainer) -> None:
        gated = bool(getattr(trainer.model.cfg, "gated_mlp", False))
        self.modules: dict[str, tuple[str, str]] = {}
        for full in trainer.params:
            _, layer, inner = full.split(".", 2)
            if inner not in _INPUT_OUTPUT:
                raise HookunlearnError(
                    f"stage cir projects the gradients of linear maps whose input and output have hook "
                    f"points ({', '.join(_INPUT_OUTPUT)}); {full} is trained. Train only those (--trainable)."
                )
            act_hook, out_hook = _hooks_for(inner, gated)
            self.modules[full] = (f"blocks.{layer}.{act_hook}", f"blocks.{layer}.{out_hook}")
        per_refresh = max(1, self.config.refresh_every) * trainer.config.grad_accum
        self.rows_per_step = max(1, math.ceil(self.config.max_rows / per_refresh))
        generator = torch.Generator().manual_seed(self.context.seed + 7919)
        self._generator = generator
        warm_rows = max(1, math.ceil(self.config.max_rows / self.config.warmup_batches))
        for batch in range(self.config.warmup_batches):
            index = batch_indices(
                len(trainer.forget), trainer.config.batch_size, 10_000_000 + batch, self.context.seed
            )
            retain_index = batch_indices(
                len(trainer.retain), trainer.config.batch_size, 10_000_000 + batch, self.context.seed + 1
            )
            forget, retain = trainer.forget.batch(index), trainer.retain.batch(retain_index)
            with self.capturing(trainer):
                losses, _ = trainer.losses(forget, retain)
            grads = self._output_grads(forget_part(losses))
            missing = sorted(set(self.modules) - set(grads))
            if missing:
                raise HookunlearnError(
                    f"stage cir: no forget-side activations were captured for {', '.join(missing)} "
                    "(its hook points did not fire with a graph); train other parameters."
                )
            self._collect(grads, forget.mask, warm_rows)
            self.count("warmup_passes")
        self._refresh()

    def capturing(self, trainer: Trainer) -> Any:
        """Hooks that keep, for every trained module, the first input and output that carry a graph
        in this forward (the forget side: the trainer runs it first; the reference path has none)."""
        self._acts, self._outs, self._pending = {}, {}, {}
        hooks = []
        for full, (act_hook, out_hook) in self.modules.items():
            hooks.append((act_hook, self._keep_input(full)))
            hooks.append((out_hook, self._keep_output(full)))
        return trainer.model.hooks(fwd_hooks=hooks)

    def _keep_input(self, full: str) -> Any:
        def hook(value: Tensor, hook: Any) -> None:
            self._pending[full] = value.detach()

        return hook

    def _keep_output(self, full: str) -> Any:
        def hook(value: Tensor, hook: Any) -> None:
            pending = self._pending.pop(full, None)
            if value.requires_grad and full not in self._outs and pending is not None:
                self._acts[full], self._outs[full] = pending, value

        return hook

    def _output_grads(self, loss: Tensor) -> dict[str, Tensor]:
        names = list(self._outs)
        grads = torch.autograd.grad(
            loss, [self._outs[n] for n in names], retain_graph=True, allow_unused=True
        )
        return {
            n: (g if g is not None else torch.zeros_like(self._outs[n]))
            for n, g in zip(names, grads, strict=True)
        }

    def _collect(self, grads: dict[str, Tensor], mask: Tensor, rows: int) -> None:
        # the forget tokens and the positions whose logits predict them (an output loss reads those)
        flat_mask = predicting_mask(mask).to(next(iter(grads.values())).device).reshape(-1) if grads else None
        for full, grad in grads.items():
            acts = self._acts[full].reshape(-1, self._acts[full].shape[-1])[flat_mask]
            outs = grad.reshape(-1, grad.shape[-1])[flat_mask]
            if acts.shape[0] > rows:
                keep = torch.randperm(acts.shape[0], generator=self._generator)[:rows].to(acts.device)
                acts, outs = acts[keep], outs[keep]
            buffer = self.buffers.setdefault(full, ([], []))
            buffer[0].append(acts.float().cpu())
            buffer[1].append(outs.float().cpu())

    def _refresh(self) -> None:
        for full, (acts, grads) in self.buffers.items():
            if acts:
                self.bases[full] = (
                    orthonormal_basis(torch.cat(acts), self.config.act_components),
                    orthonormal_basis(torch.cat(grads), self.config.grad_components),
                )
        self.buffers = {}
        self.count("refreshes")

    def after_step(self, trainer: Trainer) -> None:
        if self.config.refresh_every and (trainer.step + 1) % self.config.refresh_every == 0:
            self._refresh()

    # --- the step -------------------------------------------------------------------------------

    def forward_context(self, trainer: Trainer) -> Any:
        return self.capturing(trainer)

    def backward(self, trainer: Trainer, micro: MicroBatch) -> None:
        params = trainer.params
        forget = forget_part(micro.losses)
        rest = retain_part(micro.losses)
        if self.config.refresh_every:
            # the directions of the next refresh: this step's unprojected forget rows (the trainer
            # ran this micro-batch's forward inside `forward_context`)
            self._collect(self._output_grads(forget), micro.forget.mask, self.rows_per_step)
        grads = torch.autograd.grad(forget, list(params.values()), retain_graph=True, allow_unused=True)
        if rest.requires_grad:
            (rest / micro.n_chunks).backward()
        for (full, param), grad in zip(params.items(), grads, strict=True):
            if grad is None:
                continue
            projected = project_gradient(grad, *self.bases.get(full, (None, None)))
            projected = projected / micro.n_chunks
            param.grad = projected if param.grad is None else param.grad + projected


def project_gradient(
    grad: Float[Tensor, "d_in d_out"], act_basis: Tensor | None, grad_basis: Tensor | None
) -> Float[Tensor, "d_in d_out"]:
    """``P_a^perp grad P_g^perp`` for a weight applied as ``x @ W`` (TransformerLens layout):
    the input side is the first axis, the output side the last."""
    projected = remove(grad, grad_basis)
    if act_basis is not None:
        projected = remove(projected.T, act_basis).T
    return projected


Config = CIRConfig
STAGE = CIR
