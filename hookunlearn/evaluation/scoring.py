"""Log-likelihood scoring of continuations, batched, as lm-evaluation-harness does it.

A (context, continuation) pair is tokenised the harness's way: the context alone, and the
context+continuation together, with the continuation's tokens being the tail of the latter
(trailing whitespace of the context moves to the continuation). Every pair costs one row of one
batched forward pass; when every continuation of a context is a single token (the `letter`
protocol's " A".." D"), the context is scored once and all candidates read from its last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hookunlearn.backends.types import LanguageModel


@dataclass(frozen=True)
class EncodedPair:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float
    """Sum of the continuation tokens' log-probabilities."""
    greedy: bool
    """Whether greedy decoding from the context produces exactly these continuation tokens."""
    n_tokens: int
    first_token_prob: float
    """Probability of the continuation's first token (a confidence measure)."""
    top_tokens: tuple[int, ...] = ()
    """The model's most likely token at each continuation position under teacher forcing (what
    greedy decoding emits up to its first miss); per-item samples decode it."""


def bos_prefix(model: LanguageModel, prepend_bos: bool | None) -> list[int]:
    """The BOS token to prepend, following the model's default when ``prepend_bos`` is None."""
    use_bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    tokenizer = model.tokenizer
    if not use_bos or tokenizer is None or tokenizer.bos_token_id is None:
        return []
    return [int(tokenizer.bos_token_id)]


def encode(model: LanguageModel, text: str) -> list[int]:
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with hookunlearn.models.load_model")
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pair(
    model: LanguageModel, context: str, continuation: str, prefix: Sequence[int]
) -> EncodedPair:
    """Tokenise like lm-evaluation-harness's ``_encode_pair``."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(model, context + continuation)
    context_ids = encode(model, context)
    continuation_ids = whole[len(context_ids) :]
    if whole[: len(context_ids)] != context_ids:
        # The context's last token merges with the continuation: score the continuation's own tokens.
        continuation_ids = encode(model, continuation)
    return EncodedPair(tuple(prefix) + tuple(context_ids), tuple(continuation_ids))


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> Int[Tensor, "batch pos"]:
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _log_probs(
    model: LanguageModel, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos vocab"]:
    # Right padding needs no attention mask: causal attention never lets a real token see the
    # pads after it, and positions are absolute from the left.
    logits = model(tokens.to(model.cfg.device), return_type="logits")
    return torch.log_softmax(logits.float(), dim=-1)


def _check_length(model: LanguageModel, length: int) -> None:
    if length > model.cfg.n_ctx:
        from hookunlearn.errors import DataError

        raise DataError(
            f"an evaluation prompt is {length} tokens long but the model's context is {model.cfg.n_ctx}; "
            "shorten the prompts (or use --limit on the few long ones)."
        )


@torch.no_grad()
def score_pairs(
    model: LanguageModel, pairs: Sequence[EncodedPair], *, batch_size: int = 32
) -> list[ContinuationScore]:
    """Score each continuation given its context: one padded row per pair, batched."""
    pad_id = int(model.tokenizer.pad_token_id or 0) if model.tokenizer is not None else 0
    scores: list[ContinuationScore] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [list(p.context) + list(p.continuation) for p in chunk]
        for row in rows:
            _check_length(model, len(row))
        log_probs = _log_probs(model, _pad(rows, pad_id)).cpu()
        for i, pair in enumerate(chunk):
            n_ctx, n_cont = len(pair.context), len(pair.continuation)
            if n_cont == 0:
                scores.append(ContinuationScore(0.0, True, 0, 1.0))
                continue
            # logits at position t predict token t+1
            positions = torch.arange(n_ctx - 1, n_ctx - 1 + n_cont)
            targets = torch.tensor(pair.continuation, dtype=torch.long)
            token_lp = log_probs[i, positions, targets]
            top = log_probs[i, positions].argmax(dim=-1)
            greedy = bool((top == targets).all())
            scores.append(
                ContinuationScore(
                    float(token_lp.sum()), greedy, n_cont, float(token_lp[0].exp()), tuple(top.tolist())
                )
            )
    return scores


@torch.no_grad()
def score_next_token(
    model: LanguageModel,
    contexts: Sequence[Sequence[int]],
    candidates: Sequence[int],
    *,
    batch_size: int = 32,
) -> Float[Tensor, "n_contexts n_candidates"]:
    """Log-probabilities of single-token candidates after each context: one forward per context."""
    pad_id = int(model.tokenizer.pad_token_id or 0) if model.tokenizer is not None else 0
    out = []
    candidate_ids = torch.tensor(list(candidates), dtype=torch.long)
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        for row in chunk:
            _check_length(model, len(row))
        log_probs = _log_probs(model, _pad(chunk, pad_id)).cpu()
        last = torch.tensor([len(row) - 1 for row in chunk])
        out.append(log_probs[torch.arange(len(chunk)), last][:, candidate_ids])
    return torch.cat(out) if out else torch.zeros(0, len(candidates))
