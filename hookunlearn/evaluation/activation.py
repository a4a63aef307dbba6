"""Activation-level forgetting (suite ``probe``): does the model still *represent* the targets as
known, whatever it says?

1. **Known-vs-unknown probe.** A logistic-regression probe is trained on the *base* model's
   residuals at the entity's last token (hook: the subspace's, or ``blocks.{layer}.hook_resid_post``),
   known vs unknown people of the ``select`` fold. It is then applied to the evaluated model:
   ``probe_target_judged_unknown`` is the share of target (forget) prompts it calls unknown;
   ``probe_heldout_accuracy`` its accuracy on the ``heldout`` fold's known/unknown people (on the
   base model: how good the probe is; on an unlearned one: whether others are still told apart).
   The probe is trained once per report and reused for every model (`EvalContext.cache`).
2. **Centroid distances** (with a subspace from `build` on an entity selection, and its SAE):
   distance of the targets' mean SAE code to the known and unknown centroids.
3. **Latent activity**: mean activation of the subspace's selected latents on the forget side
   (target prompts, or ``forget_data`` texts, every token) vs the retain side (known prompts, or
   ``retain_data`` texts).

"Before vs after" is the report's base and unlearned columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hookunlearn.activations import activations_at_span_end, cache_hooks, tokenize_batch
from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import EntityPrompt, parse_entity_prompts
from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.suites import EvalContext, Suite, register


@dataclass(frozen=True)
class ProbeConfig:
    entities: str = "world:entity_prompts"
    """Entity prompts with ``set`` known / unknown / target (and optional ``fold``)."""
    template: str | None = "bare"
    """Keep rows with this ``template`` (when the column exists)."""
    layer: int | None = None
    """Probe at ``blocks.{layer}.hook_resid_post`` (default: the subspace's hook)."""
    l2: float = 1e-2
    """L2 penalty of the logistic regression (features are standardised)."""
    steps: int = 300
    """Full-batch optimiser steps for the probe."""
    forget_data: str | None = None
    """Texts for the forget side of latent activity (default: the target prompts)."""
    retain_data: str | None = None
    """Texts for the retain side of latent activity (default: the known prompts)."""
    max_tokens: int | None = 128


@dataclass
class LinearProbe:
    mean: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]
    weight: Float[Tensor, " d"]
    bias: float

    def known_probability(self, x: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        return torch.sigmoid(((x - self.mean) / self.scale) @ self.weight + self.bias)


def fit_probe(
    x: Float[Tensor, "n d"], known: Bool[Tensor, " n"], *, l2: float = 1e-2, steps: int = 300
) -> LinearProbe:
    """Logistic regression (label 1 = known) on standardised features, full-batch L-BFGS."""
    if bool(known.all()) or not bool(known.any()):
        raise HookunlearnError("the probe needs both known and unknown entities to train on.")
    x = x.double()
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / scale
    y = known.double()
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y)
        loss = loss + l2 * weight.pow(2).sum() / 2
        loss.backward()
        return loss

    optimiser.step(closure)
    return LinearProbe(mean.float(), scale.float(), weight.detach().float(), float(bias.detach()))


def _hook(config: ProbeConfig, context: EvalContext) -> str:
    if config.layer is not None:
        return f"blocks.{config.layer}.hook_resid_post"
    if context.subspace is not None:
        return str(context.subspace.hook)
    raise HookunlearnError(
        "probe: give the layer (probe:layer=N) or a subspace (`hookunlearn eval --subspace DIR`)."
    )


def _acts(model: LanguageModel, prompts: list[EntityPrompt], hook: str, batch_size: int) -> Tensor:
    return activations_at_span_end(
        model,
        [p.prompt for p in prompts],
        [p.entity_end_char for p in prompts],
        [hook],
        batch_size=batch_size,
    )[hook]


@torch.no_grad()
def _mean_latent_activity(
    model: LanguageModel,
    texts: list[str],
    hook: str,
    sae: Any,
    latents: Tensor,
    config: ProbeConfig,
    batch: int,
) -> Float[Tensor, " n_latents"]:
    """Each latent's mean activation over every real token of ``texts``."""
    total, count = torch.zeros(len(latents), dtype=torch.float64), 0
    for start in range(0, len(texts), batch):
        tokens, mask = tokenize_batch(model, texts[start : start + batch], max_tokens=config.max_tokens)
        acts = cache_hooks(model, tokens, [hook])[hook]
        codes = sae.encode(acts[mask.to(acts.device)].to(sae.dtype)).float()[:, latents.to(acts.device)]
        total += codes.double().sum(0).cpu()
        count += codes.shape[0]
    return (total / max(count, 1)).float()


