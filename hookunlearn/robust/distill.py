"""Distillation after unlearning (UNDO: Lee et al. 2025, arXiv 2506.06278, "Distillation Robustifies
Unlearning"; code: AddieFoote/distillation-robustify-unlearning).

UNDO's finding: an unlearned model that only suppresses its knowledge keeps it in the weights,
where a few relearning steps find it; a student that *learns* the unlearned model's behaviour from
its outputs does not inherit the suppressed knowledge. "Unlearn, Noise, Distill on Outputs":

1. the student starts as a shrink-and-perturb copy of the unlearned teacher (their
   ``do_corruption``): ``theta_s = (1 - alpha) * theta_t + alpha * beta * N`` for every matrix,
   ``N`` fresh Xavier-uniform noise; vectors (norms, biases) are only shrunk, ``(1 - alpha) *
   theta_t``. ``alpha`` trades robustness (more of the teacher forgotten) against the compute
   needed to recover its behaviour;
2. the student is trained on the forward KL(teacher || student) of the next-token distributions
   over the whole vocabulary (temperature 1), the mean over real token positions, on general
   text; they stop when the student's retain loss is within 5% of the teacher's.

UNDO reports the compute relative to retraining from scratch on perfectly filtered data (60-80%
in their setting; the paper's unit could not be verified from here). We report ours as
**forward-pass equivalents of token positions**: a forward pass of one token costs 1, a backward
pass 2 (the usual 1:2 ratio), so a training token costs 3 and a distillation token 4 (teacher
forward + student forward and backward); the oracle's retraining cost is 3 x its training tokens
(``oracle_cost`` in the result, from the world manifest when given).

Ours: the data. UNDO distils on its pretraining mixture (forget data included); on the embedded
world our default is what the issue asks, "retain and generic text": fresh epochs of the world's
training text without the forget units (the oracle's own distribution, so the student can reach the
teacher's retain behaviour), and for any other model the corpus given as ``data``. The budget is
a token count (``tokens``) rather than their retain-loss threshold, so runs are comparable at equal
compute; the threshold is reported (``retain_gap``: the student's KL to the teacher on held-out
rows at the end). Xavier bounds for TransformerLens's 3-D attention weights use the fans of the
equivalent 2-D matrix.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from hookunlearn.errors import HookunlearnError

Progress = Callable[[dict[str, Any]], None]

FORWARD_COST, BACKWARD_COST = 1, 2
"""Forward-pass equivalents per token position of one forward and one backward pass."""


@dataclass(frozen=True)
class DistillConfig:
    alpha: float = 0.5
    """Shrink toward noise: 0 keeps the teacher, 1 starts from pure noise (UNDO sweeps 0.1-0.8; on
    the world, 0.8 at 1 M tokens destroyed the model, docs/methods/robust.md)."""
    beta: float = 0.1
    """Noise scale inside the mix (UNDO: 0.1 on language and arithmetic, 0 on WMDP)."""
    tokens: int = 1_000_000
    """Distillation budget in token positions (rows x n_ctx, as the world model's training counts)."""
    batch_size: int = 32
    """Rows per step."""
    n_ctx: int = 64
    """Row length the text is packed to (the world model's context)."""
    lr: float = 1e-3
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = 50
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    data: str | None = None
    """A corpus spec; default on the embedded world: its training text without the forget units."""
    include_forget: bool = False
    """On the embedded world: keep the forget units in the distillation text (UNDO's own mixture,
    which includes the forget data: the student then learns the teacher's behaviour on it)."""
    seed: int = 0
    """Seeds the noise and the row order."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.alpha <= 1.0 and 0.0 <= self.beta <= 1.0):
            raise HookunlearnError(
                f"stage distill: alpha {self.alpha} and beta {self.beta} must lie in [0, 1]."
            )
        for key in ("tokens", "batch_size", "n_ctx"):
            if getattr(self, key) < 1:
                raise HookunlearnError(f"stage distill: {key} {getattr(self, key)} must be at least 1.")
        for key in ("lr", "grad_clip"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise HookunlearnError(f"stage distill: {key} {value} must be a positive finite number.")
        if self.warmup_steps < 0 or not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise HookunlearnError("stage distill: warmup_steps and weight_decay must be >= 0.")


def check_inputs(config: DistillConfig, *, world_dir: Path | None, subspace: bool = False) -> None:
    """Before any training: the text to distil on is known and readable (``data``, or the world's)."""
    if config.data is not None:
        from hookunlearn.data import load_texts

        load_texts(config.data)  # a missing or empty corpus is an error now, not after the run
    elif world_dir is None:
        raise HookunlearnError(
            "stage distill needs text to distil on: --stage distill:data=CORPUS (general text "
            "without the forget set); the world's training text is the default only on the world model."
        )


@dataclass
class DistillResult:
    steps: int
    tokens: int
    seconds: float
    cost: int
    """Forward-pass equivalents: ``tokens * (1 + 3)`` (teacher forward, student forward + backward)."""
    oracle_cost: int | None
    """The oracle's retraining cost in the same unit (``3 * its training tokens``), when known."""
    final_kl: float
    retain_gap: float
    """Mean KL(teacher || student) per token on held-out rows at the end."""
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cost_vs_oracle(self) -> float | None:
        return self.cost / self.oracle_cost if self.oracle_cost else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "cost_forward_equivalents": self.cost,
            "oracle_cost_forward_equivalents": self.oracle_cost,
            "cost_vs_oracle": self.cost_vs_oracle,
            "final_kl": self.final_kl,
            "heldout_kl": self.retain_gap,
            "cost_unit": "forward-pass equivalents of token positions (forward 1, backward 2)",
        }


def xavier_bound(name: str, shape: torch.Size) -> float:
    """Xavier-uniform bound ``sqrt(6 / (fan_in + fan_out))`` of the equivalent 2-D matrix."""
    if len(shape) == 2:
        fan_in, fan_out = shape[0], shape[1]
    elif len(shape) == 3 and name.endswith("W_O"):  # [heads, d_head, d_model]
        fan_in, fan_out = shape[0] * shape[1], shape[2]
    elif len(shape) == 3:  # W_Q/W_K/W_V: [heads, d_model, d_head]
        fan_in, fan_out = shape[1], shape[0] * shape[2]
    else:
        raise HookunlearnError(f"distill: cannot perturb parameter {name} of shape {tuple(shape)}.")
    return math.sqrt(6.0 / (fan_in + fan_out))


def is_matrix(name: str) -> bool:
    """Weights (``W_*``) get noise; biases, norm scales and the rest are only shrunk."""
    return name.rsplit(".", 1)[-1].startswith("W_")


@torch.no_grad()
def shrink_perturb(model: HookedTransformer, alpha: float, beta: float, seed: int) -> HookedTransformer:
    """A copy of ``model`` with UNDO's ``(1 - alpha) * theta + alpha * beta * N`` applied."""
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= beta <= 1.0:
        raise HookunlearnError(f"distill: alpha {alpha} and beta {beta} must lie in [0, 1].")
    student = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for name, param in student.named_parameters():
        if is_matrix(name):
            bound = xavier_bound(name, param.shape)
            noise = (torch.rand(param.shape, generator=generator) * 2 - 1) * bound
            param.mul_(1 - alpha).add_(alpha * beta * noise.to(param.device, param.dtype))
        else:
            param.mul_(1 - alpha)
    return student


def kl_to_teacher(
    student_logits: Float[Tensor, "b p v"], teacher_logits: Float[Tensor, "b p v"], mask: Bool[Tensor, "b p"]
) -> Tensor:
    """Forward KL(teacher || student) per position, averaged over the masked positions."""
    teacher_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    student_logp = F.log_softmax(student_logits.float(), dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    weights = mask.to(kl.device).float()
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def distill(
    teacher: HookedTransformer,
    rows: Int[Tensor, "n n_ctx"],
    mask: Bool[Tensor, "n n_ctx"],
    config: DistillConfig,
    *,
    oracle_tokens: int | None = None,
    progress: Progress | None = None,
) -> tuple[HookedTransformer, DistillResult]:
    """Distil ``teacher`` into a shrink-and-perturb copy of itself on ``rows`` (``mask``: the
    positions whose next-token distribution counts). One row in 20 (at most 64) is held out for
    ``retain_gap``. Returns the student and what it cost."""
    n_held = min(64, len(rows) // 20)
    if len(rows) - n_held < 1:
        raise HookunlearnError("distill: no text rows to distil on; give a larger corpus (data=...).")
    held_rows, held_mask = rows[:n_held], mask[:n_held]
    rows, mask = rows[n_held:], mask[n_held:]
    device = teacher.cfg.device
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    student = shrink_perturb(teacher, config.alpha, config.beta, config.seed)
    params = [p for p in student.parameters()]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, config.tokens // (config.batch_size * rows.shape[1]))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(rows), generator=generator)
    position, start, log = 0, time.perf_counter(), []
    kl_value = float("nan")
    for step in range(steps):
        if position + config.batch_size > len(order):
            order, position = torch.randperm(len(rows), generator=generator), 0
        index = order[position : position + config.batch_size]
        position += config.batch_size
        tokens = rows[index].to(device)
        with torch.no_grad():
            teacher_logits = teacher(tokens, return_type="logits")
        loss = kl_to_teacher(student(tokens, return_type="logits"), teacher_logits, mask[index])
        if not torch.isfinite(loss):
            raise HookunlearnError(f"distill: the KL became {float(loss)} at step {step}; lower lr.")
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        kl_value = float(loss.detach())
        record = {"step": step + 1, "kl": kl_value, "elapsed_s": time.perf_counter() - start}
        log.append(record)
        if progress is not None:
            progress(record)
    for param in params:
        param.requires_grad_(False)
    tokens_seen = steps * config.batch_size * rows.shape[1]
    with torch.no_grad():
        held = (
            float(
                kl_to_teacher(
                    student(held_rows.to(device), return_type="logits"),
                    teacher(held_rows.to(device), return_type="logits"),
                    held_mask,
                )
            )
            if n_held
            else float("nan")
        )
    result = DistillResult(
        steps=steps,
        tokens=tokens_seen,
        seconds=time.perf_counter() - start,
        cost=tokens_seen * (FORWARD_COST + FORWARD_COST + BACKWARD_COST),
        oracle_cost=oracle_tokens * (FORWARD_COST + BACKWARD_COST) if oracle_tokens else None,
        final_kl=kl_value,
        retain_gap=held,
        log=log,
    )
    return student, result


def pack_texts(
    model: HookedTransformer, texts: list[str], n_ctx: int
) -> tuple[Int[Tensor, "n n_ctx"], Bool[Tensor, "n n_ctx"]]:
    """Texts packed into rows of ``n_ctx`` tokens (BOS between units, as the world model was
    trained) and the mask of positions whose next token counts."""
    from hookunlearn.world.lm import pack_units, special_ids, target_mask

    if model.tokenizer is None:
        raise HookunlearnError("distill needs the model's tokenizer to pack its text.")
    rows = pack_units(texts, model.tokenizer, n_ctx)
    _, pad_id = special_ids(model.tokenizer)
    targets = target_mask(rows, pad_id)
    # position t's distribution predicts token t+1: count position t when target t+1 counts
    mask = torch.zeros_like(rows, dtype=torch.bool)
    mask[:, :-1] = targets
    return rows, mask


def world_texts(
    world_dir: Path, tokens: int, n_ctx: int, seed: int, include_forget: bool = False
) -> list[str]:
    """Fresh epochs of the world's training text without its forget units (the oracle's data; with
    ``include_forget``, all of it), enough for about ``tokens`` token positions; epochs from
    10,000 + seed on (not the ones the world model or the oracle trained on)."""
    from hookunlearn.artifacts import read_manifest
    from hookunlearn.world.generator import WorldConfig, generate_world
    from hookunlearn.world.oracle import oracle_units

    manifest = read_manifest(world_dir, kind="world")
    world = generate_world(WorldConfig(**manifest.options["world"]))
    texts: list[str] = []
    epoch, chars = 10_000 + seed, 0
    # ~3 characters per token position on the world's tokenizer (measured: 1 epoch ~ 110k tokens)
    while chars < tokens * 3 or not texts:
        units = (
            [u.text for u in world.tagged_training_units(epoch)]
            if include_forget
            else oracle_units(world, epoch)
        )
        texts.extend(units)
        chars += sum(len(u) + 1 for u in units)
        epoch += 1
    return texts


def oracle_training_tokens(world_dir: Path) -> int | None:
    """The oracle's training tokens, from the world manifest (None when it has no oracle)."""
    import json

    path = world_dir / "manifest.json"
    if not path.is_file():
        return None
    oracle = json.loads(path.read_text(encoding="utf-8")).get("extra", {}).get("oracle", {})
    tokens = oracle.get("training", {}).get("tokens")
    return int(tokens) if tokens else None


class Distill:
    """The ``distill`` stage: `run` replaces the model's weights with the distilled student's."""

    Config = DistillConfig
    name = "distill"

    def __init__(self, config: DistillConfig) -> None:
        self.config = config

    def run(
        self,
        model: HookedTransformer,
        *,
        texts: list[str] | None = None,
        world_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> DistillResult:
        """Distil ``model`` (the unlearned teacher) and copy the student's weights into it."""
        config = self.config
        if texts is None:
            if config.data is not None:
                from hookunlearn.data import load_texts

                texts = load_texts(config.data)
            else:
                check_inputs(config, world_dir=world_dir)
                assert world_dir is not None
                texts = world_texts(
                    world_dir, config.tokens, config.n_ctx, config.seed, config.include_forget
                )
        rows, mask = pack_texts(model, texts, config.n_ctx)
        student, result = distill(
            model,
            rows,
            mask,
            config,
            oracle_tokens=oracle_training_tokens(world_dir) if world_dir is not None else None,
            progress=progress,
        )
        with torch.no_grad():
            model.load_state_dict(student.state_dict())
        return result


Config = DistillConfig
STAGE = Distill
