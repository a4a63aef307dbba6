"""The fast scoring paths give the plain forward's log-probabilities, per architecture.

`score_pairs` runs a shared context once into a frozen key-value cache and its continuations on
top of it, batches rows by length and computes logits only where they are read; `score_next_token`
reads the last position only. Each is checked against the obvious computation (one full forward
per pair, log-softmax over every position), with and without a hook on the residual stream,
on tiny random-init checkpoints of every architecture we load (GPT-2, Llama, Mistral and Gemma-2
with a sliding window shorter than the rows, Qwen2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hookunlearn.evaluation.scoring import EncodedPair, score_next_token, score_pairs
from hookunlearn.models import load_model
from tests.fixtures_hf import ARCHITECTURES, make_tiny_checkpoint


def _pairs(vocab: int, seed: int = 0) -> list[EncodedPair]:
    generator = torch.Generator().manual_seed(seed)

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(int(t) for t in torch.randint(1, vocab, (n,), generator=generator))

    pairs = []
    for question, length in enumerate((5, 7, 7, 9, 3, 7)):
        context = tokens(length)
        for n_cont in (1, 3, 2, 4)[: 2 + question % 3]:  # 2-4 choices, some single-token
            pairs.append(EncodedPair(context, tokens(n_cont)))
    pairs.append(EncodedPair(tokens(6), tokens(3)))  # a context nobody shares
    pairs.append(EncodedPair(tokens(4), ()))  # an empty continuation
    return pairs


def _reference(model, pair: EncodedPair) -> tuple[float, tuple[int, ...]]:
    row = torch.tensor([list(pair.context) + list(pair.continuation)])
    log_probs = torch.log_softmax(model(row, return_type="logits")[0].float(), dim=-1)
    positions = torch.arange(len(pair.context) - 1, len(pair.context) - 1 + len(pair.continuation))
    targets = torch.tensor(pair.continuation, dtype=torch.long)
    return float(log_probs[positions, targets].sum()), tuple(log_probs[positions].argmax(-1).tolist())


def _shift(activation, hook=None):
    return activation + 0.5 * torch.ones_like(activation)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooked"])
def test_score_pairs_paths_equal_the_plain_forward(arch: str, hooked: bool, tmp_path: Path) -> None:
    model = load_model(str(make_tiny_checkpoint(arch, tmp_path / "m", seed=3)), device="cpu")
    pairs = _pairs(model.cfg.d_vocab)
    hooks = [("blocks.0.hook_resid_post", _shift)] if hooked else []
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        expected = [_reference(model, pair) if pair.continuation else (0.0, ()) for pair in pairs]
        for share in (True, False):
            for batch_size in (2, 32):
                scores = score_pairs(model, pairs, batch_size=batch_size, share_contexts=share)
                assert len(scores) == len(pairs)
                for score, (logprob, top), pair in zip(scores, expected, pairs, strict=True):
                    assert score.n_tokens == len(pair.continuation)
                    assert score.logprob == pytest.approx(logprob, abs=1e-4), (arch, share, batch_size)
                    assert score.top_tokens == top


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_score_next_token_reads_the_last_position(arch: str, tmp_path: Path) -> None:
    model = load_model(str(make_tiny_checkpoint(arch, tmp_path / "m", seed=1)), device="cpu")
    contexts = [list(pair.context) for pair in _pairs(model.cfg.d_vocab, seed=1)[::3]]
    candidates = [5, 9, 11]
    with torch.no_grad():
        got = score_next_token(model, contexts, candidates, batch_size=3)
        for row, context in zip(got, contexts, strict=True):
            logits = model(torch.tensor([context]), return_type="logits")[0, -1]
            want = torch.log_softmax(logits.float(), dim=-1)[candidates]
            assert torch.allclose(row, want, atol=1e-4)
