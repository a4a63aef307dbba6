"""`select`: which layer, and which SAE latents, carry the knowledge to forget.

Two objectives:

- ``topic`` (SSPU, RMU, clamping): stream a forget corpus and a retain corpus through the model
  once each, with every candidate layer's SAE, and accumulate per latent the mean activation and
  the firing frequency on each (plus the residual mean and second moment, which `build` uses for
  energy shares). Feature score: ``mean_diff`` (default), ``freq_diff`` or ``ratio``.
- ``entity`` (known-to-unknown alignment): read the SAE code at the last token of each entity
  name in prompts about known, unknown and target entities; score = Ferrando et al.'s
  P(fires | known) - P(fires | unknown), optionally dropping latents that fire on more than
  ``max_generic_rate`` of generic-text tokens.

Layer choice (documented criterion): ``layer_score`` = mean, over the layer's ``top_n`` best
eligible latents, of (forget firing rate - retain firing rate) for ``topic`` (top_n 10), or of the
known-vs-unknown score for ``entity`` (top_n 1: the best latent). Both are differences of
probabilities, so they compare across layers whatever the SAEs' activation scales. The highest
wins, unless a layer is forced.

Everything is accumulated online in float64 (memory grows with ``d_sae`` and ``d_model``, not with
the corpus); BOS and padding never enter the statistics; all layers come from one forward pass
per batch that stops after the deepest candidate layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from sae_lens import SAE
from torch import Tensor

from hookunlearn.activations import cache_hooks, last_token_of_span, tokenize_batch
from hookunlearn.backends.types import LanguageModel
from hookunlearn.entities import EntityPrompt
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.interpret import TopContexts

Objective = Literal["topic", "entity"]
OBJECTIVES: tuple[str, ...] = ("topic", "entity")
TOPIC_SCORES: tuple[str, ...] = ("mean_diff", "freq_diff", "ratio")
ENTITY_SCORES: tuple[str, ...] = ("ferrando",)
LATENTS_NAME = "latents.json"
CARD_LATENTS = 50
"""Latents per layer (the best ranked, as in ``features.json``) whose contexts and logit effects
are written."""
RATIO_EPS = 1e-3
"""Added to both firing rates in the ``ratio`` score, so latents silent on retain stay finite."""

STATS_CHUNK = 4096
"""Rows per chunk in `RoleStats.add` (bounds its float64 temporaries to ``chunk * d_model``)."""

Progress = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# Streaming statistics
# ---------------------------------------------------------------------------------------------


@dataclass
class RoleStats:
    """Running sums over the tokens (or entity positions) of one dataset role at one layer."""

    n: int
    code_sum: Float[Tensor, " d_sae"]
    fire_count: Float[Tensor, " d_sae"]
    resid_sum: Float[Tensor, " d_model"]
    resid_outer: Float[Tensor, "d_model d_model"] | None
    """Sum of x x^T (None when second moments were not requested)."""

    @classmethod
    def empty(
        cls, d_model: int, d_sae: int, second_moments: bool, device: str | torch.device = "cpu"
    ) -> RoleStats:
        f64 = torch.float64
        return cls(
            0,
            torch.zeros(d_sae, dtype=f64, device=device),
            torch.zeros(d_sae, dtype=f64, device=device),
            torch.zeros(d_model, dtype=f64, device=device),
            torch.zeros(d_model, d_model, dtype=f64, device=device) if second_moments else None,
        )

    @torch.no_grad()
    def add(
        self,
        acts: Float[Tensor, "n d_model"],
        codes: Float[Tensor, "n d_sae"],
        *,
        chunk: int = STATS_CHUNK,
    ) -> None:
        """Add the rows to the sums, on the sums' device (the model's, see `corpus_stats`), in
        chunks of ``chunk`` rows: float64 accumulation without a float64 copy of the codes."""
        device = self.code_sum.device
        self.n += acts.shape[0]
        for start in range(0, acts.shape[0], chunk):
            c = codes[start : start + chunk].detach().to(device)
            x = acts[start : start + chunk].detach().to(device, torch.float64)
            self.code_sum += c.sum(dim=0, dtype=torch.float64)
            self.fire_count += (c > 0).sum(dim=0).to(torch.float64)
            self.resid_sum += x.sum(dim=0)
            if self.resid_outer is not None:
                self.resid_outer.addmm_(x.T, x)

    def to(self, device: str | torch.device) -> RoleStats:
        """The same sums on ``device`` (a copy when it differs)."""
        return RoleStats(
            self.n,
            self.code_sum.to(device),
            self.fire_count.to(device),
            self.resid_sum.to(device),
            None if self.resid_outer is None else self.resid_outer.to(device),
        )

    def all_reduce(self) -> None:
        """Sum the statistics over the ranks of a ``torchrun`` job (`hookunlearn.distributed`)."""
        from hookunlearn import distributed

        if not distributed.is_distributed():
            return
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.code_sum.device)
        sums = [n, self.code_sum, self.fire_count, self.resid_sum]
        distributed.all_reduce_sum_(sums + ([self.resid_outer] if self.resid_outer is not None else []))
        self.n = int(n.item())

    def _require(self) -> None:
        if self.n == 0:
            raise DataError(
                "no tokens were seen for this dataset role (is the corpus empty after tokenisation?)."
            )

    @property
    def mean_code(self) -> Float[Tensor, " d_sae"]:
        self._require()
        return self.code_sum / self.n

    @property
    def freq(self) -> Float[Tensor, " d_sae"]:
        self._require()
        return self.fire_count / self.n

    @property
    def mean_resid(self) -> Float[Tensor, " d_model"]:
        self._require()
        return self.resid_sum / self.n

    @property
    def second_moment(self) -> Float[Tensor, "d_model d_model"] | None:
        """E[x x^T] over the role's tokens."""
        self._require()
        return None if self.resid_outer is None else self.resid_outer / self.n

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        out = {
            f"{prefix}.n": torch.tensor(self.n, dtype=torch.int64),
            f"{prefix}.code_sum": self.code_sum,
            f"{prefix}.fire_count": self.fire_count,
            f"{prefix}.resid_sum": self.resid_sum,
        }
        if self.resid_outer is not None:
            out[f"{prefix}.resid_outer"] = self.resid_outer
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], prefix: str) -> RoleStats:
        return cls(
            int(tensors[f"{prefix}.n"]),
            tensors[f"{prefix}.code_sum"],
            tensors[f"{prefix}.fire_count"],
            tensors[f"{prefix}.resid_sum"],
            tensors.get(f"{prefix}.resid_outer"),
        )


