"""Forgetting measured against the oracle: membership inference and TOFU's forget quality.

``mia``: can an attacker tell the forget set (members: texts the model was trained on and was
asked to forget) from texts no model ever saw (non-members)? Three published scores per text,
each turned into an AUC over members vs non-members:

- ``loss`` (Yeom et al. 2018): the mean next-token NLL; members have a lower loss.
- ``zlib`` (Carlini et al. 2021, "Extracting training data"): the summed NLL divided by the
  zlib-compressed length of the text in bytes, which discounts texts that are simply predictable.
- ``min_k++`` (Zhang et al. 2024, Min-K%++, arXiv 2404.02936): at every position,
  ``(log p(x_t) - mu_t) / sigma_t`` with ``mu_t`` and ``sigma_t`` the mean and standard deviation
  of ``log p(z)`` under the model's own next-token distribution; the text's score is the mean of
  its lowest ``k`` fraction of positions (k = 20%, the paper's default).

``auc[worst]`` is the strongest of them: ``max(AUC, 1 - AUC)`` over the three (an attacker may
flip a score). The oracle's AUC is the target (about 0.5 when the non-members are drawn like the
members); the base model's is the starting point. On the world the default members are the QA
lines of the forget people and the non-members those of the unknown people (same templates,
never trained on).

``forget_quality``: TOFU's forget quality (Maini et al. 2024, arXiv 2401.06121): the p-value of
a two-sample Kolmogorov-Smirnov test between the evaluated model's and the oracle's per-item
statistic on the forget set. TOFU's statistic is the truth ratio, which needs paraphrased and
perturbed answers our data does not have; ours is the **answer's mean token NLL given the
question** (the direct measure of whether the model still predicts the forgotten fact, computed
the same way on both models). A high p-value (TOFU reads > 0.05) means the distributions cannot
be told apart; the statistic's means are reported beside it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import load_records
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.evaluation.scoring import bos_prefix, encode_pair, score_pairs
from hookunlearn.evaluation.standard import check_limit, data_name, filter_where, subset
from hookunlearn.evaluation.suites import EvalContext, Suite, register
from hookunlearn.tokens import tokenize_texts


def _filtered(spec: str, where: str | None) -> list[dict[str, Any]]:
    records = filter_where(load_records(spec), where, spec)
    if not records:
        raise DataError(f"{spec}: no rows (after where={where!r}).")
    return records


def _render(records: list[dict[str, Any]], template: str, spec: str) -> list[str]:
    try:
        return [template.format(**record) for record in records]
    except KeyError as exc:
        raise DataError(
            f"{spec}: text template {template!r} names column {exc}; columns: {', '.join(records[0])}."
        ) from None


def auc(members: list[float], nonmembers: list[float]) -> float:
    """P(member score > non-member score) + P(tie) / 2 (the Mann-Whitney AUC)."""
    if not members or not nonmembers:
        raise HookunlearnError("an AUC needs at least one member and one non-member.")
    wins = 0.0
    for m in members:
        for x in nonmembers:
            wins += 1.0 if m > x else 0.5 if m == x else 0.0
    return wins / (len(members) * len(nonmembers))


@torch.no_grad()
def text_scores(
    model: LanguageModel, texts: list[str], *, k: float = 0.2, batch_size: int = 32
) -> dict[str, list[float]]:
    """Per text: ``loss`` (mean NLL), ``zlib`` (summed NLL / zlib bytes), ``min_k++``; for all three
    a higher value means "more likely a member" (losses are negated)."""
    data = tokenize_texts(model, texts)
    out: dict[str, list[float]] = {"loss": [], "zlib": [], "min_k++": []}
    for start in range(0, len(data), batch_size):
        tokens = data.tokens[start : start + batch_size].to(model.cfg.device)
        mask = data.mask[start : start + batch_size].to(model.cfg.device)[:, 1:]
        log_probs: Float[Tensor, "b p v"] = (
            model(tokens, return_type="logits")[:, :-1].float().log_softmax(-1)
        )
        picked = log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
        probs = log_probs.exp()
        mu = (probs * log_probs).sum(-1)
        sigma = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
        standardized = (picked - mu) / sigma
        for row in range(tokens.shape[0]):
            keep = mask[row]
            count = int(keep.sum())
            if count == 0:
                raise DataError("a membership-inference text has no token to score; drop empty texts.")
            nll = -picked[row][keep]
            text = texts[start + row]
            out["loss"].append(-float(nll.mean()))
            out["zlib"].append(-float(nll.sum()) / len(zlib.compress(text.encode("utf-8"))))
            lowest = standardized[row][keep].sort().values[: max(1, int(math.ceil(k * count)))]
            out["min_k++"].append(float(lowest.mean()))
    return out


@dataclass(frozen=True)
class MIAConfig:
    members: str = "world:entity_qa"
    """Texts of the forget set (trained on, then unlearned)."""
    members_where: str | None = "split=forget"
    nonmembers: str = "world:entity_qa"
    """Texts no model was trained on, drawn like the members (on the world: unknown people)."""
    nonmembers_where: str | None = "split=unknown"
    text: str = "{prompt} {answer}"
    """How a row becomes a text (``str.format`` over its columns; ``{text}`` for corpora)."""
    k: float = 0.2
    """Min-K%++'s fraction of lowest-scoring positions (the paper's default 20%)."""
    limit: int | None = None
    """At most this many texts per side (after the seeded shuffle)."""
    seed: int | None = 0
    name: str | None = None

    def __post_init__(self) -> None:
        check_limit("mia", self.limit)
        if not 0.0 < self.k <= 1.0:
            raise HookunlearnError(f"suite mia: k={self.k}; give a fraction in (0, 1].")


@register
class MIASuite(Suite):
    name: ClassVar[str] = "mia"
    summary: ClassVar[str] = (
        "Membership inference (LOSS, zlib, Min-K%++ AUCs) on the forget set vs unseen texts."
    )
    Config = MIAConfig

    def instance_name(self) -> str:
        return self.config.name or f"mia_{data_name(self.config.members)}"

    def compute(self, model: LanguageModel, context: EvalContext):
        config = self.config
        members = subset(_filtered(config.members, config.members_where), config.limit, config.seed)
        nonmembers = subset(_filtered(config.nonmembers, config.nonmembers_where), config.limit, config.seed)
        inside = text_scores(
            model, _render(members, config.text, config.members), k=config.k, batch_size=context.batch_size
        )
        outside = text_scores(
            model,
            _render(nonmembers, config.text, config.nonmembers),
            k=config.k,
            batch_size=context.batch_size,
        )
        metrics = {f"auc[{attack}]": auc(inside[attack], outside[attack]) for attack in inside}
        metrics["auc[worst]"] = max(max(value, 1 - value) for value in metrics.values())
        n = dict.fromkeys(metrics, len(members) + len(nonmembers))
        return metrics, n, {"members": len(members), "nonmembers": len(nonmembers)}


def ks_2samp(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its asymptotic two-sided p-value
    (Kolmogorov's distribution with Stephens' small-sample correction)."""
    if not a or not b:
        raise HookunlearnError("a KS test needs two non-empty samples.")
    xs, ys = sorted(a), sorted(b)
    n, m = len(xs), len(ys)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        value = min(xs[i], ys[j])
        while i < n and xs[i] <= value:
            i += 1
        while j < m and ys[j] <= value:
            j += 1
        d = max(d, abs(i / n - j / m))
    effective = math.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * d
    if lam < 1e-3:
        return d, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def answer_nll(model: LanguageModel, records: list[dict[str, Any]], batch_size: int) -> list[float]:
    """Mean token NLL of each row's ``answer`` after its ``prompt`` (lm-eval's pair encoding)."""
    prefix = bos_prefix(model, None)
    pairs = [encode_pair(model, r["prompt"], " " + str(r["answer"]), prefix) for r in records]
    return [-s.logprob / max(1, s.n_tokens) for s in score_pairs(model, pairs, batch_size=batch_size)]


