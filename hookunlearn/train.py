"""The unlearning loop shared by every weight-editing method.

Efficiency contract (see docs/performance.md and benchmarks/unlearn_step.py):
- only the chosen parameters train (default: ``mlp.W_out`` of layers l-2..l, as RMU);
- there is **no copy of the model or of any block**: the frozen reference activations come from the
  live blocks called with the initial values of the trained tensors swapped in, and the prefix below
  the first trainable block runs once per batch without grad and feeds both paths;
- ``activation`` objectives never run blocks above the hooked layer;
- NPO's reference NLLs are computed once for the forget set before training.

The run is deterministic for a seed: the batch of step ``s`` depends only on (seed, s), so
``resume`` from a checkpoint reaches the same result as an uninterrupted run. A non-finite loss
stops the run with a clear error; parameters are restored to the last good step and no bad
checkpoint is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from hookunlearn import distributed, faults
from hookunlearn.backends import backend_of
from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives.base import Objective, StepInputs
from hookunlearn.tokens import Batch, TokenData, batch_indices

if TYPE_CHECKING:
    from hookunlearn.robust.base import TrainerStage

Progress = Callable[[dict[str, Any]], None]
Perturbation = tuple[int, Tensor]
"""(block, delta): ``delta`` is added to the forget side's ``blocks.{block}.hook_resid_pre``."""


