"""Streaming statistics of `select` against brute force: tiny model, tiny SAEs, hand-checked cases.

Covers `hookunlearn.activations` (stop layer, hook cache, span positions), the per-layer running
sums of `hookunlearn.selection` (corpus and entity statistics, batch-size invariance, BOS and
padding exclusion), feature scores and the layer choice, the `Selection` round trip, and the
statistics of `hookunlearn.attribution` and `hookunlearn.sae_metrics` that read the same tokens.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from hookunlearn.activations import (
    activations_at_span_end,
    cache_hooks,
    last_token_of_span,
    stop_layer_for,
    tokenize_batch,
)
from hookunlearn.attribution import firing_rate, known_unknown_scores, text_firing
from hookunlearn.entities import EntityPrompt
from hookunlearn.errors import ArtifactError, DataError, HookunlearnError, SAELoadError
from hookunlearn.sae_metrics import sae_quality
from hookunlearn.selection import (
    RATIO_EPS,
    RoleStats,
    Selection,
    corpus_stats,
    entity_stats,
    feature_scores,
    select,
)
from tests.fixtures_hf import make_tiny_tokenizer

TOL = 1e-5

TEXTS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Hooks",
    "Sparse autoencoders find features in the residual stream of a language model.",
    "a",
    "Unlearning removes chosen knowledge while keeping general ability intact.",
    "Berlin is the capital of Germany.",
    "A tiny model with random weights is enough to test the loading code.",
    "zq",
    "Hooks read and write activations at named points inside the transformer.",
    "The lazy dog sleeps.",
]
FORGET, RETAIN = TEXTS[:6], TEXTS[6:]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tensors here are tiny: extra intra-op threads only spin against each other on a shared 2-core box.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    make_tiny_tokenizer().save_pretrained(path)
    return path


def make_model(tokenizer_dir: Path, seed: int = 0) -> HookedTransformer:
    """A 3-layer, d_model 16 model with weights large enough that every position differs."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=16,
        n_ctx=64,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        d_vocab=len(tokenizer),
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def make_saes(seed: int = 0) -> dict[int, SAE]:
    """A ReLU SAE at layer 0 (random encoder bias, so firing rates spread) and a TopK SAE at layer 1."""
    torch.manual_seed(seed)
    standard = StandardSAE(
        StandardSAEConfig(d_in=16, d_sae=24, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_post"))
    )
    with torch.no_grad():
        standard.b_enc.normal_(0.0, 0.5)
    topk = TopKSAE(
        TopKSAEConfig(d_in=16, d_sae=20, k=3, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post"))
    )
    return {0: standard.eval(), 1: topk.eval()}


@pytest.fixture(scope="module")
def model(tokenizer_dir: Path) -> HookedTransformer:
    return make_model(tokenizer_dir)


@pytest.fixture(scope="module")
def saes() -> dict[int, SAE]:
    return make_saes()


def real_tokens(model: HookedTransformer, text: str) -> list[int]:
    assert model.tokenizer is not None
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def brute_force(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    texts: Sequence[str | Tensor],
    *,
    positions: Sequence[int] | None = None,
) -> dict[int, dict[str, Any]]:
    """Reference: one full forward per text (tokenised by TransformerLens, with its BOS, unless
    given as tokens), all positions but BOS (or only ``positions[i]``), summed in float64 loops."""
    out: dict[int, dict[str, Any]] = {}
    for layer, sae in saes.items():
        d_model, d_sae = model.cfg.d_model, sae.cfg.d_sae
        out[layer] = {
            "n": 0,
            "code": torch.zeros(d_sae, dtype=torch.float64),
            "fire": torch.zeros(d_sae, dtype=torch.float64),
            "resid": torch.zeros(d_model, dtype=torch.float64),
            "outer": torch.zeros(d_model, d_model, dtype=torch.float64),
        }
    for index, text in enumerate(texts):
        tokens = model.to_tokens(text, prepend_bos=True) if isinstance(text, str) else text
        _, cache = model.run_with_cache(tokens)
        for layer, sae in saes.items():
            acts = cache[sae.cfg.metadata.hook_name][0]
            acts = acts[1:] if positions is None else acts[positions[index] : positions[index] + 1]
            codes = sae.encode(acts).double()
            sums = out[layer]
            for x, c in zip(acts.double(), codes, strict=True):
                sums["n"] += 1
                sums["code"] += c
                sums["fire"] += (c > 0).double()
                sums["resid"] += x
                sums["outer"] += torch.outer(x, x)
    for sums in out.values():
        n = sums["n"]
        sums.update(
            mean_code=sums["code"] / n,
            freq=sums["fire"] / n,
            mean_resid=sums["resid"] / n,
            second_moment=sums["outer"] / n,
        )
    return out


def assert_close_to_scale(actual: Tensor, expected: Tensor, name: str) -> None:
    """Within TOL of the largest entry's magnitude (float32 activations, summed in float64)."""
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=TOL * scale, rtol=0, msg=name)


def assert_stats_match(stats: RoleStats, expected: Mapping[str, Any]) -> None:
    assert stats.n == expected["n"]
    torch.testing.assert_close(stats.mean_code, expected["mean_code"], atol=TOL, rtol=0)
    torch.testing.assert_close(stats.freq, expected["freq"], atol=TOL, rtol=0)
    torch.testing.assert_close(stats.mean_resid, expected["mean_resid"], atol=TOL, rtol=0)
    assert stats.second_moment is not None
    assert_close_to_scale(stats.second_moment, expected["second_moment"], "second_moment")


def assert_same_stats(a: RoleStats, b: RoleStats) -> None:
    assert a.n == b.n
    for name in ("code_sum", "fire_count", "resid_sum", "resid_outer"):
        assert_close_to_scale(getattr(a, name), getattr(b, name), name)


# --- corpus statistics ------------------------------------------------------------------------


def test_corpus_stats_equal_brute_force(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    texts = TEXTS[:5]
    stats = corpus_stats(model, saes, texts, batch_size=4)
    expected = brute_force(model, saes, texts)
    assert set(stats) == {0, 1}
    for layer in saes:
        assert_stats_match(stats[layer], expected[layer])
    # the test has teeth: codes fire on some tokens but not all, at both layers
    for layer in saes:
        assert 0 < float(stats[layer].freq.mean()) < 1


@pytest.mark.parametrize("batch_size", [7, 64])
def test_corpus_stats_do_not_depend_on_batch_size(
    model: HookedTransformer, saes: dict[int, SAE], batch_size: int
) -> None:
    one_by_one = corpus_stats(model, saes, TEXTS, batch_size=1)
    batched = corpus_stats(model, saes, TEXTS, batch_size=batch_size)
    for layer in saes:
        assert_same_stats(batched[layer], one_by_one[layer])


def test_mixed_lengths_in_one_batch_equal_each_text_alone(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    texts = ["a", TEXTS[3], "zq", TEXTS[0]]
    lengths = [len(real_tokens(model, t)) for t in texts]
    assert min(lengths) == 1 and 30 < max(lengths) < model.cfg.n_ctx  # heavy right padding, no truncation
    together = corpus_stats(model, saes, texts, batch_size=len(texts))
    alone = [corpus_stats(model, saes, [text], batch_size=1) for text in texts]
    for layer in saes:
        assert together[layer].n == sum(lengths)
        summed = RoleStats.empty(model.cfg.d_model, saes[layer].cfg.d_sae, second_moments=True)
        for part in alone:
            summed.n += part[layer].n
            summed.code_sum += part[layer].code_sum
            summed.fire_count += part[layer].fire_count
            summed.resid_sum += part[layer].resid_sum
            assert summed.resid_outer is not None and part[layer].resid_outer is not None
            summed.resid_outer += part[layer].resid_outer
        assert_same_stats(together[layer], summed)


def test_bos_position_never_enters_the_statistics(tokenizer_dir: Path, saes: dict[int, SAE]) -> None:
    model = make_model(tokenizer_dir)
    assert model.tokenizer is not None
    bos = model.tokenizer.bos_token_id
    with torch.no_grad():
        model.W_E[bos] *= 100.0  # BOS's residual becomes an outlier that would dominate every mean
    texts = TEXTS[:4]
    stats = corpus_stats(model, saes, texts, batch_size=4)
    expected = brute_force(model, saes, texts)
    for layer in saes:
        assert_stats_match(stats[layer], expected[layer])
    # what the mean would be with BOS counted: far from what corpus_stats reports
    _, cache = model.run_with_cache(model.to_tokens(texts[0]))
    bos_resid = cache["blocks.0.hook_resid_post"][0, 0].double()
    n = expected[0]["n"]
    with_bos = (expected[0]["resid"] + len(texts) * bos_resid) / (n + len(texts))
    assert float((with_bos - stats[0].mean_resid).norm()) > 1.0


def test_n_counts_real_tokens_and_progress_reports_them(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    reports: list[dict[str, Any]] = []
    stats = corpus_stats(model, saes, TEXTS, batch_size=4, progress=reports.append, role="forget")
    n_real = sum(len(real_tokens(model, t)) for t in TEXTS)
    assert stats[0].n == stats[1].n == n_real
    assert [r["docs"] for r in reports] == [4, 8, 11]
    assert reports[-1] == {"role": "forget", "docs": len(TEXTS), "tokens": n_real, "truncated": 0}


def test_max_tokens_counts_bos_in_the_limit(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    stats = corpus_stats(model, saes, TEXTS, batch_size=5, max_tokens=4)
    assert stats[0].n == sum(min(len(real_tokens(model, t)), 3) for t in TEXTS)
    truncated = [model.to_tokens(t)[:, :4] for t in TEXTS]
    expected = brute_force(model, saes, truncated)
    for layer in saes:
        assert_stats_match(stats[layer], expected[layer])


def test_second_moments_can_be_skipped(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    stats = corpus_stats(model, saes, TEXTS[:3], second_moments=False)
    assert stats[0].resid_outer is None and stats[0].second_moment is None
    assert "x.resid_outer" not in stats[0].tensors("x")


def test_empty_corpus_is_a_clear_error(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    with pytest.raises(DataError, match="the retain corpus is empty"):
        corpus_stats(model, saes, [], role="retain")
    with pytest.raises(DataError, match="no tokens were seen"):
        _ = RoleStats.empty(16, 24, second_moments=True).mean_code


def test_role_stats_tensors_round_trip() -> None:
    stats = RoleStats.empty(3, 4, second_moments=True)
    stats.add(torch.randn(5, 3), torch.relu(torch.randn(5, 4)))
    back = RoleStats.from_tensors(stats.tensors("layer2.forget"), "layer2.forget")
    assert back.n == 5
    assert_same_stats(back, stats)


# --- entity statistics ------------------------------------------------------------------------

ENTITY_PROMPTS = [
    EntityPrompt("Paris is the capital of France.", 5, "known", "select"),
    EntityPrompt("Berlin is the capital of Germany.", 6, "known", "select"),
    EntityPrompt("The quick brown fox", 19, "known", "heldout"),
    EntityPrompt("Hooks read activations", 5, "unknown", "select"),
    EntityPrompt("zq is a name", 2, "unknown", "select"),
    EntityPrompt("The lazy dog sleeps.", 12, "unknown", "heldout"),
    EntityPrompt("Sparse autoencoders find features", 19, "unknown", "select"),
    EntityPrompt("A tiny model", 12, "target", "select"),
    EntityPrompt("Unlearning removes knowledge", 10, "target", "heldout"),
    EntityPrompt("Berlin", 6, "known", "select"),
]


def test_entity_stats_read_the_last_entity_token_by_role(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    stats = entity_stats(model, saes, ENTITY_PROMPTS, batch_size=4)
    roles = {
        "known": [p for p in ENTITY_PROMPTS if p.set == "known" and p.fold == "select"],
        "unknown": [p for p in ENTITY_PROMPTS if p.set == "unknown" and p.fold == "select"],
        "known:heldout": [p for p in ENTITY_PROMPTS if p.set == "known" and p.fold == "heldout"],
        "unknown:heldout": [p for p in ENTITY_PROMPTS if p.set == "unknown" and p.fold == "heldout"],
        "target": [p for p in ENTITY_PROMPTS if p.set == "target"],
    }
    for layer in saes:
        assert set(stats[layer]) == set(roles)
        for role, prompts in roles.items():
            # position by hand: BOS + the number of tokens of the prompt up to the entity's end
            positions = [len(real_tokens(model, p.prompt[: p.entity_end_char])) for p in prompts]
            expected = brute_force(model, saes, [p.prompt for p in prompts], positions=positions)
            assert_stats_match(stats[layer][role], expected[layer])


@pytest.mark.parametrize("batch_size", [7, 64])
def test_entity_stats_do_not_depend_on_batch_size(
    model: HookedTransformer, saes: dict[int, SAE], batch_size: int
) -> None:
    one_by_one = entity_stats(model, saes, ENTITY_PROMPTS, batch_size=1)
    batched = entity_stats(model, saes, ENTITY_PROMPTS, batch_size=batch_size)
    for layer in saes:
        assert set(batched[layer]) == set(one_by_one[layer])
        for role in one_by_one[layer]:
            assert_same_stats(batched[layer][role], one_by_one[layer][role])


# --- activations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hooks", "n_layers", "expected"),
    [
        (["blocks.0.hook_resid_post"], 3, 1),
        (["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"], 3, 2),
        (["blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"], 4, 2),
        (["blocks.2.hook_resid_post"], 3, None),
        (["blocks.11.hook_resid_post"], 12, None),
        (["hook_embed", "hook_pos_embed"], 3, 0),
        (["hook_embed", "blocks.1.hook_resid_post"], 3, 2),
        (["ln_final.hook_normalized"], 3, None),
        (["blocks.0.hook_resid_post", "unembed.hook_out"], 3, None),
    ],
)
def test_stop_layer_for(hooks: list[str], n_layers: int, expected: int | None) -> None:
    assert stop_layer_for(hooks, n_layers) == expected


def test_cache_hooks_returns_only_the_requested_hooks_and_stops_early(
    model: HookedTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    original = model.run_with_cache

    def spy(*args: Any, **kwargs: Any) -> Any:
        logits, cache = original(*args, **kwargs)
        calls.append({"stop_at_layer": kwargs.get("stop_at_layer"), "cached": set(cache.keys())})
        return logits, cache

    monkeypatch.setattr(model, "run_with_cache", spy)
    tokens, _ = tokenize_batch(model, TEXTS[:3])
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]
    got = cache_hooks(model, tokens, hooks)
    monkeypatch.undo()

    assert list(got) == hooks
    assert calls == [{"stop_at_layer": 2, "cached": set(hooks)}]
    _, full = model.run_with_cache(tokens)
    for hook in hooks:
        torch.testing.assert_close(got[hook], full[hook])


def test_tokenize_batch_pads_right_and_masks_bos_and_padding(model: HookedTransformer) -> None:
    assert model.tokenizer is not None
    bos, pad = model.tokenizer.bos_token_id, model.tokenizer.pad_token_id
    tokens, mask = tokenize_batch(model, ["Paris is", "a"])
    paris = real_tokens(model, "Paris is")
    assert tokens.tolist() == [[bos, *paris], [bos, *real_tokens(model, "a"), pad, pad]]
    assert mask.tolist() == [[False, True, True, True], [False, True, False, False]]
    no_bos, no_bos_mask = tokenize_batch(model, ["Paris is"], prepend_bos=False)
    assert no_bos.tolist() == [paris] and bool(no_bos_mask.all())


@pytest.mark.parametrize(
    ("text", "span_end", "expected"),
    [
        # tiny BPE: "Par" "is" " is" " the" " capital" " of" " " "Fran" "c" "e" "."
        ("Paris is the capital of France.", 5, 2),  # "Paris" ends inside token 1 ("is"), +1 BOS
        ("Paris is the capital of France.", 3, 1),  # "Par": the first real token
        ("Paris is the capital of France.", 12, 4),  # "... the" ends with token " the"
        ("Paris is the capital of France.", 30, 10),  # "France" ends on token "e"
        ("Paris is the capital of France.", 31, 11),  # the whole prompt: its last token
        ("Paris is the capital of France.", 10, 4),  # a span ending inside " the" maps to it
    ],
)
def test_last_token_of_span(model: HookedTransformer, text: str, span_end: int, expected: int) -> None:
    assert last_token_of_span(model, text, span_end) == expected
    assert last_token_of_span(model, text, span_end, prepend_bos=False) == expected - 1


def test_last_token_of_span_outside_the_prompt_is_a_clear_error(model: HookedTransformer) -> None:
    with pytest.raises(DataError, match="character 40 is outside the prompt 'Paris'"):
        last_token_of_span(model, "Paris", 40)


def test_activations_at_span_end_equal_the_cache_at_that_token(model: HookedTransformer) -> None:
    prompts = [p.prompt for p in ENTITY_PROMPTS[:5]]
    ends = [p.entity_end_char for p in ENTITY_PROMPTS[:5]]
    got = activations_at_span_end(model, prompts, ends, ["blocks.1.hook_resid_post"], batch_size=2)
    rows = []
    for prompt, end in zip(prompts, ends, strict=True):
        _, cache = model.run_with_cache(model.to_tokens(prompt))
        rows.append(cache["blocks.1.hook_resid_post"][0, last_token_of_span(model, prompt, end)])
    torch.testing.assert_close(got["blocks.1.hook_resid_post"], torch.stack(rows), atol=TOL, rtol=0)


# --- attribution and SAE quality (same tokens, same exclusions) -------------------------------


def test_firing_rate_and_known_unknown_scores_by_hand() -> None:
    known = torch.tensor([[1.0, 0.0, 0.5], [2.0, 0.0, 0.0]])
    unknown = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(firing_rate(known), torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(firing_rate(known, threshold=1.0), torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(known_unknown_scores(known, unknown), torch.tensor([0.75, 0.0, -0.25]))


def test_text_firing_ignores_bos_and_padding(tokenizer_dir: Path, saes: dict[int, SAE]) -> None:
    model = make_model(tokenizer_dir)
    assert model.tokenizer is not None
    with torch.no_grad():
        model.W_E[model.tokenizer.bos_token_id] *= 100.0
    sae = saes[0]
    texts = ["a", TEXTS[3], "zq", TEXTS[0]]
    got = text_firing(model, sae, texts, batch_size=4)
    without_bos, with_bos = [], []
    with torch.no_grad():
        for text in texts:
            _, cache = model.run_with_cache(model.to_tokens(text))
            fires = sae.encode(cache["blocks.0.hook_resid_post"][0]) > 0
            without_bos.append(fires[1:].any(dim=0))
            with_bos.append(fires.any(dim=0))
    assert torch.equal(got, torch.stack(without_bos))
    assert not torch.equal(got, torch.stack(with_bos))  # the BOS outlier fires latents of its own


def test_sae_quality_equals_brute_force(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    sae = saes[1]
    quality = sae_quality(model, sae, TEXTS, batch_size=4)
    acts, recons, codes = [], [], []
    with torch.no_grad():
        for text in TEXTS:
            _, cache = model.run_with_cache(model.to_tokens(text))
            x = cache["blocks.1.hook_resid_post"][0, 1:]
            code = sae.encode(x)
            acts.append(x.double())
            codes.append(code)
            recons.append(sae.decode(code).double())
    x, x_hat, c = torch.cat(acts), torch.cat(recons), torch.cat(codes)
    explained = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(dim=0)) ** 2).sum()
    assert quality.n_tokens == x.shape[0]
    assert quality.explained_variance == pytest.approx(float(explained), abs=TOL)
    assert quality.dead_fraction == pytest.approx(float(((c > 0).sum(dim=0) == 0).float().mean()))
    assert quality.mean_l0 == pytest.approx(float((c > 0).float().sum(dim=1).mean()), abs=TOL)
    assert quality.to_dict()["hook_name"] == "blocks.1.hook_resid_post"


# --- scores, layer choice, select -------------------------------------------------------------


def hand_roles() -> dict[str, RoleStats]:
    """Two roles over 4 latents, with firing counts and code sums chosen by hand (n = 4 and 5)."""

    def role(n: int, code_sum: list[float], fire_count: list[float]) -> RoleStats:
        f64 = torch.float64
        return RoleStats(
            n,
            torch.tensor(code_sum, dtype=f64),
            torch.tensor(fire_count, dtype=f64),
            torch.zeros(2, dtype=f64),
            None,
        )

    return {
        "forget": role(4, [4.0, 2.0, 0.0, 1.0], [4.0, 1.0, 0.0, 2.0]),
        "retain": role(5, [0.0, 5.0, 0.0, 5.0], [0.0, 5.0, 0.0, 1.0]),
        "known": role(4, [1.0, 1.0, 1.0, 1.0], [2.0, 4.0, 0.0, 1.0]),
        "unknown": role(5, [1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 1.0]),
    }


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("mean_diff", [1.0, -0.5, 0.0, -0.75]),
        ("freq_diff", [1.0, -0.75, 0.0, 0.3]),
        (
            "ratio",
            [
                (1 + RATIO_EPS) / RATIO_EPS,
                (0.25 + RATIO_EPS) / (1 + RATIO_EPS),
                1.0,
                (0.5 + RATIO_EPS) / (0.2 + RATIO_EPS),
            ],
        ),
        ("ferrando", [-0.5, 1.0, 0.0, 0.05]),
    ],
)
def test_feature_scores_by_hand(score: str, expected: list[float]) -> None:
    got = feature_scores(hand_roles(), score)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_unknown_feature_score_is_a_clear_error() -> None:
    with pytest.raises(HookunlearnError, match="score 'cosine' is unknown; choose one of mean_diff"):
        feature_scores(hand_roles(), "cosine")


def test_select_topic_scores_and_layer_choice_follow_the_documented_criterion(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    selection = select(model, saes, forget=FORGET, retain=RETAIN, batch_size=4)
    assert selection.objective == "topic" and selection.score == "mean_diff"
    expected = brute_force(model, saes, FORGET), brute_force(model, saes, RETAIN)
    layer_scores = {}
    for layer, chosen in selection.layers.items():
        forget, retain = expected[0][layer], expected[1][layer]
        scores = forget["mean_code"] - retain["mean_code"]
        torch.testing.assert_close(chosen.scores, scores.float(), atol=TOL, rtol=0)
        top = sorted(range(len(scores)), key=lambda j: (-float(chosen.scores[j]), j))[:10]
        assert chosen.ranked()[:10] == top
        layer_scores[layer] = float((forget["freq"] - retain["freq"])[top].mean())
        assert chosen.layer_score == pytest.approx(layer_scores[layer], abs=TOL)
    assert selection.chosen_layer == max(layer_scores, key=lambda lay: layer_scores[lay])
    assert selection.options["top_n"] == 10 and selection.saes[0]["hook_name"] == "blocks.0.hook_resid_post"


def test_select_with_a_forced_layer_and_top_n(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    free = select(model, saes, forget=FORGET, retain=RETAIN, top_n=3)
    other = 1 - free.chosen_layer
    forced = select(model, saes, forget=FORGET, retain=RETAIN, top_n=3, layer=other)
    assert forced.chosen_layer == other and forced.hook == f"blocks.{other}.hook_resid_post"
    assert forced.layers[other].layer_score == pytest.approx(free.layers[other].layer_score)


@pytest.mark.parametrize("objective", ["topic", "entity"])
def test_select_does_not_depend_on_batch_size(
    model: HookedTransformer, saes: dict[int, SAE], objective: str
) -> None:
    inputs: dict[str, Any] = (
        {"forget": FORGET, "retain": RETAIN} if objective == "topic" else {"entities": ENTITY_PROMPTS}
    )
    runs = [select(model, saes, objective=objective, batch_size=b, **inputs) for b in (1, 7, 64)]  # type: ignore[arg-type]
    reference = runs[0]
    for run in runs[1:]:
        assert run.chosen_layer == reference.chosen_layer
        for layer, chosen in reference.layers.items():
            torch.testing.assert_close(run.layers[layer].scores, chosen.scores, atol=TOL, rtol=0)
            assert run.layers[layer].layer_score == pytest.approx(chosen.layer_score, abs=TOL)
            assert run.top_latents(5, layer) == reference.top_latents(5, layer)


def test_select_entity_generic_filter_makes_latents_ineligible(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    selection = select(
        model, saes, objective="entity", entities=ENTITY_PROMPTS, generic=TEXTS, max_generic_rate=0.3
    )
    for chosen in selection.layers.values():
        generic = chosen.roles["generic"]
        assert torch.equal(chosen.eligible, generic.freq < 0.3)
        assert all(bool(chosen.eligible[j]) for j in chosen.ranked())
        torch.testing.assert_close(
            chosen.scores, (chosen.roles["known"].freq - chosen.roles["unknown"].freq).float()
        )
    assert set(selection.chosen.roles) == {
        "known",
        "unknown",
        "known:heldout",
        "unknown:heldout",
        "target",
        "generic",
    }


def test_heldout_scores_name_the_best_latent(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    selection = select(model, saes, objective="entity", entities=ENTITY_PROMPTS)
    chosen = selection.chosen
    best = chosen.ranked()[0]
    expected = chosen.roles["known:heldout"].freq[best] - chosen.roles["unknown:heldout"].freq[best]
    assert selection.heldout_scores() == {
        "latent": best,
        "select_score": float(chosen.scores[best]),
        "heldout_score": float(expected),
    }


def test_select_refuses_an_sae_that_does_not_fit_the_model(model: HookedTransformer) -> None:
    wide = StandardSAE(
        StandardSAEConfig(d_in=24, d_sae=8, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_post"))
    )
    with pytest.raises(SAELoadError) as excinfo:
        select(model, [wide], forget=FORGET, retain=RETAIN)
    message = str(excinfo.value)
    assert "d_in=24" in message and "width 16" in message and "blocks.0.hook_resid_post" in message


def test_select_input_errors_are_clear(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    with pytest.raises(HookunlearnError, match="layer 2 was forced but no SAE is given for it"):
        select(model, saes, forget=FORGET, retain=RETAIN, layer=2)
    with pytest.raises(HookunlearnError, match="score 'ferrando' does not apply to objective 'topic'"):
        select(model, saes, forget=FORGET, retain=RETAIN, score="ferrando")
    with pytest.raises(HookunlearnError, match="needs a forget corpus and a retain corpus"):
        select(model, saes, forget=FORGET)
    with pytest.raises(HookunlearnError, match="two SAEs are given for layer 0"):
        select(model, [saes[0], copy.deepcopy(saes[0])], forget=FORGET, retain=RETAIN)
    with pytest.raises(HookunlearnError, match="no SAEs given"):
        select(model, [], forget=FORGET, retain=RETAIN)
    with pytest.raises(DataError, match="the forget corpus is empty"):
        select(model, saes, forget=[], retain=RETAIN)


def test_top_latents_refuses_k_above_the_eligible_latents(
    model: HookedTransformer, saes: dict[int, SAE]
) -> None:
    selection = select(model, saes, forget=FORGET, retain=RETAIN, layer=1)
    assert len(selection.top_latents(20)) == 20
    with pytest.raises(
        HookunlearnError, match=r"k=21 is more than the 20 eligible latents at layer 1; use a smaller k"
    ):
        selection.top_latents(21)


def test_top_latents_error_names_layer_zero(model: HookedTransformer, saes: dict[int, SAE]) -> None:
    selection = select(model, saes, forget=FORGET, retain=RETAIN, layer=1)
    with pytest.raises(HookunlearnError, match="eligible latents at layer 0;"):
        selection.top_latents(25, layer=0)


# --- Selection save / load --------------------------------------------------------------------


def assert_selections_equal(loaded: Selection, original: Selection) -> None:
    assert (loaded.objective, loaded.score, loaded.chosen_layer) == (
        original.objective,
        original.score,
        original.chosen_layer,
    )
    assert loaded.model == original.model
    assert loaded.data == original.data
    assert loaded.options == original.options
    assert set(loaded.layers) == set(original.layers)
    for layer, chosen in original.layers.items():
        back = loaded.layers[layer]
        assert (back.layer, back.hook, back.layer_score) == (chosen.layer, chosen.hook, chosen.layer_score)
        assert torch.equal(back.scores, chosen.scores) and back.scores.dtype == chosen.scores.dtype
        assert torch.equal(back.eligible, chosen.eligible) and back.eligible.dtype == torch.bool
        assert set(back.roles) == set(chosen.roles)
        for role, stats in chosen.roles.items():
            assert back.roles[role].n == stats.n
            for name in ("code_sum", "fire_count", "resid_sum", "resid_outer"):
                a, b = getattr(back.roles[role], name), getattr(stats, name)
                assert (a is None) == (b is None), name
                assert a is None or torch.equal(a, b), name
    assert loaded.feature_table(n=50) == original.feature_table(n=50)
    assert loaded.heldout_scores() == original.heldout_scores()


@pytest.mark.parametrize(
    "objective",
    ["topic", "entity"],
)
def test_selection_save_load_round_trip(
    model: HookedTransformer, saes: dict[int, SAE], objective: str, tmp_path: Path
) -> None:
    inputs: dict[str, Any] = (
        {"forget": FORGET, "retain": RETAIN} if objective == "topic" else {"entities": ENTITY_PROMPTS}
    )
    data = {"forget": {"spec": "hand", "n_items": 6}}
    selection = select(model, saes, objective=objective, data=data, **inputs)  # type: ignore[arg-type]
    out = selection.save(tmp_path / "sel")
    assert sorted(p.name for p in out.iterdir()) == [
        "features.json",
        "latents.json",
        "manifest.json",
        "report.html",
        "scores.png",
        "tensors.safetensors",
    ]
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    features = json.loads((out / "features.json").read_text())
    assert features == json.loads(json.dumps(selection.feature_table(n=50)))
    assert [row["latent"] for row in features] == selection.chosen.ranked()[:50]

    loaded = Selection.load(out)
    assert_selections_equal(loaded, selection)
    assert loaded.latents == json.loads(json.dumps(selection.latents))
    for layer, info in selection.saes.items():
        for key in ("hook_name", "d_in", "d_sae", "architecture"):
            assert loaded.saes[layer][key] == info[key]


def test_selection_round_trip_keeps_the_sae_descriptions(
    model: HookedTransformer, saes: dict[int, SAE], tmp_path: Path
) -> None:
    selection = select(model, saes, forget=FORGET, retain=RETAIN)
    loaded = Selection.load(selection.save(tmp_path / "sel"))
    assert loaded.saes == selection.saes


def test_selection_save_refuses_an_existing_directory(
    model: HookedTransformer, saes: dict[int, SAE], tmp_path: Path
) -> None:
    selection = select(model, saes, forget=FORGET, retain=RETAIN)
    out = selection.save(tmp_path / "sel")
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        selection.save(out)
    selection.save(out, force=True)
    assert Selection.load(out).chosen_layer == selection.chosen_layer
