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
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities.activation_functions import apply_softcap

from hookunlearn.backends import backend_name, backend_of
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
    continuation: tuple[int, ...] = ()
    """The continuation's tokens (what was scored)."""

    def greedy_prefix(self) -> tuple[int, ...]:
        """What greedy decoding writes at the continuation's positions, as far as teacher forcing
        knows it: the top tokens up to and including the first that differs from the continuation
        (after a miss greedy decoding continues from its own token, which was not scored)."""
        for index, (got, want) in enumerate(zip(self.top_tokens, self.continuation, strict=False)):
            if got != want:
                return self.top_tokens[: index + 1]
        return self.top_tokens


def bos_prefix(model: LanguageModel, prepend_bos: bool | None) -> list[int]:
    """The BOS token to prepend, following the model's default when ``prepend_bos`` is None."""
    use_bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    tokenizer = model.tokenizer
    if not use_bos or tokenizer is None or tokenizer.bos_token_id is None:
        return []
    return [int(tokenizer.bos_token_id)]


def encode(model: LanguageModel, text: str) -> list[int]:
    """``text``'s token ids, without special tokens (one request of `encode_batch`)."""
    return encode_batch(model, [text])[0]


def encode_batch(model: LanguageModel, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of many texts, without special tokens, in one batched tokenizer call."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with hookunlearn.models.load_model")
    if not texts:
        return []
    return [list(ids) for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_pair(model: LanguageModel, context: str, continuation: str, prefix: Sequence[int]) -> EncodedPair:
    """Tokenise like lm-evaluation-harness's ``_encode_pair`` (one request of `encode_pairs`)."""
    return encode_pairs(model, [(context, continuation)], prefix)[0]


def encode_pairs(
    model: LanguageModel, requests: Sequence[tuple[str, str]], prefix: Sequence[int]
) -> list[EncodedPair]:
    """(context, continuation) requests tokenised as lm-evaluation-harness's ``_encode_pair`` does:
    trailing whitespace of the context moves to the continuation, the continuation's tokens are the
    tail of context+continuation (its own tokens when the context's last token merges with it),
    and ``prefix`` (BOS) goes in front. Every distinct string is tokenised once, in one batched
    tokenizer call (MC choices share their context)."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with hookunlearn.models.load_model")
    split = []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        split.append((context, continuation))
    texts = sorted({text for context, continuation in split for text in (context, context + continuation)})
    ids = (
        dict(zip(texts, model.tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True))
        if texts
        else {}
    )
    pairs = []
    for context, continuation in split:
        whole, context_ids = ids[context + continuation], ids[context]
        continuation_ids = whole[len(context_ids) :]
        if whole[: len(context_ids)] != context_ids:  # the context's last token merged
            continuation_ids = encode(model, continuation)
        pairs.append(EncodedPair(tuple(prefix) + tuple(context_ids), tuple(continuation_ids)))
    return pairs


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> Int[Tensor, "batch pos"]:
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def tail_log_probs(model: LanguageModel, residual: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """Log-softmax of the logits from final residuals, as `HookedTransformer.forward` computes
    them after its last block: final norm, unembedding, Gemma-2's logit soft cap."""
    picked = residual[:, None]  # [n, 1, d_model]: the components expect a position axis
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    logits = apply_softcap(model.unembed(picked)[:, 0], model.cfg.output_logits_soft_cap)
    return torch.log_softmax(logits.float(), dim=-1)


def log_probs_at(
    model: LanguageModel,
    tokens: Int[Tensor, "batch pos"],
    rows: Int[Tensor, " n"],
    positions: Int[Tensor, " n"],
) -> Float[Tensor, "n vocab"]:
    """Log-softmax of the model's logits at ``(rows[i], positions[i])`` only.

    The blocks run on the whole batch (hooks fire as in ``model(tokens)``); the final norm, the
    unembedding and the soft cap run on the picked positions only (`tail_log_probs`), so the values equal
    the full forward's there while the ``[batch, pos, d_vocab]`` tensor is never built (at a 256k
    vocabulary it dominates)."""
    if backend_name(model) != "hooked":  # the bridge's tail is the HF module's own (hookunlearn.backends)
        return backend_of(model).log_probs_at(model, tokens, rows, positions)
    residual = model(tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
    device = residual.device
    return tail_log_probs(model, residual[rows.to(device), positions.to(device)])


def _by_length(rows: Sequence[Sequence[int]], batch_size: int, max_padding: float = 0.25) -> list[list[int]]:
    """Batches of row indices, longest rows first, of at most ``batch_size`` rows; a batch is
    closed early when adding a row would make more than ``max_padding`` of it padding."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current is not None and len(current) < batch_size:
            width = len(rows[current[0]])
            real = sum(len(rows[j]) for j in current) + len(rows[i])
            if width == 0 or 1 - real / (width * (len(current) + 1)) <= max_padding:
                current.append(i)
                continue
        batches.append([i])
    return batches


def _check_length(model: LanguageModel, length: int) -> None:
    if length > model.cfg.n_ctx:
        from hookunlearn.errors import DataError

        raise DataError(
            f"an evaluation prompt is {length} tokens long but the model's context is {model.cfg.n_ctx}; "
            "shorten the prompts (or use --limit on the few long ones)."
        )


def _score(pair: EncodedPair, log_probs: Float[Tensor, "n_cont vocab"]) -> ContinuationScore:
    """A pair's score from the log-probabilities at the positions predicting its continuation."""
    targets = torch.tensor(pair.continuation, dtype=torch.long)
    token_lp = log_probs[torch.arange(len(targets)), targets]
    top = log_probs.argmax(dim=-1)
    return ContinuationScore(
        float(token_lp.sum()),
        bool((top == targets).all()),
        len(targets),
        float(token_lp[0].exp()),
        tuple(top.tolist()),
        tuple(pair.continuation),
    )


def _score_rows(
    model: LanguageModel,
    pairs: Sequence[EncodedPair],
    indices: Sequence[int],
    batch_size: int,
    pad_id: int,
    scores: list[ContinuationScore | None],
) -> None:
    """One padded row per pair (context + continuation without its last token, which is only
    predicted, as the harness feeds it), rows of similar length together."""
    rows = [list(pairs[i].context) + list(pairs[i].continuation)[:-1] for i in indices]
    for batch in _by_length(rows, batch_size):
        # logits at position t predict token t+1
        where = [
            (j, t)
            for j, b in enumerate(batch)
            for t in range(len(pairs[indices[b]].context) - 1, len(rows[b]))
        ]
        log_probs = log_probs_at(
            model,
            _pad([rows[b] for b in batch], pad_id),
            torch.tensor([j for j, _ in where], dtype=torch.long),
            torch.tensor([t for _, t in where], dtype=torch.long),
        ).cpu()
        offset = 0
        for b in batch:
            pair = pairs[indices[b]]
            scores[indices[b]] = _score(pair, log_probs[offset : offset + len(pair.continuation)])
            offset += len(pair.continuation)


def _rows_of(cache: TransformerLensKeyValueCache, rows: Int[Tensor, " n"]) -> TransformerLensKeyValueCache:
    """A frozen cache whose batch row ``j`` is ``cache``'s row ``rows[j]`` (one per continuation)."""
    entries = [
        TransformerLensKeyValueCacheEntry(entry.past_keys[rows], entry.past_values[rows], frozen=True)
        for entry in cache.entries
    ]
    return TransformerLensKeyValueCache(entries, cache.previous_attention_mask[rows], frozen=True)


def _score_shared(
    model: LanguageModel,
    pairs: Sequence[EncodedPair],
    groups: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    scores: list[ContinuationScore | None],
) -> None:
    """Pairs that share a context (MC choices): each context runs once, into a key-value cache
    that is then frozen, and each round of continuations runs on top of it (the harness runs the
    context again for every choice). Contexts are batched longest first and left-padded with an
    attention mask (TransformerLens offsets the positions of padded rows, as in batched generation,
    so a context's numbers do not depend on its batch); all their continuations then run in one
    forward on copies of their context's cache row, right-padded, which causal attention makes
    harmless."""
    device = model.cfg.device
    order = sorted(groups, key=lambda group: -len(pairs[group[0]].context))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = len(pairs[chunk[0][0]].context)
        rows = [list(pairs[group[0]].context) for group in chunk]
        contexts = torch.tensor(
            [[pad_id] * (width - len(row)) + row for row in rows], dtype=torch.long, device=device
        )
        mask = torch.tensor(
            [[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long, device=device
        )
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(chunk))
        residual = model(contexts, past_kv_cache=cache, attention_mask=mask, stop_at_layer=model.cfg.n_layers)
        first = tail_log_probs(model, residual[:, -1]).cpu()  # predicts every continuation's first token
        cache.freeze()
        # the chunk's continuations on copies of their context's cache row, similar lengths together
        members = [(b, i) for b, group in enumerate(chunk) for i in group]
        inputs = [list(pairs[i].continuation[:-1]) for _, i in members]
        later: dict[int, Tensor] = {}
        for batch in _by_length(inputs, 4 * batch_size):
            width = len(inputs[batch[0]])
            if not width:
                break  # the rest are single-token continuations: the context predicted them
            owners = torch.tensor([members[m][0] for m in batch], dtype=torch.long, device=device)
            tokens = _pad([inputs[m] + [pad_id] * (width - len(inputs[m])) for m in batch], pad_id).to(device)
            where = [(j, t) for j, m in enumerate(batch) for t in range(len(inputs[m]))]
            out = model(
                tokens,
                past_kv_cache=_rows_of(cache, owners),
                attention_mask=torch.ones_like(tokens),
                stop_at_layer=model.cfg.n_layers,
            )
            log_probs = tail_log_probs(model, out[[j for j, _ in where], [t for _, t in where]]).cpu()
            offset = 0
            for m in batch:
                later[m] = log_probs[offset : offset + len(inputs[m])]
                offset += len(inputs[m])
        for m, (b, i) in enumerate(members):
            scores[i] = _score(pairs[i], torch.cat([first[b : b + 1], later.get(m, first[:0])]))
        del cache


@torch.no_grad()
def score_pairs(
    model: LanguageModel,
    pairs: Sequence[EncodedPair],
    *,
    batch_size: int = 32,
    share_contexts: bool = True,
) -> list[ContinuationScore]:
    """Score each continuation given its context, batched, with logits only at the continuation's
    positions. Pairs whose context is shared by another pair run that context once (a frozen
    key-value cache, `_score_shared`); the others one padded row per pair. Both give the plain
    forward's log-probabilities up to float round-off (tests pin it per architecture)."""
    pad_id = int(model.tokenizer.pad_token_id or 0) if model.tokenizer is not None else 0
    for pair in pairs:  # the last continuation token is predicted, never fed
        _check_length(model, len(pair.context) + max(len(pair.continuation) - 1, 0))
    scores: list[ContinuationScore | None] = [
        None if pair.continuation else ContinuationScore(0.0, True, 0, 1.0) for pair in pairs
    ]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, pair in enumerate(pairs):
        if pair.continuation:
            groups.setdefault(pair.context, []).append(i)
    # a TransformerLens key-value cache: the hooked backend's (the bridge scores every row plainly)
    share_contexts = share_contexts and backend_name(model) == "hooked"
    shared = [
        group for group in groups.values() if share_contexts and len(group) > 1 and pairs[group[0]].context
    ]
    in_shared = {i for group in shared for i in group}
    if shared:
        _score_shared(model, pairs, shared, batch_size, pad_id, scores)
    rest = [i for i, score in enumerate(scores) if score is None and i not in in_shared]
    if rest:
        _score_rows(model, pairs, rest, batch_size, pad_id, scores)
    return [score for score in scores if score is not None]


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
    for row in contexts:
        _check_length(model, len(row))
    candidate_ids = torch.tensor(list(candidates), dtype=torch.long)
    out = torch.zeros(len(contexts), len(candidate_ids))
    for batch in _by_length(contexts, batch_size):
        chunk = [contexts[i] for i in batch]
        last = torch.tensor([len(row) - 1 for row in chunk], dtype=torch.long)
        log_probs = log_probs_at(model, _pad(chunk, pad_id), torch.arange(len(chunk)), last).cpu()
        out[torch.tensor(batch, dtype=torch.long)] = log_probs[:, candidate_ids]
    return out
