"""Tokenised datasets and sequence NLL: the one home shared by training, objectives and evaluation.

`TokenData` holds right-padded rows and the positions a loss reads; `Batch` is one step's rows;
`token_nll` / `mean_token_nll` / `sequence_nll` are next-token negative log-likelihoods over the
masked positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hookunlearn.backends.types import LanguageModel
from hookunlearn.errors import HookunlearnError


@dataclass
class Batch:
    """A tokenised batch; ``mask`` marks the positions the loss reads (real tokens, or entity tokens)."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    index: Int[Tensor, " batch"]
    """Row indices into the dataset (NPO's cached reference log-probs are looked up by them)."""


@dataclass
class TokenData:
    """A tokenised dataset: right-padded rows and the positions the loss reads."""

    tokens: Int[Tensor, "n pos"]
    mask: Bool[Tensor, "n pos"]
    truncated: int = 0
    """Texts cut to fit the token limit (``max_tokens`` or the model's context)."""

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, index: Int[Tensor, " b"]) -> Batch:
        width = int(self.mask[index].nonzero()[:, 1].max()) + 1 if bool(self.mask[index].any()) else 1
        return Batch(self.tokens[index, :width], self.mask[index, :width], index)


def tokenize_texts(model: LanguageModel, texts: Sequence[str], max_tokens: int | None = None) -> TokenData:
    """Corpus rows: BOS + text tokens, every real non-BOS token counts."""
    from hookunlearn.activations import tokenize_batch

    if not texts:
        raise HookunlearnError("an unlearning dataset is empty.")
    cut: list[int] = []
    tokens, mask = tokenize_batch(model, list(texts), max_tokens=max_tokens, truncated=cut)
    return TokenData(tokens, mask, truncated=sum(cut))


def tokenize_span_ends(model: LanguageModel, prompts: Sequence[str], span_ends: Sequence[int]) -> TokenData:
    """Entity prompts: the loss reads only the last token of each entity name."""
    from hookunlearn.activations import last_token_of_span, tokenize_batch

    tokens, _ = tokenize_batch(model, list(prompts))
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for row, (prompt, end) in enumerate(zip(prompts, span_ends, strict=True)):
        mask[row, last_token_of_span(model, prompt, end)] = True
    return TokenData(tokens, mask)


def tokenize_entity_spans(
    model: LanguageModel,
    prompts: Sequence[str],
    span_starts: Sequence[int | None],
    span_ends: Sequence[int],
) -> TokenData:
    """Entity prompts: the loss reads every token of the entity name (from the token holding
    ``span_start`` to the one holding ``span_end - 1``; the last token alone when the start is None)."""
    from hookunlearn.activations import last_token_of_span

    data = tokenize_span_ends(model, prompts, span_ends)
    for row, (prompt, start, end) in enumerate(zip(prompts, span_starts, span_ends, strict=True)):
        if start is not None:
            first = last_token_of_span(model, prompt, start + 1)
            data.mask[row, first : last_token_of_span(model, prompt, end) + 1] = True
    return data


def concat_token_data(parts: Sequence[TokenData]) -> TokenData:
    """Rows of several datasets in one (right-padded to the widest; padding is masked out)."""
    if not parts:
        raise HookunlearnError("an unlearning dataset is empty.")
    width = max(part.tokens.shape[1] for part in parts)
    tokens = torch.cat(
        [torch.nn.functional.pad(part.tokens, (0, width - part.tokens.shape[1])) for part in parts]
    )
    mask = torch.cat(
        [torch.nn.functional.pad(part.mask, (0, width - part.mask.shape[1]), value=False) for part in parts]
    )
    return TokenData(tokens, mask, truncated=sum(part.truncated for part in parts))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Int[Tensor, " b"]:
    """Rows of step ``step``: consecutive slices of a per-epoch seeded permutation."""
    rows = []
    position = step * batch_size
    while len(rows) < batch_size:
        epoch, offset = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(batch_size - len(rows), n - offset)
        rows.extend(order[offset : offset + take].tolist())
        position += take
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def sequence_nll(model: LanguageModel, data: TokenData, batch_size: int = 32) -> Tensor:
    """Summed next-token NLL per row (NPO's reference, computed once before training)."""

    out = []
    for start in range(0, len(data), batch_size):
        batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        logits = model(batch.tokens.to(model.cfg.device), return_type="logits")
        out.append(token_nll(logits, batch.tokens, batch.mask).cpu())
    return torch.cat(out)


def token_nll(
    logits: Float[Tensor, "b p v"], tokens: Int[Tensor, "b p"], mask: Bool[Tensor, "b p"]
) -> Float[Tensor, " b"]:
    """Summed next-token NLL per sequence over masked target positions."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = tokens[:, 1:].to(logits.device)
    picked = log_probs.gather(-1, targets[..., None])[..., 0]
    weights = mask[:, 1:].to(logits.device).float()
    return -(picked * weights).sum(dim=1)


def mean_token_nll(
    logits: Float[Tensor, "b p v"], tokens: Int[Tensor, "b p"], mask: Bool[Tensor, "b p"]
) -> Tensor:
    return token_nll(logits, tokens, mask).sum() / mask[:, 1:].sum().clamp(min=1)
