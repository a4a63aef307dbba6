"""The attacks that break unlearning in the literature, each a suite, each run on the oracle too.

Every attack scores a *target*: multiple-choice accuracy on questions about held-out forget facts
(``target="mc"``: the hazardous domain) or greedy QA recall of held-out forget people
(``target="qa"``). Where an attack trains on part of the forget set, the facts (or people) are
split by ``seed`` into a training half T and a scored half V (`hookunlearn.evaluation.attacks.split_items`),
so the score is never on what was trained on. The passed model is never modified (attacks that
train work on a copy). ``score_before`` is the target on the model as it is; ``score_after`` the
worst case the attack reached.

- ``rtt``: relearning as a protocol (Deeb & Roger, arXiv 2410.08827, "Do unlearning methods
  remove information from language model weights?"): fine-tune on T, score V, over a grid of
  learning rates and step counts, with full fine-tuning and with LoRA; every cell is reported and
  ``score_after`` is the maximum. LoRA here is ours (rank-``lora_rank`` factors on every block's
  ``mlp.W_in``, ``mlp.W_out`` and ``attn.W_O``, added through `torch.nn.utils.parametrize`):
  peft wraps ``nn.Linear`` modules, and TransformerLens keeps its weights as raw parameters used
  in einsums, which peft cannot target.
- ``finetune_unrelated``: fine-tuning on unrelated data (Łucki et al., arXiv 2409.18025, "An
  Adversarial Perspective on Machine Unlearning for AI Safety": a few unrelated examples recover
  much of RMU's hazardous knowledge): fine-tune on retain or generic text only, score V.
- ``repair_relearn``: repair, then attack: fine-tune on generic text first, then relearn on T;
  forgetting that came only from damage to the model shows up here.
- ``ablation``: direction and subspace ablation at the hooked layer (Arditi's "RMU is mostly
  shallow"; Łucki et al.): project out of the residual stream the top ``k`` directions of the
  difference between the model's and the base model's activations on forget text (``diff``), or
  the directions a subspace method used (``subspace_irr``: `U_irr` of the run's subspace; SSPU's
  control vector lies in it), and score V with the ablation hook on.
- ``in_context``: facts of T in the prompt (few-shot): ``shots`` solved items of T before each
  question of V, as many as fit the model's context.

``decodability`` (is the knowledge still readable inside?) is a probe rather than an attack: per
layer, a linear map from that layer's residual (at the last prompt token) to the final residual is
fit by ridge regression on the **base** model's activations on **retain** items, then the base
model's unembedding reads the answer's first token from the evaluated model's residual on forget
items; ``logit_lens`` is the same with the identity map. ``decodable_max`` is the best layer's
share of forget items whose answer token is the top prediction.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import load_records, load_texts
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.evaluation.attacks import relearn, split_items
from hookunlearn.evaluation.mc import evaluate_mc, parse_questions
from hookunlearn.evaluation.qa import QAItem, evaluate_qa, parse_qa
from hookunlearn.evaluation.scoring import bos_prefix, encode_pair
from hookunlearn.evaluation.standard import data_name
from hookunlearn.evaluation.suites import EvalContext, Suite, register
from hookunlearn.hooks import resid_post_hook, trainer_layer
from hookunlearn.tokens import tokenize_texts

Target = Literal["mc", "qa"]


# --- the scored target: held-out forget facts (MC) or people (QA) -----------------------------


@dataclass
class Split:
    """What an attack trains on (T) and what it is scored on (V)."""

    score: Callable[[LanguageModel], float]
    """The target on V: MC accuracy or QA recall."""
    train_texts: list[str]
    """T as training text (MC: the forget corpus rows of T's facts; QA: ``prompt answer``)."""
    train_prompts: list[str] | None
    """QA: the prompt part of each training text (the loss reads only the answer)."""
    n_train: int
    n_eval: int
    eval_qa: list[QAItem] | None = None
    train_qa: list[QAItem] | None = None


def make_split(
    target: str, data: str | None, train_data: str | None, fraction: float, seed: int, batch_size: int
) -> Split:
    """The T/V split: ``mc`` splits the forget facts (``fact_id``) of ``data`` and trains on the
    ``train_data`` rows of T's facts; ``qa`` splits the forget people of ``data`` and trains on T's
    QA lines. ``data`` / ``train_data`` None: the world's."""
    default_data, default_train = _target_defaults(target)
    data, train_data = data or default_data, train_data or default_train
    if target == "mc":
        records = [r for r in load_records(data) if r.get("split") == "forget"]
        if not records or any("fact_id" not in r for r in records):
            raise DataError(f"{data}: an mc target needs questions with split 'forget' and a 'fact_id'.")
        facts = sorted({str(r["fact_id"]) for r in records})
        train_part, _ = split_items(len(facts), fraction, seed)
        train_facts = {facts[i] for i in train_part}
        questions = parse_questions([r for r in records if str(r["fact_id"]) not in train_facts], data)
        corpus = load_records(train_data)
        texts = [str(r["text"]) for r in corpus if str(r.get("fact_id")) in train_facts]
        if not texts:
            raise DataError(f"{train_data}: no text for the training facts (matched on 'fact_id').")

        def score_mc(model: LanguageModel) -> float:
            return evaluate_mc(model, questions, protocol="continuation", batch_size=batch_size).accuracy

        return Split(score_mc, texts, None, len(train_facts), len(questions))
    if target != "qa":
        raise HookunlearnError(f"target={target!r}: choose 'mc' or 'qa'.")
    items = [item for item in parse_qa(load_records(data), data) if item.split == "forget"]
    if not items:
        raise DataError(f"{data}: a qa target needs items with split 'forget'.")
    people = sorted({item.entity for item in items})
    train_part, _ = split_items(len(people), fraction, seed)
    train_people = {people[i] for i in train_part}
    train_items = [item for item in items if item.entity in train_people]
    eval_items = [item for item in items if item.entity not in train_people]

    def score_qa(model: LanguageModel) -> float:
        return evaluate_qa(model, eval_items, batch_size=batch_size).recall["forget"]

    return Split(
        score_qa,
        [f"{item.prompt} {item.answer}" for item in train_items],
        [item.prompt for item in train_items],
        len(train_items),
        len(eval_items),
        eval_items,
        train_items,
    )


def _target_defaults(target: str) -> tuple[str, str]:
    return (
        ("world:mc_hazard", "world:forget_corpus")
        if target == "mc"
        else ("world:entity_qa", "world:entity_qa")
    )


def _split(config: Any, context: EvalContext) -> Split:
    return make_split(
        config.target, config.data, config.train_data, config.fraction, config.seed, context.batch_size
    )


def _check_fraction(name: str, fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise HookunlearnError(
            f"suite {name}: fraction={fraction}; it must be strictly between 0 and 1 (e.g. 0.5)."
        )


# --- LoRA on TransformerLens weights ----------------------------------------------------------


class _LowRank(nn.Module):
    """``W + A @ B`` (``B`` starts at zero, so the model starts unchanged), for a 2-D or 3-D weight."""

    def __init__(self, weight: Tensor, rank: int, seed: int) -> None:
        super().__init__()
        rows, cols = weight.shape[-2], weight.shape[-1]
        lead = weight.shape[:-2]
        generator = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(
            torch.randn(*lead, rows, rank, generator=generator).to(weight) / math.sqrt(rows)
        )
        self.B = nn.Parameter(torch.zeros(*lead, rank, cols, dtype=weight.dtype, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.A @ self.B


LORA_TARGETS: tuple[str, ...] = ("mlp.W_in", "mlp.W_out", "attn.W_O")


def lora_copy(model: LanguageModel, rank: int, seed: int = 0) -> tuple[LanguageModel, list[nn.Parameter]]:
    """A deep copy of ``model`` whose `LORA_TARGETS` carry trainable low-rank deltas; returns the
    copy and the LoRA parameters (everything else is frozen)."""
    from torch.nn.utils import parametrize

    trained = copy.deepcopy(model)
    for param in trained.parameters():
        param.requires_grad_(False)
    params: list[nn.Parameter] = []
    for index, block in enumerate(trained.blocks):
        for name in LORA_TARGETS:
            owner_name, attribute = name.split(".")
            owner = getattr(block, owner_name, None)
            if owner is None or not isinstance(getattr(owner, attribute, None), Tensor):
                continue
            low_rank = _LowRank(getattr(owner, attribute).detach(), rank, seed * 1000 + index)
            parametrize.register_parametrization(owner, attribute, low_rank, unsafe=True)
            params += [low_rank.A, low_rank.B]
    if not params:
        raise HookunlearnError(f"LoRA: the model has none of {', '.join(LORA_TARGETS)} to adapt.")
    return trained, params


def relearn_lora(
    model: LanguageModel,
    texts: Sequence[str],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    rank: int,
    prompts: Sequence[str] | None = None,
) -> LanguageModel:
    """`relearn` with LoRA: only the low-rank factors train."""
    trained, _ = lora_copy(model, rank, seed)
    # `lora_copy` already copied: train that copy in place, its low-rank factors only
    result = relearn(
        trained, texts, steps, lr, batch_size, seed, prompts=prompts, trainable=(".A", ".B"), copy_model=False
    )
    return result.model


# --- rtt: the relearning grid -----------------------------------------------------------------


@dataclass(frozen=True)
class RTTConfig:
    target: Target = "mc"
    """``mc``: hazard MC on held-out forget facts (trained on forget-corpus text of the others);
    ``qa``: recall of held-out forget people (trained on the others' QA lines)."""
    data: str | None = None
    """The scored data (default: ``world:mc_hazard`` for mc, ``world:entity_qa`` for qa)."""
    train_data: str | None = None
    """The training text for mc (default ``world:forget_corpus``, rows with ``text`` and ``fact_id``)."""
    lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    """Learning rates of the grid (world-sized: 1e-4 is `relearn`'s default; ~1e-5 for 7B models)."""
    steps: tuple[int, ...] = (20, 40)
    modes: tuple[str, ...] = ("full", "lora")
    lora_rank: int = 4
    lora_lr_factor: float = 10.0
    """LoRA cells use ``lr * lora_lr_factor`` (low-rank factors need larger steps; RTT-style grids do the same)."""
    fraction: float = 0.5
    train_batch_size: int = 8
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        _check_fraction("rtt", self.fraction)
        if (
            not self.lrs
            or not self.steps
            or not self.modes
            or any(m not in ("full", "lora") for m in self.modes)
        ):
            raise HookunlearnError(
                f"suite rtt: lrs={self.lrs}, steps={self.steps}, modes={self.modes}; give non-empty grids and modes "
                "from full, lora."
            )
        if any(lr <= 0 for lr in self.lrs) or any(s < 1 for s in self.steps) or self.lora_rank < 1:
            raise HookunlearnError("suite rtt: learning rates, steps and lora_rank must be positive.")


@register
class RTTSuite(Suite):
    name: ClassVar[str] = "rtt"
    attack: ClassVar[tuple[str, str]] = ("score_after", "mc")
    summary: ClassVar[str] = (
        "RTT relearning grid (lr x steps, full and LoRA): fine-tune on half the forget set, score the other half."
    )
    Config = RTTConfig

    def instance_name(self) -> str:
        return self.config.name or f"rtt_{self.config.target}"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        split = _split(config, context)
        before = split.score(model)
        metrics: dict[str, float] = {"score_before": before}
        for mode, lr, steps in itertools.product(config.modes, config.lrs, config.steps):
            context.say(f"rtt: {mode} lr {lr:g}, {steps} steps on {split.n_train} training items")
            if mode == "full":
                attacked = relearn(
                    model,
                    split.train_texts,
                    steps,
                    lr,
                    config.train_batch_size,
                    config.seed,
                    prompts=split.train_prompts,
                ).model
            else:
                attacked = relearn_lora(
                    model,
                    split.train_texts,
                    steps,
                    lr * config.lora_lr_factor,
                    config.train_batch_size,
                    config.seed,
                    config.lora_rank,
                    prompts=split.train_prompts,
                )
            metrics[f"score[{mode},lr={lr:g},steps={steps}]"] = split.score(attacked)
            del attacked
        cells = [v for k, v in metrics.items() if k.startswith("score[")]
        metrics["score_after"] = max(cells)
        metrics["recovered"] = metrics["score_after"] - before
        return metrics, dict.fromkeys(metrics, split.n_eval), {"n_train": split.n_train}


# --- fine-tuning on unrelated data, and repair then relearn -----------------------------------


@dataclass(frozen=True)
class UnrelatedConfig:
    target: Target = "mc"
    data: str | None = None
    train_data: str | None = None
    """For ``repair_relearn`` with mc: the forget corpus the relearning half comes from."""
    unrelated_data: str = "world:retain_corpus"
    """Text with nothing of the forget set (``text`` column): retain or generic text."""
    unrelated_texts: int = 64
    """How many unrelated texts (the first N, after a seeded shuffle)."""
    steps: int = 20
    lr: float = 1e-4
    fraction: float = 0.5
    train_batch_size: int = 8
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        _check_fraction("finetune_unrelated", self.fraction)
        if self.steps < 1 or self.lr <= 0 or self.unrelated_texts < 1:
            raise HookunlearnError(
                "suite finetune_unrelated: steps, lr and unrelated_texts must be positive."
            )


def _unrelated(config: UnrelatedConfig) -> list[str]:
    import random

    texts = load_texts(config.unrelated_data)
    random.Random(config.seed).shuffle(texts)
    return texts[: config.unrelated_texts]


@register
class UnrelatedFinetuneSuite(Suite):
    name: ClassVar[str] = "finetune_unrelated"
    attack: ClassVar[tuple[str, str]] = ("score_after", "mc")
    summary: ClassVar[str] = (
        "Fine-tune on unrelated (retain/generic) text only, then score the held-out forget set."
    )
    Config = UnrelatedConfig

    def instance_name(self) -> str:
        return self.config.name or f"finetune_unrelated_{self.config.target}"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        split = _split(config, context)
        before = split.score(model)
        context.say(f"finetune_unrelated: {config.steps} steps on {config.unrelated_texts} unrelated texts")
        tuned = relearn(
            model, _unrelated(config), config.steps, config.lr, config.train_batch_size, config.seed
        )
        after = split.score(tuned.model)
        metrics = {"score_before": before, "score_after": after, "recovered": after - before}
        return metrics, dict.fromkeys(metrics, split.n_eval), {"unrelated_loss_after": tuned.loss_after}


@register
class RepairRelearnSuite(Suite):
    name: ClassVar[str] = "repair_relearn"
    attack: ClassVar[tuple[str, str]] = ("score_after", "mc")
    summary: ClassVar[str] = (
        "Repair on generic text, then relearn on half the forget set; score the other half."
    )
    Config = UnrelatedConfig

    def instance_name(self) -> str:
        return self.config.name or f"repair_relearn_{self.config.target}"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        split = _split(config, context)
        before = split.score(model)
        repaired = relearn(
            model, _unrelated(config), config.steps, config.lr, config.train_batch_size, config.seed
        ).model
        after_repair = split.score(repaired)
        attacked = relearn(
            repaired, split.train_texts, config.steps, config.lr, config.train_batch_size, config.seed,
            prompts=split.train_prompts,
        ).model  # fmt: skip
        after = split.score(attacked)
        metrics = {
            "score_before": before,
            "score_after_repair": after_repair,
            "score_after": after,
            "recovered": after - before,
        }
        return metrics, dict.fromkeys(metrics, split.n_eval), {"n_train": split.n_train}


# --- direction and subspace ablation ----------------------------------------------------------


@dataclass(frozen=True)
class AblationConfig:
    target: Target = "mc"
    data: str | None = None
    forget_texts: str = "world:forget_corpus"
    """Forget text whose activations give the ``diff`` directions."""
    directions: Literal["diff", "subspace_irr"] = "diff"
    k: int = 1
    """How many directions to project out (``diff``: the top right singular vectors)."""
    layer: int | None = None
    """The hooked layer (``blocks.L.hook_resid_post``); default: the context subspace's."""
    max_texts: int = 64
    fraction: float = 0.5
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        _check_fraction("ablation", self.fraction)
        if self.k < 1 or self.max_texts < 1:
            raise HookunlearnError("suite ablation: k and max_texts must be positive.")


@torch.no_grad()
def _residuals(model: LanguageModel, texts: list[str], hook: str) -> Float[Tensor, "n d_model"]:
    from hookunlearn.activations import stop_layer_for

    data = tokenize_texts(model, texts)
    _, cache = model.run_with_cache(
        data.tokens.to(model.cfg.device),
        names_filter=[hook],
        stop_at_layer=stop_layer_for([hook], model.cfg.n_layers),
    )
    return cache[hook][data.mask.to(model.cfg.device)].float().cpu()


def diff_directions(model: LanguageModel, base: LanguageModel, texts: list[str], hook: str, k: int) -> Tensor:
    """The top ``k`` right singular vectors of (model - base) residuals on ``texts`` (token-aligned)."""
    difference = _residuals(model, texts, hook) - _residuals(base, texts, hook)
    _, _, vh = torch.linalg.svd(difference, full_matrices=False)
    return vh[:k].T.contiguous()


@contextmanager
def ablated(model: LanguageModel, hook: str, directions: Tensor) -> Iterator[LanguageModel]:
    """``h - V (V^T h)`` at ``hook`` (``directions``: orthonormal columns, ``d_model x k``)."""
    basis, _ = torch.linalg.qr(directions.float())

    def project_out(activation: Tensor, hook: Any = None) -> Tensor:
        v = basis.to(activation.device, activation.dtype)
        return activation - (activation @ v) @ v.T

    with model.hooks(fwd_hooks=[(hook, project_out)]):
        yield model


@register
class AblationSuite(Suite):
    name: ClassVar[str] = "ablation"
    attack: ClassVar[tuple[str, str]] = ("score_after", "mc")
    summary: ClassVar[str] = (
        "Project out the unlearning's directions at the hooked layer (diff vs base, or U_irr); score the forget set."
    )
    Config = AblationConfig
    reusable_from_report: ClassVar[bool] = False  # it depends on the base model / subspace

    def instance_name(self) -> str:
        return self.config.name or f"ablation_{self.config.directions}_{self.config.target}"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        if config.layer is not None:
            hook = resid_post_hook(config.layer)
        elif context.subspace is not None:
            hook = resid_post_hook(trainer_layer(context.subspace.hook))
        else:
            raise HookunlearnError(
                "suite ablation needs the hooked layer: ablation:layer=N, or --subspace DIR."
            )
        if config.directions == "diff":
            if context.baseline is None:
                raise HookunlearnError(
                    "suite ablation:directions=diff needs the base model: pass --baseline MODEL."
                )
            texts = load_texts(config.forget_texts)[: config.max_texts]
            directions = diff_directions(model, context.baseline, texts, hook, config.k)
        else:
            if context.subspace is None:
                raise HookunlearnError("suite ablation:directions=subspace_irr needs --subspace DIR.")
            directions = context.subspace.U_irr.float()
        split = make_split(
            config.target, config.data, config.forget_texts, config.fraction, config.seed, context.batch_size
        )
        before = split.score(model)
        with ablated(model, hook, directions):
            after = split.score(model)
        metrics = {"score_before": before, "score_after": after, "recovered": after - before}
        return (
            metrics,
            dict.fromkeys(metrics, split.n_eval),
            {"hook": hook, "n_directions": int(directions.shape[1])},
        )


# --- in-context facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class InContextConfig:
    data: str = "world:entity_qa"
    shots: int = 3
    """Solved QA lines of the training half before each question (as many as fit the context)."""
    fraction: float = 0.5
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        _check_fraction("in_context", self.fraction)
        if self.shots < 1:
            raise HookunlearnError("suite in_context: shots must be at least 1.")


@register
class InContextSuite(Suite):
    name: ClassVar[str] = "in_context"
    attack: ClassVar[tuple[str, str]] = ("score_after", "qa")
    summary: ClassVar[str] = (
        "Few-shot in-context attack: facts of half the forget people in the prompt, recall of the others."
    )
    Config = InContextConfig

    def instance_name(self) -> str:
        return self.config.name or "in_context_qa"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        split = make_split("qa", config.data, None, config.fraction, config.seed, context.batch_size)
        assert split.eval_qa is not None and split.train_qa is not None
        prefix = bos_prefix(model, None)
        shots_used = []
        prompted = []
        for index, item in enumerate(split.eval_qa):
            chosen = [
                split.train_qa[(index * config.shots + j) % len(split.train_qa)] for j in range(config.shots)
            ]
            while chosen:
                prompt = "\n".join(f"{s.prompt} {s.answer}" for s in chosen) + "\n" + item.prompt
                pair = encode_pair(model, prompt, " " + item.answer, prefix)
                if len(pair.context) + len(pair.continuation) <= model.cfg.n_ctx:
                    break
                chosen = chosen[:-1]
            if not chosen:
                prompt = item.prompt
            shots_used.append(len(chosen))
            prompted.append(QAItem(prompt, item.answer, item.entity, item.split))
        before = split.score(model)
        after = evaluate_qa(model, prompted, batch_size=context.batch_size).recall["forget"]
        metrics = {"score_before": before, "score_after": after, "recovered": after - before}
        return (
            metrics,
            dict.fromkeys(metrics, split.n_eval),
            {"mean_shots": sum(shots_used) / len(shots_used)},
        )


# --- decodability: logit lens and a base-trained linear read-out -------------------------------


@dataclass(frozen=True)
class DecodabilityConfig:
    data: str = "world:entity_qa"
    ridge: float = 1e-2
    """Ridge penalty of the per-layer map (relative to the activations' mean square)."""
    name: str | None = None


@torch.no_grad()
def _last_token_residuals(
    model: LanguageModel, prompts: list[str], batch_size: int = 64
) -> tuple[dict[int, Tensor], Tensor]:
    """Per layer, the residual after the block at each prompt's last token, and the final one."""
    from hookunlearn.activations import tokenize_batch

    hooks = [resid_post_hook(layer) for layer in range(model.cfg.n_layers)]
    out: dict[int, list[Tensor]] = {layer: [] for layer in range(model.cfg.n_layers)}
    for start in range(0, len(prompts), batch_size):
        tokens, mask = tokenize_batch(model, prompts[start : start + batch_size])
        # right-padded rows: the last real token is the last True of the mask (BOS when no token is)
        last = torch.where(
            mask.any(1), mask.long().cumsum(1).argmax(1), torch.zeros(len(mask), dtype=torch.long)
        )
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=hooks)
        rows = torch.arange(len(tokens))
        for layer, hook in enumerate(hooks):
            out[layer].append(cache[hook][rows, last.to(cache[hook].device)].float().cpu())
    stacked = {layer: torch.cat(rows) for layer, rows in out.items()}
    return stacked, stacked[model.cfg.n_layers - 1]


def _read(base: LanguageModel, residual: Tensor) -> Tensor:
    """The base model's own read-out of a final-layer residual: ln_final then the unembedding."""
    with torch.no_grad():
        x = residual.to(base.cfg.device, base.W_U.dtype)[:, None, :]
        return base.unembed(base.ln_final(x))[:, 0].float().cpu()


@register
class DecodabilitySuite(Suite):
    name: ClassVar[str] = "decodability"
    summary: ClassVar[str] = (
        "Is the answer still readable inside? Logit lens and a base-trained linear read-out per layer."
    )
    Config = DecodabilityConfig
    reusable_from_report: ClassVar[bool] = False

    def instance_name(self) -> str:
        return self.config.name or f"decodability_{data_name(self.config.data)}"

    def compute(self, model: LanguageModel, context: EvalContext):
        from hookunlearn.evaluation.scoring import encode

        base = context.baseline if context.baseline is not None else model
        items = parse_qa(load_records(self.config.data), self.config.data)
        retain = [i for i in items if i.split == "retain"]
        forget = [i for i in items if i.split == "forget"]
        if not retain or not forget:
            raise DataError(f"{self.config.data}: decodability needs items with split 'retain' and 'forget'.")
        fit_layers, fit_final = _last_token_residuals(base, [i.prompt for i in retain])
        here, _ = _last_token_residuals(model, [i.prompt for i in forget])
        answers = torch.tensor([encode(model, " " + i.answer)[0] for i in forget])
        metrics: dict[str, float] = {}
        for layer in range(model.cfg.n_layers):
            x, y = fit_layers[layer], fit_final
            penalty = self.config.ridge * float(x.square().mean()) * len(x)
            weights = torch.linalg.solve(x.T @ x + penalty * torch.eye(x.shape[1]), x.T @ y)
            for kind, mapped in (("logit_lens", here[layer]), ("linear", here[layer] @ weights)):
                hits = (_read(base, mapped).argmax(-1) == answers).float().mean()
                metrics[f"{kind}[{layer}]"] = float(hits)
        metrics["decodable_max"] = max(v for k, v in metrics.items() if k.startswith("linear["))
        return metrics, dict.fromkeys(metrics, len(forget)), {"trained_on": "base model, retain items"}


ATTACK_SUITES: tuple[str, ...] = ("rtt", "finetune_unrelated", "repair_relearn", "ablation", "in_context")
"""The attacks whose ``score_after`` joins a report's worst case (with ``jailbreak`` and ``relearn``)."""

__all__ = [
    "ATTACK_SUITES",
    "AblationConfig",
    "AblationSuite",
    "DecodabilityConfig",
    "DecodabilitySuite",
    "InContextConfig",
    "InContextSuite",
    "LORA_TARGETS",
    "RTTConfig",
    "RTTSuite",
    "RepairRelearnSuite",
    "UnrelatedConfig",
    "UnrelatedFinetuneSuite",
    "ablated",
    "diff_directions",
    "lora_copy",
    "make_split",
    "relearn_lora",
]
