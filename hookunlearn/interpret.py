"""What a selected latent means: its top-activating contexts, its direct logit effects and its
Neuronpedia page.

- **Top-activating contexts** (`TopContexts`): while `select` streams its data, every latent of a
  candidate layer keeps its ``k`` highest activations with where they happened (role, document,
  position), the token window around the position (``left`` tokens before, ``right`` after) and
  the latent's activation on each window token. Memory is bounded by
  ``d_sae * k * (left + 1 + right)`` per layer (ids int32 plus activations float32: 8 latents x 17
  tokens x 8 bytes = 1.1 kB per latent, 18 MB for a 16k-latent SAE), never by the corpus. A batch
  is merged with one ``topk`` over the batch's tokens and one over the merged ``2k`` candidates.
- **Direct logit effects** (`direct_logit_effects`): the decoder row through the final norm's
  gain and the unembedding, ``(centre(W_dec[i]) * w_ln) @ W_U``. This is the logit lens of the
  latent's direction: it ignores every block above the hook, the final norm's per-position
  ``1/scale`` (positive, so it changes no ranking) and its bias and ``b_U`` (the same for every
  latent). When the model's weights are processed with ``fold_ln`` the gain is already inside
  ``W_U`` and only the centring is applied.
- **Neuronpedia** (`neuronpedia_id`): SAELens's pretrained-SAE directory (shipped with the
  package, read offline) names a Neuronpedia id per SAE of many releases; a latent's page is
  ``https://www.neuronpedia.org/<id>/<latent>``. SAEs loaded from a directory (the world's) have none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

NEURONPEDIA_URL = "https://www.neuronpedia.org/{id}/{latent}"
LATENTS_VERSION = 1
"""Version of ``latents.json``'s layout."""
LOGIT_METHOD = (
    "direct path: (centre(W_dec[i]) * ln_final.w) @ W_U; blocks above the hook, the final norm's "
    "per-position scale, its bias and b_U are ignored"
)


# ---------------------------------------------------------------------------------------------
# Top-activating contexts
# ---------------------------------------------------------------------------------------------


