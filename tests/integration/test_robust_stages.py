"""Robustness stages on the quick world's trained model: every stage composes with an activation
and an output method, and distill reads the world's own training text without the forget units."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hookunlearn.data import load_texts
from hookunlearn.models import load_model
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.robust.distill import oracle_training_tokens, world_texts
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig


@pytest.fixture(scope="module")
def setup(quick_world: Path) -> dict:
    data = quick_world / "data"
    model = load_model(quick_world / "model", device="cpu")
    saes = {
        layer: load_sae(quick_world / "saes" / f"layer_{layer}", model) for layer in range(model.cfg.n_layers)
    }
    forget = load_texts(data / "forget_corpus.jsonl")
    retain = load_texts(data / "retain_corpus.jsonl")
    topic = select(model, saes, forget=forget, retain=retain, layer=1)
    return {"forget": forget[:48], "retain": retain[:48], "topic": build(topic, saes[1], k=8)}


@pytest.mark.parametrize("method", ["sspu", "graddiff"])
@pytest.mark.parametrize("stage", ["sam", "lat:steps=2", "cir:warmup_batches=2,refresh_every=2"])
def test_each_trainer_stage_composes_with_each_kind_of_method(
    setup, quick_world: Path, method, stage
) -> None:
    model = load_model(quick_world / "model", device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = unlearn_model(
        model,
        method,
        subspace=setup["topic"],
        layer=1,
        forget=setup["forget"],
        retain=setup["retain"],
        train=TrainConfig(steps=3, batch_size=4),
        stages=[stage],
    )
    name = stage.split(":")[0]
    assert [s["name"] for s in result.stages] == [name]
    assert result.stages[0]["cost"], result.stages
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_out"}
    assert all(torch.isfinite(torch.tensor(row["total"])) for row in result.train.log)


def test_distill_on_the_world_text_without_the_forget_units(setup, quick_world: Path) -> None:
    texts = world_texts(quick_world, tokens=2000, n_ctx=32, seed=0)
    forget_lines = set(load_texts(quick_world / "data" / "forget_corpus.jsonl"))
    assert texts and not forget_lines & set(texts)  # no forget unit among them
    model = load_model(quick_world / "model", device="cpu")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = unlearn_model(
        model,
        "rmu",
        layer=1,
        forget=setup["forget"],
        retain=setup["retain"],
        train=TrainConfig(steps=2, batch_size=4),
        stages=["distill:tokens=2048,batch_size=8,n_ctx=32"],
        world_dir=quick_world,
    )
    cost = result.stages[0]["cost"]
    assert cost["tokens"] == 8 * 8 * 32 and cost["cost_forward_equivalents"] == 4 * cost["tokens"]
    oracle = oracle_training_tokens(quick_world)
    assert oracle and cost["oracle_cost_forward_equivalents"] == 3 * oracle
    assert cost["cost_vs_oracle"] == pytest.approx(cost["tokens"] * 4 / (3 * oracle))
    # every tensor the student replaced is in `initial`, with its base value
    assert "blocks.1.attn.W_Q" in result.initial and "blocks.1.attn.W_Q" in result.changed
    for name, value in result.initial.items():
        if name in base:
            assert torch.equal(value, base[name])