@dataclass(frozen=True)
class ForgetQualityConfig:
    data: str = "world:entity_qa"
    """Rows with ``prompt`` and ``answer``: the forget set's questions."""
    where: str | None = "split=forget"
    limit: int | None = None
    seed: int | None = 0
    name: str | None = None

    def __post_init__(self) -> None:
        check_limit("forget_quality", self.limit)


@register
class ForgetQualitySuite(Suite):
    name: ClassVar[str] = "forget_quality"
    summary: ClassVar[str] = "TOFU forget quality: KS p-value of per-item answer NLL, model vs the oracle."
    Config = ForgetQualityConfig
    reusable_from_report: ClassVar[bool] = False  # it depends on the oracle as well

    def instance_name(self) -> str:
        return self.config.name or f"forget_quality_{data_name(self.config.data)}"

    def compute(self, model: LanguageModel, context: EvalContext):
        if context.oracle is None:
            raise HookunlearnError(
                "suite forget_quality compares with the oracle: pass --oracle MODEL (a model that never saw "
                "the forget set; on the world, world:oracle)."
            )
        records = subset(_filtered(self.config.data, self.config.where), self.config.limit, self.config.seed)
        for column in ("prompt", "answer"):
            if column not in records[0]:
                raise DataError(f"{self.config.data}: forget_quality needs a {column!r} column.")
        key = ("forget_quality", self.config, id(context.oracle))
        if key not in context.cache:
            context.cache[key] = answer_nll(context.oracle, records, context.batch_size)
        at_oracle = context.cache[key]
        here = answer_nll(model, records, context.batch_size)
        statistic, p_value = ks_2samp(here, at_oracle)
        metrics = {
            "forget_quality": p_value,
            "ks_statistic": statistic,
            "answer_nll": sum(here) / len(here),
            "answer_nll[oracle]": sum(at_oracle) / len(at_oracle),
        }
        return (
            metrics,
            dict.fromkeys(metrics, len(records)),
            {"statistic": "answer mean token NLL given the prompt"},
        )


__all__ = [
    "ForgetQualityConfig",
    "ForgetQualitySuite",
    "MIAConfig",
    "MIASuite",
    "auc",
    "ks_2samp",
    "text_scores",
]
