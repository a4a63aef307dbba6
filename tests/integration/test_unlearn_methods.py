"""Every method on the quick world: it reduces its own loss, touches only its parameters,
resumes to the same result, stops on NaN; the hard regulariser keeps updates in span(U_rel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.errors import HookunlearnError
from hookunlearn.models import load_model
from hookunlearn.objectives import METHODS
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig, TrainingDivergedError

WEIGHT_METHODS = list(METHODS)


@pytest.fixture(scope="module")
def setup(quick_world: Path):
    data = quick_world / "data"
    model = load_model(quick_world / "model", device="cpu")
    saes = {
        layer: load_sae(quick_world / "saes" / f"layer_{layer}", model) for layer in range(model.cfg.n_layers)
    }
    forget = load_texts(data / "forget_corpus.jsonl")
    retain = load_texts(data / "retain_corpus.jsonl")
    topic = select(model, saes, forget=forget, retain=retain, layer=1)
    topic_sub = build(topic, saes[1], k=8)
    prompts = parse_entity_prompts(load_records(data / "entity_prompts.jsonl"), "entity_prompts")
    entity = select(model, saes, objective="entity", entities=prompts, layer=1)
    entity_sub = build(entity, saes[1], k=4)
    return {
        "dir": quick_world / "model",
        "saes": saes,
        "forget": forget,
        "retain": retain,
        "topic": topic_sub,
        "entity": entity_sub,
        "targets": [p for p in prompts if p.set == "target"],
        "known": [p for p in prompts if p.set == "known"],
    }


def _run(setup, method: str, train: TrainConfig, **kwargs):
    model = load_model(setup["dir"], device="cpu")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sub = setup["entity"] if METHODS[method].subspace == "entity" else setup["topic"]
    result = unlearn_model(
        model,
        method,
        subspace=sub,
        sae=setup["saes"][1],
        layer=1,
        forget=setup["forget"][:64],
        retain=setup["retain"][:64],
        targets=setup["targets"],
        known=setup["known"],
        train=train,
        **kwargs,
    )
    return model, before, result


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_method_reduces_its_loss_and_touches_only_its_parameters(setup, method: str) -> None:
    train = TrainConfig(steps=30, lr=3e-3, batch_size=8, seed=0)
    model, before, result = _run(setup, method, train)
    log = result.train.log
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < first, f"{method}: loss {first:.4f} -> {last:.4f}"
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_out"}  # layers l-2..l clipped at 0, l = 1
    assert set(result.changed) == changed


def test_trainable_parameter_selection(setup) -> None:
    train = TrainConfig(steps=3, lr=1e-3, trainable_layers=(1,), trainable=("attn.W_O", "mlp.W_out"))
    model, before, _ = _run(setup, "rmu", train)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == {"blocks.1.attn.W_O", "blocks.1.mlp.W_out"}
    with pytest.raises(HookunlearnError, match="does not exist; parameters of a block"):
        _run(setup, "rmu", TrainConfig(steps=1, trainable=("mlp.W_nope",)))
    with pytest.raises(HookunlearnError, match="above the hooked layer"):
        unlearn_model(
            load_model(setup["dir"]),
            "rmu",
            layer=0,
            forget=["a b"],
            retain=["c d"],
            train=TrainConfig(steps=1, trainable_layers=(1,)),
        )


def test_hard_regularizer_keeps_updates_in_relevant_span(setup) -> None:
    train = TrainConfig(steps=10, lr=5e-3)
    model, before, _ = _run(setup, "sspu", train, options={"regularizer": "hard"})
    u_rel = setup["topic"].U_rel.double()
    complement = torch.eye(u_rel.shape[0], dtype=torch.float64) - u_rel @ u_rel.T
    for name in ("blocks.0.mlp.W_out", "blocks.1.mlp.W_out"):
        delta = (dict(model.named_parameters())[name].detach() - before[name]).double()
        assert delta.norm() > 0
        assert (delta @ complement).norm() / delta.norm() < 1e-5


def test_resume_reaches_the_same_result(setup, tmp_path: Path) -> None:
    full_model, _, full = _run(setup, "sspu", TrainConfig(steps=8, lr=3e-3, seed=3))
    stage = tmp_path / "run"
    first_model, _, _ = _run(
        setup, "sspu", TrainConfig(steps=4, lr=3e-3, seed=3, checkpoint_every=2), out_dir=stage
    )
    resumed_model, _, resumed = _run(
        setup, "sspu", TrainConfig(steps=8, lr=3e-3, seed=3, checkpoint_every=2), out_dir=stage, resume=True
    )
    assert resumed.train.resumed_from == 4
    for (name, p), (_, q) in zip(
        full_model.named_parameters(), resumed_model.named_parameters(), strict=True
    ):
        assert torch.allclose(p, q, atol=1e-6), name
    # the log of a resumed run is the whole run's: the checkpoint's rows, then the new ones
    assert [round(r["loss"], 5) for r in resumed.train.log] == [round(r["loss"], 5) for r in full.train.log]
    assert [r["step"] for r in resumed.train.log] == list(range(1, 9))
    lines = (stage / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 8


def test_nan_loss_stops_with_clear_error_and_restores_weights(setup, tmp_path: Path) -> None:
    model = load_model(setup["dir"], device="cpu")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(TrainingDivergedError, match="became nan at step 1; .*no checkpoint was written"):
        unlearn_model(
            model,
            "rmu",
            layer=1,
            forget=setup["forget"][:8],
            retain=setup["retain"][:8],
            options={"steering_coeff": float("nan")},
            train=TrainConfig(steps=3),
            out_dir=tmp_path / "r",
        )
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_unknown_method_and_option(setup) -> None:
    with pytest.raises(HookunlearnError, match="not a weight-editing method"):
        unlearn_model(load_model(setup["dir"]), "bogus", layer=1, forget=["a"], retain=["b"])
    with pytest.raises(HookunlearnError, match="has no option\\(s\\) colour"):
        unlearn_model(
            load_model(setup["dir"]), "rmu", layer=1, forget=["a"], retain=["b"], options={"colour": 1}
        )
    with pytest.raises(HookunlearnError, match="needs a subspace"):
        unlearn_model(load_model(setup["dir"]), "sspu", layer=1, forget=["a"], retain=["b"])


def test_entity_span_mask_covers_the_whole_name(setup) -> None:
    from hookunlearn.tokens import concat_token_data, tokenize_entity_spans, tokenize_texts

    model = load_model(setup["dir"], device="cpu")
    bare = next(p for p in setup["targets"] if p.entity_start_char is not None)
    name = bare.prompt[bare.entity_start_char : bare.entity_end_char]
    prompt = f"The person {name}"  # the prefix must stay outside the span
    spans = tokenize_entity_spans(model, [prompt], [len("The person ")], [len(prompt)])
    first = int(spans.mask[0].nonzero()[0])
    assert model.tokenizer.decode(spans.tokens[0, 1:first].tolist()).strip() == "The person"
    masked = spans.tokens[0][spans.mask[0]].tolist()
    assert model.tokenizer.decode(masked).strip() == name
    last_only = tokenize_entity_spans(model, [prompt], [None], [len(prompt)])
    assert int(last_only.mask.sum()) == 1
    both = concat_token_data([spans, tokenize_texts(model, ["a much longer text than the name alone"])])
    assert both.tokens.shape[0] == 2 and both.mask.shape == both.tokens.shape
    assert torch.equal(both.mask[0, : spans.mask.shape[1]], spans.mask[0])
    assert not both.mask[0, spans.mask.shape[1] :].any()


def test_align_from_corpora_alone_moves_target_codes_towards_unknown(setup, quick_world: Path) -> None:
    from hookunlearn.selection import entity_stats

    data = quick_world / "data"
    forget = load_texts(data / "forget_entities_corpus.jsonl")
    retain = load_texts(data / "retain_entities_corpus.jsonl")
    sub, sae = setup["entity"], setup["saes"][1]
    model = load_model(setup["dir"], device="cpu")

    def distances() -> tuple[float, float]:
        code = entity_stats(model, {1: sae}, setup["targets"])[1]["target"].mean_code
        return (
            float((code - sub.centroids["code_unknown_all"]).norm()),
            float((code - sub.centroids["code_known_all"]).norm()),
        )

    unknown_before, known_before = distances()
    result = unlearn_model(
        model,
        "align",
        subspace=sub,
        sae=sae,
        forget=forget,
        retain=retain,
        train=TrainConfig(steps=40, lr=3e-3, batch_size=8),
    )
    unknown_after, known_after = distances()
    assert unknown_after < unknown_before and known_after > known_before
    assert result.train.log[-1]["to_unknown"] < result.train.log[0]["to_unknown"]
    with pytest.raises(HookunlearnError, match="target-entity prompts and/or a forget corpus"):
        unlearn_model(load_model(setup["dir"]), "align", subspace=sub, sae=sae, retain=retain)
    with pytest.raises(HookunlearnError, match="retain corpus to preserve"):
        unlearn_model(load_model(setup["dir"]), "align", subspace=sub, sae=sae, forget=forget)


def test_trainer_reads_the_subspace_hook_as_a_block_output(setup) -> None:
    from hookunlearn.hooks import trainer_layer

    assert trainer_layer("blocks.3.hook_resid_post") == 3
    assert trainer_layer("blocks.8.hook_resid_pre") == 7  # the same tensor as block 7's output
    with pytest.raises(HookunlearnError, match="not on the residual stream"):
        trainer_layer("blocks.2.hook_mlp_out")
    with pytest.raises(HookunlearnError, match="embedding output"):
        trainer_layer("blocks.0.hook_resid_pre")
    with pytest.raises(HookunlearnError, match="leave the layer unset or pass 1"):
        unlearn_model(
            load_model(setup["dir"]), "sspu", subspace=setup["topic"], layer=0, forget=["a b"], retain=["c d"]
        )


def test_align_sends_no_gradient_into_the_sae(setup, quick_world: Path) -> None:
    data = quick_world / "data"
    sae = setup["saes"][1]
    unlearn_model(
        load_model(setup["dir"], device="cpu"),
        "align",
        subspace=setup["entity"],
        sae=sae,
        forget=load_texts(data / "forget_entities_corpus.jsonl")[:16],
        retain=load_texts(data / "retain_entities_corpus.jsonl")[:16],
        train=TrainConfig(steps=2, batch_size=4),
    )
    assert all(p.grad is None and not p.requires_grad for p in sae.parameters())


def test_reference_path_is_the_base_model_after_training(setup) -> None:
    from hookunlearn.objectives import get_objective
    from hookunlearn.objectives.base import ObjectiveContext
    from hookunlearn.pipeline.unlearn import method_config
    from hookunlearn.tokens import tokenize_texts
    from hookunlearn.train import Trainer

    model = load_model(setup["dir"], device="cpu")
    base = load_model(setup["dir"], device="cpu")
    forget, retain = tokenize_texts(model, setup["forget"][:16]), tokenize_texts(model, setup["retain"][:16])
    objective = get_objective("rmu")(
        method_config("rmu"), ObjectiveContext(d_model=model.cfg.d_model, layer=1, seed=0)
    )
    trainer = Trainer(
        model, objective, layer=1, forget=forget, retain=retain, config=TrainConfig(steps=5, lr=1e-2)
    )
    trainer.run()
    assert not torch.equal(model.blocks[1].mlp.W_out, base.blocks[1].mlp.W_out)
    batch = retain.batch(torch.arange(8))
    inputs = trainer._inputs(forget.batch(torch.arange(8)), batch)
    with torch.no_grad():
        expected = base(batch.tokens, stop_at_layer=2)
    assert torch.allclose(inputs.retain_resid_ref, expected, atol=1e-6)
    assert not torch.allclose(inputs.retain_resid.detach(), expected, atol=1e-4)  # the live path did change