@register
class ProbeSuite(Suite):
    name: ClassVar[str] = "probe"
    summary: ClassVar[str] = (
        "Activation-level forgetting: base-trained known/unknown probe on the targets, "
        "centroid distances, selected-latent activity."
    )
    Config = ProbeConfig
    reusable_from_report = False  # the result depends on the base model and the subspace too

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        hook = _hook(config, context)
        prompts = parse_entity_prompts(
            load_records(config.entities), config.entities, template=config.template
        )
        targets = [p for p in prompts if p.set == "target"]
        if not targets:
            raise HookunlearnError(f"{config.entities}: no rows with set 'target' to probe.")
        train = [p for p in prompts if p.set in ("known", "unknown") and p.fold == "select"]
        heldout = [p for p in prompts if p.set in ("known", "unknown") and p.fold == "heldout"]
        # trained on the base model when the report has one loaded; otherwise on the model itself
        # (right when it is the base model; said in details either way)
        base = context.baseline if context.baseline is not None else model
        trained_on = (
            "baseline model" if context.baseline is not None else "evaluated model (no baseline model)"
        )
        key = f"probe:{id(base)}:{config.entities}:{config.template}:{hook}:{config.l2}:{config.steps}"
        if key not in context.cache:
            context.say(f"probe: training on the {trained_on}'s activations")
            x = _acts(base, train, hook, context.batch_size)
            labels = torch.tensor([p.set == "known" for p in train])
            context.cache[key] = fit_probe(x, labels, l2=config.l2, steps=config.steps)
        probe: LinearProbe = context.cache[key]
        metrics: dict[str, float] = {}
        n: dict[str, int] = {}
        target_acts = _acts(model, targets, hook, context.batch_size)
        judged_known = probe.known_probability(target_acts) > 0.5
        metrics["probe_target_judged_unknown"] = float((~judged_known).float().mean())
        n["probe_target_judged_unknown"] = len(targets)
        if heldout:
            predicted = probe.known_probability(_acts(model, heldout, hook, context.batch_size)) > 0.5
            truth = torch.tensor([p.set == "known" for p in heldout])
            metrics["probe_heldout_accuracy"] = float((predicted == truth).float().mean())
            n["probe_heldout_accuracy"] = len(heldout)
        details: dict[str, Any] = {"hook": hook, "probe_train_n": len(train), "probe_trained_on": trained_on}
        subspace, sae = context.subspace, context.sae
        if subspace is None or sae is None:
            details["skipped"] = "centroid distances and latent activity need --subspace (and its SAE)"
            return metrics, n, details
        if subspace.hook != hook:
            details["skipped"] = f"the subspace's hook {subspace.hook} is not the probe's {hook}"
            return metrics, n, details
        with torch.no_grad():
            codes = sae.encode(target_acts.to(sae.dtype)).float().cpu()
        mean_code = codes.mean(0)
        for side in ("known", "unknown"):
            centroid = subspace.centroids.get(f"code_{side}_all")
            if centroid is not None:
                metrics[f"code_distance[{side}]"] = float((mean_code - centroid.float()).norm())
                n[f"code_distance[{side}]"] = len(targets)
        latents = torch.tensor(subspace.relevant.latents, dtype=torch.long)
        if len(latents):
            forget = load_texts(config.forget_data) if config.forget_data else None
            retain = load_texts(config.retain_data) if config.retain_data else None
            known = [p for p in prompts if p.set == "known"]
            per_latent: dict[str, Tensor] = {}
            if forget is None:
                per_latent["forget"] = codes[:, latents].mean(0)
            else:
                per_latent["forget"] = _mean_latent_activity(
                    model, forget, hook, sae, latents, config, context.batch_size
                )
            if retain is None:
                with torch.no_grad():
                    known_codes = sae.encode(_acts(model, known, hook, context.batch_size).to(sae.dtype))
                per_latent["retain"] = known_codes.float().cpu()[:, latents].mean(0)
            else:
                per_latent["retain"] = _mean_latent_activity(
                    model, retain, hook, sae, latents, config, context.batch_size
                )
            for side, values in per_latent.items():
                # the mean over latents of each latent's mean = the mean over (token, latent)
                metrics[f"latent_activity[{side}]"] = float(values.mean())
            # each latent's own mean activation (the page's before/after table reads it)
            details["latent_activity_per_latent"] = {
                side: {str(int(latent)): float(value) for latent, value in zip(latents, values, strict=True)}
                for side, values in per_latent.items()
            }
            n["latent_activity[forget]"] = len(forget) if forget is not None else len(targets)
            n["latent_activity[retain]"] = len(retain) if retain is not None else len(known)
            details["latents"] = [int(i) for i in latents]
        return metrics, n, details


__all__ = ["LinearProbe", "ProbeConfig", "ProbeSuite", "fit_probe"]