def _batches(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _hooks(saes: Mapping[int, SAE]) -> dict[int, str]:
    return {layer: sae.cfg.metadata.hook_name for layer, sae in saes.items()}


@torch.no_grad()
def corpus_stats(
    model: LanguageModel,
    saes: Mapping[int, SAE],
    texts: Iterable[str],
    *,
    batch_size: int = 32,
    max_tokens: int | None = None,
    second_moments: bool = True,
    progress: Progress | None = None,
    role: str = "corpus",
    contexts: Mapping[int, TopContexts] | None = None,
) -> dict[int, RoleStats]:
    """Per-layer statistics of a corpus: one pass, every layer, BOS/padding excluded; with
    ``contexts``, each layer's top-activating contexts are collected in the same pass."""
    from hookunlearn import distributed

    hooks = _hooks(saes)
    stats = {
        layer: RoleStats.empty(model.cfg.d_model, sae.cfg.d_sae, second_moments, model.cfg.device)
        for layer, sae in saes.items()
    }
    if contexts is not None:
        for collector in contexts.values():
            collector.role_id(role)  # every rank numbers the roles alike, even one that gets no batch
    docs = tokens_seen = 0
    cut: list[int] = []  # texts longer than the token limit, per batch (this rank's batches)
    ranks, me = distributed.world_size(), distributed.rank()
    for index, batch in enumerate(_batches(texts, batch_size)):
        if index % ranks != me:  # under torchrun each rank streams every world_size-th batch
            docs += len(batch)
            continue
        tokens, mask = tokenize_batch(model, batch, max_tokens=max_tokens, truncated=cut)
        cache = cache_hooks(model, tokens, list(hooks.values()))
        for layer, sae in saes.items():
            layer_acts = cache[hooks[layer]]  # on the hooked block's device (several with --n-devices)
            acts = layer_acts[mask.to(layer_acts.device)]
            codes = sae.encode(acts.to(dtype=sae.dtype))
            stats[layer].add(acts, codes)
            if contexts is not None and layer in contexts:
                collector = contexts[layer]
                doc_ids = torch.arange(docs, docs + len(batch))
                role_ids = torch.full((len(batch),), collector.role_id(role))
                collector.add(codes, tokens, mask, mask, doc_ids, role_ids)
        docs += len(batch)
        tokens_seen += int(mask.sum())
        if progress is not None:
            progress({"role": role, "docs": docs, "tokens": tokens_seen, "truncated": sum(cut)})
    if distributed.is_distributed():  # the whole corpus's counts, as one process reports them
        counts = torch.tensor([float(tokens_seen), float(sum(cut))], dtype=torch.float64)
        distributed.all_reduce_sum_([counts])
        if progress is not None:
            progress({"role": role, "docs": docs, "tokens": int(counts[0]), "truncated": int(counts[1])})
    if docs == 0:
        raise DataError(f"the {role} corpus is empty.")
    return _finish(stats, contexts)


def _finish(stats: dict[int, RoleStats], contexts: Mapping[int, TopContexts] | None) -> dict[int, RoleStats]:
    """Sum over the ranks (under torchrun) and move the statistics to the CPU."""
    for layer_stats in stats.values():
        layer_stats.all_reduce()
    if contexts is not None:
        for collector in contexts.values():
            collector.merge_ranks()
    return {layer: layer_stats.to("cpu") for layer, layer_stats in stats.items()}


@torch.no_grad()
def entity_stats(
    model: LanguageModel,
    saes: Mapping[int, SAE],
    prompts: Sequence[EntityPrompt],
    *,
    batch_size: int = 64,
    second_moments: bool = True,
    progress: Progress | None = None,
    contexts: Mapping[int, TopContexts] | None = None,
) -> dict[int, dict[str, RoleStats]]:
    """Per layer, statistics of the code at the last entity token, by role (and, with
    ``contexts``, each layer's top-activating prompts, windows ending at the entity token).

    Roles: ``known``/``unknown`` (select fold), ``known:heldout``/``unknown:heldout``, and
    ``target`` (all folds)."""
    from hookunlearn import distributed

    hooks = _hooks(saes)
    stats: dict[int, dict[str, RoleStats]] = {layer: {} for layer in saes}
    done = 0
    ranks, me = distributed.world_size(), distributed.rank()
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[start : start + batch_size]
        if index % ranks != me:  # under torchrun each rank reads every world_size-th batch
            done += len(chunk)
            continue
        tokens, visible = tokenize_batch(model, [p.prompt for p in chunk])
        positions = torch.tensor([last_token_of_span(model, p.prompt, p.entity_end_char) for p in chunk])
        cache = cache_hooks(model, tokens, list(hooks.values()))
        roles = [p.set if p.set == "target" or p.fold == "select" else f"{p.set}:heldout" for p in chunk]
        rows = torch.arange(len(chunk))
        coded = torch.zeros_like(visible)
        coded[rows, positions] = True
        for layer, sae in saes.items():
            layer_acts = cache[hooks[layer]]  # on the hooked block's device (several with --n-devices)
            acts = layer_acts[rows.to(layer_acts.device), positions.to(layer_acts.device)]
            codes = sae.encode(acts.to(dtype=sae.dtype))
            for role in sorted(set(roles)):
                index = torch.tensor([i for i, r in enumerate(roles) if r == role])
                if role not in stats[layer]:
                    stats[layer][role] = RoleStats.empty(
                        model.cfg.d_model, sae.cfg.d_sae, second_moments, model.cfg.device
                    )
                stats[layer][role].add(acts[index.to(acts.device)], codes[index.to(codes.device)])
            if contexts is not None and layer in contexts:
                collector = contexts[layer]
                role_ids = torch.tensor([collector.role_id(role) for role in roles])
                doc_ids = torch.arange(start, start + len(chunk))
                collector.add(codes, tokens, coded, visible, doc_ids, role_ids)
        done += len(chunk)
        if progress is not None:
            progress({"role": "entities", "docs": done, "total": len(prompts)})
    if distributed.is_distributed():  # a role may be missing on some rank: every rank adds all
        names = sorted(
            {role for part in distributed.all_gather_objects(sorted(stats[min(saes)])) for role in part}
        )
        for layer, sae in saes.items():
            for role in names:
                if role not in stats[layer]:
                    stats[layer][role] = RoleStats.empty(
                        model.cfg.d_model, sae.cfg.d_sae, second_moments, model.cfg.device
                    )
    by_role = {layer: {role: roles[role] for role in sorted(roles)} for layer, roles in stats.items()}
    for layer, roles in by_role.items():
        for role_stats in roles.values():
            role_stats.all_reduce()
        by_role[layer] = {role: role_stats.to("cpu") for role, role_stats in roles.items()}
    if contexts is not None:
        for collector in contexts.values():
            collector.merge_ranks()
    return {layer: {role: by_role[layer][role] for role in stats[layer]} for layer in stats}


# ---------------------------------------------------------------------------------------------
# Scores and the Selection
# ---------------------------------------------------------------------------------------------


def feature_scores(roles: Mapping[str, RoleStats], score: str) -> Float[Tensor, " d_sae"]:
    """Per-latent scores from the role statistics (see the module docstring)."""
    if score == "mean_diff":
        return roles["forget"].mean_code - roles["retain"].mean_code
    if score == "freq_diff":
        return roles["forget"].freq - roles["retain"].freq
    if score == "ratio":
        return (roles["forget"].freq + RATIO_EPS) / (roles["retain"].freq + RATIO_EPS)
    if score == "ferrando":
        return roles["known"].freq - roles["unknown"].freq
    raise HookunlearnError(
        f"score {score!r} is unknown; choose one of {', '.join(TOPIC_SCORES + ENTITY_SCORES)}."
    )


def _separation(roles: Mapping[str, RoleStats], objective: str) -> Float[Tensor, " d_sae"]:
    if objective == "topic":
        return roles["forget"].freq - roles["retain"].freq
    return roles["known"].freq - roles["unknown"].freq


@dataclass
class LayerSelection:
    layer: int
    hook: str
    roles: dict[str, RoleStats]
    scores: Float[Tensor, " d_sae"]
    eligible: Bool[Tensor, " d_sae"]
    layer_score: float

    def ranked(self) -> list[int]:
        """Eligible latents, best score first (ties broken by index)."""
        masked = torch.where(self.eligible, self.scores, torch.full_like(self.scores, -math.inf))
        order = torch.argsort(masked, descending=True, stable=True)
        return [int(i) for i in order if bool(self.eligible[i])]


@dataclass
class Selection:
    """The result of `select`: statistics and scores per candidate layer, and the chosen layer."""

    objective: str
    score: str
    chosen_layer: int
    layers: dict[int, LayerSelection]
    model: dict[str, Any] = field(default_factory=dict)
    saes: dict[int, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    latents: dict[str, Any] | None = None
    """What the best latents mean (``latents.json``, see `hookunlearn.interpret`): per layer, the
    top ``CARD_LATENTS`` latents' top-activating contexts, direct logit effects and Neuronpedia
    links. None when not collected (``top_contexts=0``) or for a selection written before."""

    @property
    def chosen(self) -> LayerSelection:
        return self.layers[self.chosen_layer]

    @property
    def hook(self) -> str:
        return self.chosen.hook

    def top_latents(self, k: int, layer: int | None = None) -> list[int]:
        layer = self.chosen_layer if layer is None else layer
        ranked = self.layers[layer].ranked()
        if k > len(ranked):
            raise HookunlearnError(
                f"k={k} is more than the {len(ranked)} eligible latents at layer {layer}; use a smaller k."
            )
        return ranked[:k]

    def feature_table(self, n: int = 20, layer: int | None = None) -> list[dict[str, Any]]:
        """The top ``n`` latents with their score and per-role firing rates and mean activations."""
        chosen = self.layers[self.chosen_layer if layer is None else layer]
        rows = []
        for rank, latent in enumerate(chosen.ranked()[:n], start=1):
            row: dict[str, Any] = {"rank": rank, "latent": latent, "score": float(chosen.scores[latent])}
            for role, stats in chosen.roles.items():
                row[f"freq[{role}]"] = float(stats.freq[latent])
                row[f"mean[{role}]"] = float(stats.mean_code[latent])
            rows.append(row)
        return rows

    def heldout_scores(self, layer: int | None = None) -> dict[str, float | int] | None:
        """``entity``: the best latents' known-vs-unknown scores on the held-out entities."""
        chosen = self.layers[self.chosen_layer if layer is None else layer]
        if "known:heldout" not in chosen.roles or "unknown:heldout" not in chosen.roles:
            return None
        heldout = chosen.roles["known:heldout"].freq - chosen.roles["unknown:heldout"].freq
        best = chosen.ranked()[0]
        return {
            "latent": best,
            "select_score": float(chosen.scores[best]),
            "heldout_score": float(heldout[best]),
        }

    # --- persistence ---------------------------------------------------------------------

    def save(self, out_dir: str | Path, *, force: bool = False, command: str = "hookunlearn select") -> Path:
        """Write a run directory: manifest, statistics and scores (safetensors), feature table,
        score-distribution plot, the latents' contexts and logit effects (``latents.json``) and
        the HTML report (``report.html``)."""
        from hookunlearn.artifacts import Manifest, run_directory, save_tensors, write_json
        from hookunlearn.html_report import write_html_report

        tensors: dict[str, Tensor] = {}
        for layer, chosen in self.layers.items():
            tensors[f"layer{layer}.scores"] = chosen.scores
            tensors[f"layer{layer}.eligible"] = chosen.eligible
            for role, stats in chosen.roles.items():
                tensors.update(stats.tensors(f"layer{layer}.{role}"))
        manifest = Manifest(
            kind="selection",
            command=command,
            options=self.options,
            model=self.model,
            saes=[{**info, "layer": layer} for layer, info in sorted(self.saes.items())],
            hook=self.hook,
            data=self.data,
            seed=None,
            extra={
                "objective": self.objective,
                "score": self.score,
                "chosen_layer": self.chosen_layer,
                "layers": {
                    str(layer): {
                        "hook": chosen.hook,
                        "layer_score": chosen.layer_score,
                        "roles": {role: stats.n for role, stats in chosen.roles.items()},
                    }
                    for layer, chosen in sorted(self.layers.items())
                },
                "heldout": self.heldout_scores(),
            },
        )
        with run_directory(out_dir, force=force) as tmp:
            save_tensors(tmp / "tensors.safetensors", tensors)
            from hookunlearn import faults

            faults.reached("select_save")  # a crash here must leave no selection behind
            write_json(tmp / "features.json", self.feature_table(n=50))
            plot_scores(self, tmp / "scores.png")
            if self.latents is not None:
                # compact: thousands of short token lists
                (tmp / LATENTS_NAME).write_text(
                    json.dumps(self.latents, separators=(",", ":")), encoding="utf-8"
                )
            (tmp / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
            write_html_report(tmp, fallback=True)
        return Path(out_dir)

    @classmethod
    def load(cls, run_dir: str | Path) -> Selection:
        from hookunlearn.artifacts import load_tensors, read_manifest

        manifest = read_manifest(run_dir, kind="selection")
        tensors = load_tensors(run_dir)
        extra = manifest.extra
        layers = {}
        for layer_text, info in extra["layers"].items():
            layer = int(layer_text)
            roles = {role: RoleStats.from_tensors(tensors, f"layer{layer}.{role}") for role in info["roles"]}
            layers[layer] = LayerSelection(
                layer,
                info["hook"],
                roles,
                tensors[f"layer{layer}.scores"],
                tensors[f"layer{layer}.eligible"],
                float(info["layer_score"]),
            )
        saes = {int(entry["layer"]): dict(entry) for entry in manifest.saes}
        latents_path = Path(run_dir) / LATENTS_NAME
        latents = json.loads(latents_path.read_text(encoding="utf-8")) if latents_path.is_file() else None
        return cls(
            extra["objective"],
            extra["score"],
            int(extra["chosen_layer"]),
            layers,
            manifest.model or {},
            saes,
            manifest.data,
            manifest.options,
            latents,
        )


def plot_scores(selection: Selection, path: Path) -> None:
    """Histogram of the feature scores per layer (log count), the chosen layer marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(selection.layers)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 2.8), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        chosen = selection.layers[layer]
        values = chosen.scores[chosen.eligible].float().numpy()
        ax.hist(values, bins=50, log=True, color="tab:red" if layer == selection.chosen_layer else "tab:gray")
        mark = " (chosen)" if layer == selection.chosen_layer else ""
        ax.set_title(f"layer {layer}{mark}\nlayer score {chosen.layer_score:.3f}", fontsize=9)
        ax.set_xlabel(selection.score, fontsize=8)
    axes[0][0].set_ylabel("latents")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------


def select(
    model: LanguageModel,
    saes: Mapping[int, SAE] | Sequence[SAE],
    *,
    objective: Objective = "topic",
    forget: Iterable[str] | None = None,
    retain: Iterable[str] | None = None,
    entities: Sequence[EntityPrompt] | None = None,
    generic: Iterable[str] | None = None,
    score: str | None = None,
    layer: int | None = None,
    top_n: int | None = None,
    max_generic_rate: float = 0.02,
    batch_size: int = 32,
    max_tokens: int | None = None,
    second_moments: bool = True,
    progress: Progress | None = None,
    data: Mapping[str, dict[str, Any]] | None = None,
    top_contexts: int = 8,
    context_window: tuple[int, int] = (12, 4),
    logit_k: int = 10,
) -> Selection:
    """Score every latent of every candidate layer's SAE and choose a layer (module docstring).

    ``saes``: one SAE per candidate layer (a mapping layer -> SAE, or a sequence whose hooks name
    their layers). ``topic`` needs ``forget`` and ``retain`` texts; ``entity`` needs ``entities``
    (see `hookunlearn.entities.parse_entity_prompts`) and optionally ``generic`` texts for the firing filter.

    ``top_contexts``: per latent, how many top-activating contexts to keep (0: none, and no
    ``latents.json``), each with ``context_window`` = (tokens before, tokens after); ``logit_k``:
    how many most promoted and suppressed tokens to list per latent.
    """
    from hookunlearn.interpret import LATENTS_VERSION, LOGIT_METHOD, latent_cards
    from hookunlearn.models import model_info
    from hookunlearn.saes import check_sae_fits, hook_layer, sae_info

    if objective not in OBJECTIVES:
        raise HookunlearnError(f"objective {objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}.")
    by_layer = dict(saes) if isinstance(saes, Mapping) else {}
    if not isinstance(saes, Mapping):
        for sae in saes:
            sae_layer = hook_layer(sae.cfg.metadata.hook_name)
            if sae_layer is None:
                raise HookunlearnError(
                    f"SAE hook {sae.cfg.metadata.hook_name!r} names no layer (blocks.L....)."
                )
            if sae_layer in by_layer:
                raise HookunlearnError(
                    f"two SAEs are given for layer {sae_layer}; give one per candidate layer."
                )
            by_layer[sae_layer] = sae
    if not by_layer:
        raise HookunlearnError("no SAEs given: pass one SAE per candidate layer.")
    for sae in by_layer.values():
        check_sae_fits(sae, model)
    if layer is not None and layer not in by_layer:
        raise HookunlearnError(
            f"layer {layer} was forced but no SAE is given for it (SAEs at layers {sorted(by_layer)})."
        )
    score = score or ("mean_diff" if objective == "topic" else "ferrando")
    allowed = TOPIC_SCORES if objective == "topic" else ENTITY_SCORES
    if score not in allowed:
        raise HookunlearnError(
            f"score {score!r} does not apply to objective {objective!r}; choose {', '.join(allowed)}."
        )
    top_n = top_n or (10 if objective == "topic" else 1)
    if top_contexts < 0 or min(context_window) < 0 or logit_k < 1:
        raise HookunlearnError(
            f"top_contexts={top_contexts}, context_window={context_window}, logit_k={logit_k}: "
            "use top_contexts >= 0, window sides >= 0 and logit_k >= 1."
        )
    contexts = (
        {
            lay: TopContexts.empty(sae.cfg.d_sae, top_contexts, *context_window)
            for lay, sae in by_layer.items()
        }
        if top_contexts > 0
        else None
    )

    if objective == "topic":
        if forget is None or retain is None:
            raise HookunlearnError("objective 'topic' needs a forget corpus and a retain corpus.")
        forget_stats = corpus_stats(
            model,
            by_layer,
            forget,
            batch_size=batch_size,
            max_tokens=max_tokens,
            second_moments=second_moments,
            progress=progress,
            role="forget",
            contexts=contexts,
        )
        retain_stats = corpus_stats(
            model,
            by_layer,
            retain,
            batch_size=batch_size,
            max_tokens=max_tokens,
            second_moments=second_moments,
            progress=progress,
            role="retain",
            contexts=contexts,
        )
        roles_by_layer = {lay: {"forget": forget_stats[lay], "retain": retain_stats[lay]} for lay in by_layer}
    else:
        if not entities:
            raise HookunlearnError(
                "objective 'entity' needs entity prompts (known, unknown and target sets)."
            )
        roles_by_layer = entity_stats(
            model,
            by_layer,
            entities,
            batch_size=batch_size,
            second_moments=second_moments,
            progress=progress,
            contexts=contexts,
        )
        if generic is not None:
            generic_stats = corpus_stats(
                model,
                by_layer,
                generic,
                batch_size=batch_size,
                max_tokens=max_tokens,
                second_moments=False,
                progress=progress,
                role="generic",
                contexts=contexts,
            )
            for lay in by_layer:
                roles_by_layer[lay]["generic"] = generic_stats[lay]

    layers: dict[int, LayerSelection] = {}
    for lay, roles in sorted(roles_by_layer.items()):
        scores = feature_scores(roles, score).to(torch.float32)
        eligible = torch.ones_like(scores, dtype=torch.bool)
        if "generic" in roles:
            eligible &= roles["generic"].freq < max_generic_rate
        partial = LayerSelection(lay, by_layer[lay].cfg.metadata.hook_name, roles, scores, eligible, 0.0)
        best = partial.ranked()[:top_n]
        separation = _separation(roles, objective)
        partial.layer_score = float(separation[best].mean()) if best else -math.inf
        layers[lay] = partial
    chosen_layer = (
        layer if layer is not None else max(layers, key=lambda lay: (layers[lay].layer_score, -lay))
    )
    sae_infos = {lay: sae_info(sae).to_dict() for lay, sae in by_layer.items()}
    latents = None
    if contexts is not None:
        latents = {
            "version": LATENTS_VERSION,
            "top_contexts": top_contexts,
            "window": {"left": context_window[0], "right": context_window[1]},
            "logit_effects": {"method": LOGIT_METHOD, "k": logit_k},
            "layers": {
                str(lay): latent_cards(
                    model,
                    by_layer[lay],
                    sae_infos[lay],
                    ranked,
                    {i: float(chosen.scores[i]) for i in ranked},
                    contexts[lay],
                    logit_k=logit_k,
                )
                for lay, chosen in sorted(layers.items())
                for ranked in [chosen.ranked()[:CARD_LATENTS]]
            },
        }
    return Selection(
        objective=objective,
        score=score,
        chosen_layer=chosen_layer,
        layers=layers,
        model=model_info(model).to_dict(),
        saes=sae_infos,
        data=dict(data or {}),
        options={
            "objective": objective,
            "score": score,
            "layer": layer,
            "top_n": top_n,
            "max_generic_rate": max_generic_rate if generic is not None else None,
            "batch_size": batch_size,
            "max_tokens": max_tokens,
            "second_moments": second_moments,
            "top_contexts": top_contexts,
            "context_window": list(context_window),
            "logit_k": logit_k,
        },
        latents=latents,
    )