class TrainingDivergedError(HookunlearnError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the loop; each method's own knobs live in its config."""

    steps: int = 300
    """Optimiser steps. Default from the sweep on the embedded world (docs/methods/index.md); RMU's WMDP
    runs on 7B models use 80-150."""
    batch_size: int = 16
    """Sequences per step from each of the forget and the retain side (world sweep; RMU: 4)."""
    lr: float = 5e-3
    """AdamW learning rate, tuned on the 1M-parameter world model. For billion-parameter models use
    RMU's 5e-5 or a recipe: this default would wreck them."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear warm-up from 0."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule after warm-up."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm (None: no clipping)."""
    grad_accum: int = 1
    """Micro-batches per step (the batch is split; the gradient is their mean)."""
    seed: int = 0
    """Seeds the batch order and every method's random vectors."""
    trainable_layers: tuple[int, ...] | None = None
    """Blocks whose parameters train; None: layers l-2..l for the hooked layer l."""
    trainable: tuple[str, ...] = ("mlp.W_out",)
    """Parameter names inside each trainable block (e.g. ``mlp.W_out``, ``attn.W_O``, ``mlp.W_in``)."""
    log_every: int = 1
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N steps (0: no checkpoints)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise HookunlearnError(f"--schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise HookunlearnError(
                f"--lr {self.lr}: the learning rate must be a finite number > 0, e.g. 5e-3."
            )
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise HookunlearnError(
                f"--grad-clip {self.grad_clip}: give a finite norm > 0 (or 0 for no clipping)."
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise HookunlearnError(f"weight_decay {self.weight_decay}: give a finite number >= 0.")
        for name, least in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("log_every", 1)):
            if getattr(self, name) < least:
                raise HookunlearnError(
                    f"--{name.replace('_', '-')} {getattr(self, name)}: give at least {least}."
                )
        for name in ("warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise HookunlearnError(f"--{name.replace('_', '-')} {getattr(self, name)}: give 0 or more.")


SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear")
RESUME_IGNORES: frozenset[str] = frozenset({"checkpoint_every", "log_every"})
"""TrainConfig fields that do not change a run's result (resume may change them)."""


def trainable_parameters(
    model: LanguageModel, layers: Sequence[int], names: Sequence[str]
) -> dict[str, torch.nn.Parameter]:
    """``blocks.{i}.{name}`` for every layer and name (TransformerLens names; the backend says which
    tensor each is: `hookunlearn.backends`); unknown names are a clear error."""
    return backend_of(model).trainable_parameters(model, layers, names)[0]


@dataclass
class TrainResult:
    steps: int
    log: list[dict[str, Any]] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)
    layer: int = 0
    resumed_from: int | None = None
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each trainer stage's added cost (counts of extra forward/backward passes)."""

    @property
    def final(self) -> dict[str, Any]:
        return self.log[-1] if self.log else {}


class Trainer:
    """Runs an `Objective` over forget/retain token data (see the module docstring)."""

    def __init__(
        self,
        model: LanguageModel,
        objective: Objective,
        *,
        layer: int,
        forget: TokenData,
        retain: TokenData,
        config: TrainConfig,
        stages: Sequence[TrainerStage] = (),
    ) -> None:
        self.model, self.objective, self.layer, self.config = model, objective, layer, config
        self.stages = tuple(stages)
        gradient_stages = [s.name for s in self.stages if s.computes_gradient]
        if len(gradient_stages) > 1:
            raise HookunlearnError(
                f"stages {' and '.join(gradient_stages)} both compute the step's gradient; use one of them."
            )
        self.forget, self.retain = forget, retain
        layers = config.trainable_layers
        if layers is None:
            layers = tuple(range(max(0, layer - 2), layer + 1))
        if objective.spec.kind == "activation" and max(layers) > layer:
            raise HookunlearnError(
                f"trainable layers {list(layers)} include blocks above the hooked layer {layer}; "
                "they cannot change an activation objective. Train layers <= the hooked layer."
            )
        self.layers = tuple(sorted(layers))
        self.first = self.layers[0]
        # What is backend-specific (which tensors, how a slice of blocks runs) is the backend's
        # module; `transposed` names the tensors methods see transposed (TransformerLens orientation).
        self.backend = backend_of(model)
        self.params, self.transposed = self.backend.trainable_parameters(model, self.layers, config.trainable)
        distributed.broadcast_(list(self.params.values()))  # under torchrun: every rank starts from rank 0's
        self.initial = {name: p.detach().clone() for name, p in self.params.items()}
        # The frozen reference path (blocks first..layer as they were before training) needs no
        # copy of any block: the live blocks are called with the saved initial values of their
        # trainable parameters swapped in (torch.func.functional_call), so the only extra memory
        # is `initial`, a copy of the trainable tensors.
        self.reference_overrides: list[dict[str, Tensor]] = []
        if objective.spec.kind == "activation":
            for i in range(self.first, layer + 1):
                self.reference_overrides.append(self.backend.block_overrides(model, i, self.initial))
        for param in model.parameters():
            param.requires_grad_(False)
        for param in self.params.values():
            param.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=config.lr,
            weight_decay=config.weight_decay,
            eps=_adam_eps(next(iter(self.params.values())).dtype),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.log: list[dict[str, Any]] = []
        self.last_checkpoint: int | None = None
        """The step of the newest checkpoint on disk (written or resumed from), if any."""
        self._data_hashes: dict[str, str] | None = None

    def _lr_factor(self, step: int) -> float:
        config = self.config
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # --- forward passes ------------------------------------------------------------------

    def views(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """``tensors`` (parameters or their initial values) as methods see them: TransformerLens's
        orientation, the residual stream on the last axis of a writing weight (views, so in-place
        edits reach the parameters)."""
        return {name: value.T if name in self.transposed else value for name, value in tensors.items()}

    def resid_at(self, forget: Batch, layer: int) -> Tensor:
        """The forget side's residual stream entering block ``layer`` (no grad)."""
        with torch.no_grad():
            return self.backend.prefix(self.model, forget.tokens, layer, through=self.layer)

    def _perturbed(self, perturbation: Perturbation | None) -> contextlib.AbstractContextManager[Any]:
        """A hook context adding the perturbation to ``blocks.{layer}.hook_resid_pre``."""
        if perturbation is None:
            return contextlib.nullcontext()
        layer, delta = perturbation
        return self.model.hooks(
            fwd_hooks=[
                (
                    f"blocks.{layer}.hook_resid_pre",
                    lambda value, hook: value + delta.to(value.device, value.dtype),
                )
            ]
        )

    def _inputs(self, forget: Batch, retain: Batch, perturbation: Perturbation | None = None) -> StepInputs:
        """The loss's inputs at the current weights; ``perturbation`` (layer, delta) is added to
        the forget side's residual stream entering that block (`hookunlearn.robust.lat`); the
        retain side and the frozen reference run unperturbed. On a model spread over several
        devices the backend moves the residual stream to each block's device; the three
        activations come back on the hooked block's device (where the objective computes)."""
        model, device = self.model, self.model.cfg.device
        inputs = StepInputs(forget=forget, retain=retain)
        if self.objective.spec.kind == "activation":
            backend = self.backend
            with torch.no_grad():
                with self._perturbed(perturbation):
                    pre_forget = backend.prefix(model, forget.tokens, self.first, through=self.layer)
                pre_retain = backend.prefix(model, retain.tokens, self.first, through=self.layer)
                reference = pre_retain
                for offset, overrides in enumerate(self.reference_overrides):
                    reference = backend.run_block_with(model, self.first + offset, overrides, reference)
            with self._perturbed(perturbation):
                inputs.forget_resid = backend.run_blocks(model, pre_forget, self.first, self.layer + 1)
            inputs.retain_resid = backend.run_blocks(model, pre_retain, self.first, self.layer + 1)
            inputs.retain_resid_ref = reference
        else:
            with self._perturbed(perturbation):
                inputs.forget_logits = model(forget.tokens.to(device), return_type="logits")
            if self.objective.spec.retain:
                inputs.retain_logits = model(retain.tokens.to(device), return_type="logits")
        return inputs

    def losses(
        self, forget: Batch, retain: Batch, perturbation: Perturbation | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The method's loss terms at the current weights, and the total (plus its regulariser)."""
        losses = self.objective.loss(self._inputs(forget, retain, perturbation))
        total = losses["loss"]
        penalty = self.objective.regularize(self.views(dict(self.params)), self.views(self.initial))
        if penalty is not None:
            if penalty.device != total.device:  # a model spread over devices: the loss's device
                penalty = penalty.to(total.device)
            total = total + penalty
            losses["regularizer"] = penalty
        return losses, total

    def _micro_batches(self, index: Tensor) -> list[Tensor]:
        """The step's micro-batches: ``grad_accum`` of them, times the ranks under torchrun (each
        rank runs every world_size-th; `_all_reduce_step` sums their gradients)."""
        pieces = self.config.grad_accum * distributed.world_size()
        return [chunk for chunk in index.chunk(pieces) if len(chunk)]

    def _all_reduce_step(self, terms: dict[str, float]) -> None:
        """Under torchrun: sum the trainable tensors' gradients (each micro-batch's loss was
        divided by the number of micro-batches of all ranks, so the sum is their mean) and the
        logged loss terms over the ranks."""
        for param in self.params.values():
            if param.grad is None:  # a rank with no micro-batch this step
                param.grad = torch.zeros_like(param)
        distributed.all_reduce_sum_([param.grad for param in self.params.values()])
        summed: dict[str, float] = {}
        for part in distributed.all_gather_objects(terms):
            for key, value in part.items():
                summed[key] = summed.get(key, 0.0) + value
        terms.clear()
        terms.update(summed)

    # --- the loop ------------------------------------------------------------------------

    def run(self, *, out_dir: Path | None = None, progress: Progress | None = None) -> TrainResult:
        config = self.config
        start_time = time.perf_counter()
        gradient_stage = next((stage for stage in self.stages if stage.computes_gradient), None)
        for stage in self.stages:
            stage.setup(self)
        elapsed_before = 0.0
        if out_dir is not None and self.step > 0:
            # resumed: keep the log up to the checkpoint's step (rows after it are redone)
            self.log = _log_until(out_dir / "train_log.jsonl", self.step)
            elapsed_before = float(self.log[-1].get("elapsed_s", 0.0)) if self.log else 0.0
        log_file = (out_dir / "train_log.jsonl").open("a", encoding="utf-8") if out_dir else None
        interrupt = _DeferredInterrupt()
        try:
            while self.step < config.steps:
                if interrupt.requested:
                    raise self._interrupted(out_dir)
                step = self.step
                good = {name: p.detach().clone() for name, p in self.params.items()}
                forget_index = batch_indices(len(self.forget), config.batch_size, step, config.seed)
                retain_index = batch_indices(len(self.retain), config.batch_size, step, config.seed + 1)
                self.optimizer.zero_grad(set_to_none=True)
                terms: dict[str, float] = {}
                chunks = list(
                    zip(self._micro_batches(forget_index), self._micro_batches(retain_index), strict=False)
                )
                for forget_rows, retain_rows in distributed.shard(chunks):
                    forget_batch, retain_batch = (
                        self.forget.batch(forget_rows),
                        self.retain.batch(retain_rows),
                    )
                    perturbation = None
                    for stage in self.stages:
                        found = stage.perturbation(self, forget_batch)
                        if found is not None:
                            if perturbation is not None:
                                raise HookunlearnError("only one stage may perturb the activations.")
                            perturbation = found
                    with contextlib.ExitStack() as stack:
                        for stage in self.stages:
                            stack.enter_context(stage.forward_context(self))
                        losses, total = self.losses(forget_batch, retain_batch, perturbation)
                    if not torch.isfinite(total):
                        raise self._diverged(
                            good,
                            f"the loss became {float(total.detach())}",
                            step,
                            "--lr, the steering coefficient or alpha",
                        )
                    if gradient_stage is None:
                        (total / len(chunks)).backward()
                    else:
                        from hookunlearn.robust.base import MicroBatch

                        gradient_stage.backward(
                            self,
                            MicroBatch(forget_batch, retain_batch, perturbation, losses, total, len(chunks)),
                        )
                    for key, value in losses.items():
                        if key == "retain_term":  # a part of "loss", for the stages; not logged
                            continue
                        terms[key] = terms.get(key, 0.0) + float(value.detach()) / len(chunks)
                    terms["total"] = terms.get("total", 0.0) + float(total.detach()) / len(chunks)
                if distributed.is_distributed():
                    self._all_reduce_step(terms)
                grads = [p.grad for p in self.params.values() if p.grad is not None]
                grad_norm = _global_norm(grads)
                if not math.isfinite(grad_norm):
                    raise self._diverged(good, f"the gradient became {grad_norm}", step, "--lr")
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(list(self.params.values()), config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                for stage in self.stages:
                    stage.after_step(self)
                self.objective.after_step(self.views(dict(self.params)), self.views(self.initial))
                self.step += 1
                record = {
                    "step": self.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "grad_norm": grad_norm,
                    "elapsed_s": elapsed_before + time.perf_counter() - start_time,
                    **terms,
                }
                self.log.append(record)
                if log_file is not None and (self.step % config.log_every == 0 or self.step == config.steps):
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if progress is not None:
                    progress(record)
                if (
                    out_dir is not None
                    and config.checkpoint_every
                    and self.step % config.checkpoint_every == 0
                ):
                    self.save_checkpoint(out_dir / "checkpoints")
        finally:
            interrupt.restore()
            if log_file is not None:
                log_file.close()
        for param in self.params.values():
            param.requires_grad_(False)
        return TrainResult(
            self.step,
            self.log,
            list(self.params),
            self.layer,
            stages={stage.name: stage.cost() for stage in self.stages},
        )

    # --- checkpoints ---------------------------------------------------------------------

    @torch.no_grad()
    def _diverged(self, good: dict[str, Tensor], what: str, step: int, lower: str) -> TrainingDivergedError:
        """Restore the last good weights; the error to raise."""
        for name, p in self.params.items():
            p.copy_(good[name])
        saved = self.last_checkpoint
        where = (
            f"the checkpoint of step {saved} on disk is intact"
            if saved is not None
            else "no checkpoint was written; start over"
        )
        return TrainingDivergedError(
            f"{what} at step {step + 1}; the run stopped and the weights were restored to the last good step "
            f"({where}). Lower {lower}."
        )

    def _interrupted(self, out_dir: Path | None) -> RunInterrupted:
        """Ctrl-C between two steps: save a checkpoint of the last finished step; the error to raise."""
        if out_dir is None:
            return RunInterrupted(
                f"interrupted at step {self.step} of {self.config.steps}; nothing was saved."
            )
        if self.last_checkpoint != self.step and self.step > 0:
            self.save_checkpoint(out_dir / "checkpoints")
        if self.last_checkpoint is None:
            return RunInterrupted(
                f"interrupted before the first step; nothing to resume in {out_dir} (start over with --force)."
            )
        return RunInterrupted(
            f"interrupted at step {self.step} of {self.config.steps}; checkpoint saved in "
            f"{out_dir / 'checkpoints'}; continue with the same command and --resume."
        )

    def _method_record(self) -> dict[str, Any]:
        config = getattr(self.objective, "config", None)
        return asdict(config) if config is not None and is_dataclass(config) else {}

    def _data_record(self) -> dict[str, str]:
        """A hash of each side's token rows and loss mask (the data, its tokenisation and
        ``max_tokens``): a resume on other data would mix two runs."""
        if self._data_hashes is None:
            self._data_hashes = {
                side: hashlib.sha256(
                    data.tokens.cpu().numpy().tobytes() + data.mask.cpu().numpy().tobytes()
                ).hexdigest()[:16]
                for side, data in (("forget", self.forget), ("retain", self.retain))
            }
        return self._data_hashes

    def _stage_record(self) -> list[dict[str, Any]]:
        return [{"name": stage.name, "config": asdict(stage.config)} for stage in self.stages]

    def save_checkpoint(self, directory: Path) -> Path:
        """Trainable parameters, optimiser state and step, atomically (safetensors + JSON)."""
        from hookunlearn.artifacts import run_directory, save_tensors, write_json

        target = directory / f"step_{self.step:06d}"
        tensors = {f"param.{name}": p.detach() for name, p in self.params.items()}
        names = list(self.params)
        state = self.optimizer.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{names[index]}.{key}"] = torch.as_tensor(value)
        directory.mkdir(parents=True, exist_ok=True)
        with run_directory(target, force=True) as tmp:
            save_tensors(tmp / "checkpoint.safetensors", tensors)
            write_json(
                tmp / "state.json",
                {
                    "step": self.step,
                    "config": asdict(self.config),
                    "params": names,
                    "stages": self._stage_record(),
                    "method": self._method_record(),
                    "data": self._data_record(),
                },
            )
        self.last_checkpoint = self.step
        faults.reached("checkpoint")
        return target

    def load_checkpoint(self, directory: Path) -> int:
        """Resume from the newest checkpoint under ``directory``; returns its step."""
        from safetensors.torch import load_file

        candidates = sorted(directory.glob("step_*"))
        if not candidates:
            raise HookunlearnError(f"--resume: no checkpoint in {directory}.")
        latest = candidates[-1]
        try:
            state = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HookunlearnError(
                f"--resume: checkpoint {latest}/state.json is unreadable ({exc}); start over with --force."
            ) from None
        differ = _resume_mismatch(state.get("config", {}), asdict(self.config))
        differ += _resume_mismatch(state.get("method", {}), self._method_record(), prefix="-o ")
        differ += [
            f"the {side} data (after tokenising and --max-tokens) differ"
            for side, digest in state.get("data", {}).items()
            if self._data_record().get(side) not in (None, digest)
        ]
        if differ:
            raise HookunlearnError(
                f"--resume: checkpoint {latest} was trained with other settings: {'; '.join(differ)}. "
                "Resume with the checkpoint's settings, or start over with --force."
            )
        if state["params"] != list(self.params):
            raise HookunlearnError(
                f"checkpoint {latest} trained other parameters ({state['params']}); cannot resume."
            )
        if state.get("stages", []) != self._stage_record():
            raise HookunlearnError(
                f"checkpoint {latest} was trained with stages {state.get('stages', [])}, not "
                f"{self._stage_record()}; resume with the same --stage options or start over with --force."
            )
        tensors = load_file(str(latest / "checkpoint.safetensors"))
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(tensors[f"param.{name}"])
        optim_state = self.optimizer.state_dict()
        for index, name in enumerate(self.params):
            entries = {
                key.rsplit(".", 1)[1]: value
                for key, value in tensors.items()
                if key.startswith(f"optim.{name}.")
            }
            if entries:
                optim_state["state"][index] = entries
        self.optimizer.load_state_dict(optim_state)
        self.step = int(state["step"])
        self.last_checkpoint = self.step
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, self._lr_factor, last_epoch=self.step - 1
        )
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
        return self.step


class RunInterrupted(HookunlearnError):
    """The run was interrupted (Ctrl-C); a checkpoint of the last finished step was saved."""

    exit_code = 130


class _DeferredInterrupt:
    """The first Ctrl-C (SIGINT) is recorded and acted on between two steps, so a checkpoint is
    always of a finished step; a second one interrupts at once. Only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
            except ValueError:  # not the main interpreter
                self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _global_norm(grads: Sequence[Tensor]) -> float:
    """The norm of all gradients together; gradients on several devices (a model spread over
    GPUs) are reduced per tensor and gathered on the first one's device."""
    if not grads:
        return 0.0
    device = grads[0].device
    norms = [g.norm() if g.device == device else g.norm().to(device) for g in grads]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _adam_eps(dtype: torch.dtype) -> float:
    """AdamW's default 1e-8, except in float16, where it rounds to 0 and a tensor entry with no
    gradient becomes 0/0 = NaN after one step: the smallest normal float16 there (6.1e-5)."""
    return float(torch.finfo(torch.float16).tiny) if dtype == torch.float16 else 1e-8


def _resume_mismatch(stored: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: checkpoint X, now Y`` for each setting that changes the result and differs (compared
    as JSON, so tuples match the checkpoint's lists). More steps at a constant rate only extend
    the run; under a schedule they change every step's rate."""
    given = json.loads(json.dumps(given))
    ignored = set(RESUME_IGNORES)
    if stored.get("schedule", "constant") == "constant" and given.get("schedule", "constant") == "constant":
        ignored.add("steps")
    return [
        f"{prefix}{name}: checkpoint {stored[name]!r}, now {given[name]!r}"
        for name in sorted(set(stored) & set(given) - ignored)
        if stored[name] != given[name]
    ]


def _log_until(path: Path, step: int) -> list[dict[str, Any]]:
    """The rows of ``path`` up to ``step``; the file is rewritten to hold just those (atomically)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a row cut by a crash: everything after it is redone
        if isinstance(row, dict) and int(row.get("step", 0)) <= step:
            rows.append(row)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
    return rows
