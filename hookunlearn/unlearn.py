"""`unlearn(...)`: run one method on a model and return (and optionally save) the result.

Data by method: ``sspu``, ``rmu``, ``ga``, ``graddiff``, ``npo`` read a forget and a retain corpus
(texts); ``align`` reads, on the forget side, target-entity prompts (every token of the entity
name) and/or texts about the targets (every token), and on the retain side known-entity prompts
and/or retain texts (every token, preserved). The hooked layer is the subspace's (or
``layer``). The model is edited in place.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives import ObjectiveContext, get_objective
from hookunlearn.selection import EntityPrompt
from hookunlearn.subspace import Subspace
from hookunlearn.train import (
    TokenData,
    TrainConfig,
    Trainer,
    TrainResult,
    concat_token_data,
    sequence_nll,
    tokenize_entity_spans,
    tokenize_texts,
)


@dataclass
class UnlearnResult:
    method: str
    layer: int
    train: TrainResult
    method_config: dict[str, Any]
    train_config: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    changed: dict[str, float] = field(default_factory=dict)
    """Relative Frobenius change of each trained parameter."""
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    """The trained parameters' values before unlearning (with the untouched rest of the model,
    this is the base model: no second full copy is ever kept)."""


def trainer_layer(hook: str) -> int:
    """The block whose output (``blocks.L.hook_resid_post``) is the tensor at ``hook``: the trainer
    reads the residual stream there. ``blocks.L.hook_resid_pre`` is block ``L - 1``'s output."""
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
    if match is None:
        raise HookunlearnError(
            f"the subspace's hook {hook!r} is not on the residual stream (blocks.L.hook_resid_pre or "
            "hook_resid_post); the unlearning objectives read the residual stream: select with residual SAEs."
        )
    block, kind = int(match[1]), match[2]
    if kind == "post":
        return block
    if block == 0:
        raise HookunlearnError(
            "the subspace's hook blocks.0.hook_resid_pre is the embedding output: no block below it can "
            "be trained to change it; use an SAE at a later layer."
        )
    return block - 1


def method_config(method: str, options: Mapping[str, Any] | None = None) -> Any:
    """The method's config dataclass with ``options`` applied (unknown keys are an error)."""
    config_cls = get_objective(method).Config
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise HookunlearnError(
            f"method {method!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(known)) or 'none'}."
        )
    hints = typing.get_type_hints(config_cls)
    for key, value in options.items():
        # "-o alpha=100" parses as an int; a float field takes it as a float
        if hints.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
            options[key] = float(value)
    return config_cls(**options)


def unlearn(
    model: HookedTransformer,
    method: str,
    *,
    subspace: Subspace | None = None,
    sae: SAE | None = None,
    layer: int | None = None,
    forget: Sequence[str] | None = None,
    retain: Sequence[str] | None = None,
    targets: Sequence[EntityPrompt] | None = None,
    known: Sequence[EntityPrompt] | None = None,
    options: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    max_tokens: int | None = None,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: Any = None,
) -> UnlearnResult:
    """Edit ``model`` with ``method``; see the module docstring for the data each method reads."""
    objective_cls = get_objective(method)
    config = method_config(method, options)
    train = train or TrainConfig()
    if objective_cls.needs_subspace and subspace is None:
        raise HookunlearnError(f"method {method!r} needs a subspace from `hookunlearn build`.")
    if subspace is not None:
        reads = trainer_layer(subspace.hook)
        if layer is None:
            layer = reads
        elif layer != reads and objective_cls.needs_subspace:
            raise HookunlearnError(
                f"layer {layer}: the trainer would read blocks.{layer}.hook_resid_post, but the subspace "
                f"(and its SAE) is at {subspace.hook}, which is blocks.{reads}.hook_resid_post; "
                f"leave the layer unset or pass {reads}."
            )
    if layer is None:
        raise HookunlearnError(f"method {method!r}: give the hooked layer (or a subspace that names it).")
    if method == "align":
        if not targets and not forget:
            raise HookunlearnError(
                "align needs target-entity prompts and/or a forget corpus about the targets."
            )
        if not known and not retain:
            raise HookunlearnError("align needs known-entity prompts and/or a retain corpus to preserve.")
        forget_parts, retain_parts = [], []
        if targets:
            forget_parts.append(
                tokenize_entity_spans(
                    model,
                    [p.prompt for p in targets],
                    [p.entity_start_char for p in targets],
                    [p.entity_end_char for p in targets],
                )
            )
        if forget:
            forget_parts.append(tokenize_texts(model, forget, max_tokens))
        if known:
            retain_parts.append(tokenize_texts(model, [p.prompt for p in known], max_tokens))
        if retain:
            retain_parts.append(tokenize_texts(model, retain, max_tokens))
        forget_data, retain_data = concat_token_data(forget_parts), concat_token_data(retain_parts)
    else:
        if not forget or not retain:
            raise HookunlearnError(f"method {method!r} needs a forget corpus and a retain corpus.")
        forget_data = tokenize_texts(model, forget, max_tokens)
        retain_data = tokenize_texts(model, retain, max_tokens)
    extra: dict[str, Any] = {}
    if getattr(objective_cls, "needs_reference_nll", False):
        extra["reference_nll"] = sequence_nll(model, forget_data)
    context = ObjectiveContext(
        d_model=model.cfg.d_model, layer=layer, seed=train.seed, subspace=subspace, sae=sae, extra=extra
    )
    objective = objective_cls(config, context)
    trainer = Trainer(model, objective, layer=layer, forget=forget_data, retain=retain_data, config=train)
    resumed_from = None
    if resume:
        if out_dir is None:
            raise HookunlearnError("resume needs the run's output directory.")
        resumed_from = trainer.load_checkpoint(out_dir / "checkpoints")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = trainer.run(out_dir=out_dir, progress=progress)
    result.resumed_from = resumed_from
    changed = {
        name: float(
            (p.detach() - trainer.initial[name]).norm() / trainer.initial[name].norm().clamp(min=1e-12)
        )
        for name, p in trainer.params.items()
    }
    return UnlearnResult(
        method=method,
        layer=layer,
        train=result,
        method_config=dataclasses.asdict(config),
        train_config=dataclasses.asdict(train),
        state=objective.state(),
        changed=changed,
        initial=trainer.initial,
    )


__all__ = ["TokenData", "UnlearnResult", "method_config", "trainer_layer", "unlearn"]