@dataclass
class TopContexts:
    """Per latent, the ``k`` highest activations seen so far and their token windows."""

    k: int
    left: int
    right: int
    values: Float[Tensor, "d_sae k"]
    """Activation at the position (``-inf``: an empty slot)."""
    doc: Int[Tensor, "d_sae k"]
    pos: Int[Tensor, "d_sae k"]
    role: Int[Tensor, "d_sae k"]
    window: Int[Tensor, "d_sae k w"]
    """Token ids around the position (``-1``: outside the document, BOS or padding)."""
    window_acts: Float[Tensor, "d_sae k w"]
    """The latent's activation on each window token (NaN where it was not encoded)."""
    roles: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, d_sae: int, k: int = 8, left: int = 12, right: int = 4) -> TopContexts:
        if k < 1 or left < 0 or right < 0:
            raise ValueError(f"k must be >= 1 and the window sides >= 0 (k={k}, left={left}, right={right}).")
        width = left + 1 + right
        return cls(
            k,
            left,
            right,
            torch.full((d_sae, k), -torch.inf),
            torch.full((d_sae, k), -1, dtype=torch.int64),
            torch.full((d_sae, k), -1, dtype=torch.int64),
            torch.full((d_sae, k), -1, dtype=torch.int64),
            torch.full((d_sae, k, width), -1, dtype=torch.int32),
            torch.full((d_sae, k, width), torch.nan),
        )

    def role_id(self, role: str) -> int:
        if role not in self.roles:
            self.roles.append(role)
        return self.roles.index(role)

    def nbytes(self) -> int:
        """Memory held (it does not grow with the data)."""
        tensors = (self.values, self.doc, self.pos, self.role, self.window, self.window_acts)
        return sum(t.element_size() * t.numel() for t in tensors)

    @torch.no_grad()
    def add(
        self,
        codes: Float[Tensor, "n d_sae"],
        tokens: Int[Tensor, "batch pos"],
        coded: Bool[Tensor, "batch pos"],
        visible: Bool[Tensor, "batch pos"],
        doc_ids: Int[Tensor, " batch"],
        role_ids: Int[Tensor, " batch"],
    ) -> None:
        """Merge a batch. ``codes`` are the SAE codes of the ``coded`` positions in row-major
        order (as ``acts[coded]`` gives them); ``visible`` marks the tokens a window may show."""
        n = codes.shape[0]
        if n == 0:
            return
        device = codes.device
        where = coded.nonzero().to(device)  # [n, 2], row-major like boolean indexing
        if where.shape[0] != n:
            raise ValueError(f"{n} codes for {where.shape[0]} coded positions.")
        rows, positions = where[:, 0], where[:, 1]
        # the flat index of each coded position's code (-1: not coded), padded by the window sides
        flat = torch.full(coded.shape, -1, dtype=torch.int64, device=device)
        flat[coded.to(device)] = torch.arange(n, device=device)
        flat = torch.nn.functional.pad(flat, (self.left, self.right), value=-1)
        shown = torch.where(visible.to(device), tokens.to(device), -1)
        shown = torch.nn.functional.pad(shown, (self.left, self.right), value=-1)

        dense = codes.detach().float()
        by_latent = dense.T.contiguous()  # [d_sae, n]: reductions along a contiguous axis are fast
        # only latents whose batch maximum beats their current k-th value can change
        floor = self.values.min(dim=1).values.to(device)
        changed = (by_latent.max(dim=1).values > floor).nonzero().squeeze(1)
        if changed.numel() == 0:
            return
        kk = min(self.k, n)
        values, index = by_latent[changed].topk(kk, dim=1)  # [changed, kk]
        cand_rows, cand_pos = rows[index], positions[index]
        offsets = torch.arange(self.left + 1 + self.right, device=device)
        cols = cand_pos[..., None] + offsets  # padded column = position - left + offset + left
        window = shown[cand_rows[..., None], cols]
        window_flat = flat[cand_rows[..., None], cols]
        latent = changed[:, None, None].expand_as(window_flat)
        window_acts = by_latent[latent, window_flat.clamp(min=0)]
        window_acts = torch.where(window_flat >= 0, window_acts, torch.nan)

        at = changed.cpu()
        merged_values = torch.cat([self.values[at], values.cpu()], dim=1)
        best = merged_values.topk(self.k, dim=1).indices

        def merge(old: Tensor, new: Tensor) -> Tensor:
            both = torch.cat([old[at], new.cpu().to(old.dtype)], dim=1)
            gather_index = best.view(*best.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
            return both.gather(1, gather_index)

        self.values[at] = merged_values.gather(1, best)
        self.doc[at] = merge(self.doc, doc_ids.to(device)[cand_rows])
        self.pos[at] = merge(self.pos, cand_pos)
        self.role[at] = merge(self.role, role_ids.to(device)[cand_rows])
        self.window[at] = merge(self.window, window)
        self.window_acts[at] = merge(self.window_acts, window_acts)

    def merge(self, other: TopContexts) -> None:
        """Keep, per latent, the ``k`` highest of both collectors' contexts (``other``'s roles are
        renumbered into this one's)."""
        roles = torch.tensor([self.role_id(role) for role in other.roles] or [0], dtype=torch.int64)
        other_role = torch.where(other.role >= 0, roles[other.role.clamp(min=0)], other.role)
        # a context both hold (merged into each rank before, e.g. the forget corpus's when the
        # retain corpus's are merged) counts once
        mine = torch.stack([self.doc, self.pos, self.role], dim=-1)
        theirs = torch.stack([other.doc, other.pos, other_role], dim=-1)
        held = (theirs[:, :, None, :] == mine[:, None, :, :]).all(dim=-1).any(dim=-1)
        other_values = torch.where(held, -torch.inf, other.values)
        merged_values = torch.cat([self.values, other_values], dim=1)
        best = merged_values.topk(self.k, dim=1).indices

        def pick(mine: Tensor, theirs: Tensor) -> Tensor:
            both = torch.cat([mine, theirs.to(mine.dtype)], dim=1)
            index = best.view(*best.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
            return both.gather(1, index)

        self.values = merged_values.gather(1, best)
        self.doc = pick(self.doc, other.doc)
        self.pos = pick(self.pos, other.pos)
        self.role = pick(self.role, other_role)
        self.window = pick(self.window, other.window)
        self.window_acts = pick(self.window_acts, other.window_acts)

    def merge_ranks(self) -> None:
        """Under ``torchrun``: every rank ends with the top contexts of all ranks' data (merged
        in rank order, so every rank holds the same)."""
        from hookunlearn import distributed

        if not distributed.is_distributed():
            return
        parts = distributed.all_gather_objects(self)
        merged = parts[0]
        for part in parts[1:]:
            merged.merge(part)
        for name in ("values", "doc", "pos", "role", "window", "window_acts", "roles"):
            setattr(self, name, getattr(merged, name))

    def records(self, latent: int, decode: Callable[[Sequence[int]], list[str]]) -> list[dict[str, Any]]:
        """JSON-ready contexts of one latent, highest first; slots where it never fired are dropped."""
        out = []
        order = torch.argsort(self.values[latent], descending=True, stable=True)
        for slot in order.tolist():
            value = float(self.values[latent, slot])
            if not value > 0:
                continue
            ids = self.window[latent, slot].tolist()
            acts = self.window_acts[latent, slot].tolist()
            keep = [i for i, token in enumerate(ids) if token >= 0]
            center = keep.index(self.left) if self.left in keep else None
            out.append(
                {
                    "activation": value,
                    "role": self.roles[int(self.role[latent, slot])],
                    "doc": int(self.doc[latent, slot]),
                    "pos": int(self.pos[latent, slot]),
                    "tokens": decode([ids[i] for i in keep]),
                    "acts": [None if acts[i] != acts[i] else round(acts[i], 5) for i in keep],
                    "center": center,
                }
            )
        return out


def token_decoder(tokenizer: Any) -> Callable[[Sequence[int]], list[str]]:
    """One string per token id (each decoded alone), cached."""
    cache: dict[int, str] = {}

    def decode(ids: Sequence[int]) -> list[str]:
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        if missing:
            for token_id, text in zip(missing, tokenizer.batch_decode([[i] for i in missing]), strict=True):
                cache[token_id] = text
        return [cache[i] for i in ids]

    return decode


# ---------------------------------------------------------------------------------------------
# Direct logit effects
# ---------------------------------------------------------------------------------------------


def direct_logit_effects(
    directions: Float[Tensor, "n d_model"],
    W_U: Float[Tensor, "d_model d_vocab"],
    ln_weight: Float[Tensor, " d_model"] | None = None,
    *,
    center: bool = True,
) -> Float[Tensor, "n d_vocab"]:
    """Each direction through the final norm's centring (``center``: LayerNorm, not RMSNorm) and
    gain (``ln_weight``; None when folded into ``W_U`` or absent), then the unembedding."""
    x = directions.float()
    if center:
        x = x - x.mean(dim=-1, keepdim=True)
    if ln_weight is not None:
        x = x * ln_weight.float()
    return x @ W_U.float()


def top_tokens(
    effects: Float[Tensor, " d_vocab"], k: int, decode: Callable[[Sequence[int]], list[str]]
) -> dict[str, list[list[Any]]]:
    """The ``k`` most promoted and most suppressed tokens as ``[token, value]`` pairs."""
    k = min(k, effects.shape[0])
    top = effects.topk(k)
    bottom = (-effects).topk(k)
    return {
        "top": [
            [t, round(float(v), 5)] for t, v in zip(decode(top.indices.tolist()), top.values, strict=True)
        ],
        "bottom": [
            [t, round(-float(v), 5)]
            for t, v in zip(decode(bottom.indices.tolist()), bottom.values, strict=True)
        ],
    }


def final_norm(model: Any) -> tuple[Tensor | None, bool, str]:
    """(gain or None, centre?, what was done) for the model's final norm."""
    kind = getattr(model.cfg, "normalization_type", None)
    center = kind in ("LN", "LNPre")
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    if kind is None:
        return None, False, "none (the model has no final norm)"
    if weight is None:
        return (
            None,
            center,
            f"{kind}: gain folded into W_U (fold_ln); centring applied"
            if center
            else f"{kind}: gain folded into W_U",
        )
    return weight.detach(), center, f"{kind}: gain applied{' after centring' if center else ''}"


# ---------------------------------------------------------------------------------------------
# Neuronpedia
# ---------------------------------------------------------------------------------------------


def neuronpedia_id(sae: Mapping[str, Any]) -> str | None:
    """The Neuronpedia id SAELens's pretrained directory gives this SAE (an `SAEInfo` dict), or
    None (a local or in-memory SAE, or a release without one)."""
    if sae.get("source") != "release" or not sae.get("release") or not sae.get("sae_id"):
        return None
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory().get(str(sae["release"]))
    if lookup is None:
        return None
    found = (lookup.neuronpedia_id or {}).get(str(sae["sae_id"]))
    return str(found) if found else None


def neuronpedia_url(np_id: str | None, latent: int) -> str | None:
    return None if not np_id else NEURONPEDIA_URL.format(id=np_id, latent=latent)


# ---------------------------------------------------------------------------------------------
# The cards select writes (latents.json)
# ---------------------------------------------------------------------------------------------


def latent_cards(
    model: Any,
    sae: Any,
    sae_info: Mapping[str, Any],
    latents: Sequence[int],
    scores: Mapping[int, float],
    contexts: TopContexts | None,
    *,
    logit_k: int = 10,
) -> dict[str, Any]:
    """One layer's entry of ``latents.json``: per latent its rank, score, contexts, logit effects
    and Neuronpedia link."""
    decode = token_decoder(model.tokenizer)
    np_id = neuronpedia_id(sae_info)
    effects = None
    logit_note: str | None = None
    W_dec = sae.W_dec.detach()
    if W_dec.shape[1] != model.cfg.d_model:
        logit_note = f"skipped: the SAE's d_in {W_dec.shape[1]} is not the residual width {model.cfg.d_model}"
    elif latents:
        weight, center, logit_note = final_norm(model)
        index = torch.tensor(list(latents), dtype=torch.long, device=W_dec.device)
        with torch.no_grad():
            effects = direct_logit_effects(
                W_dec[index].cpu(),
                model.W_U.detach().cpu(),
                None if weight is None else weight.cpu(),
                center=center,
            )
    cards = []
    for rank, latent in enumerate(latents, start=1):
        cards.append(
            {
                "latent": int(latent),
                "rank": rank,
                "score": float(scores[latent]),
                "contexts": contexts.records(latent, decode) if contexts is not None else None,
                "logits": top_tokens(effects[rank - 1], logit_k, decode) if effects is not None else None,
                "neuronpedia": neuronpedia_url(np_id, int(latent)),
            }
        )
    return {
        "hook": sae_info.get("hook_name"),
        "sae": sae_info.get("spec"),
        "neuronpedia_id": np_id,
        "final_norm": logit_note,
        "latents": cards,
    }


__all__ = [
    "LATENTS_VERSION",
    "LOGIT_METHOD",
    "NEURONPEDIA_URL",
    "TopContexts",
    "direct_logit_effects",
    "final_norm",
    "latent_cards",
    "neuronpedia_id",
    "neuronpedia_url",
    "token_decoder",
    "top_tokens",
]
