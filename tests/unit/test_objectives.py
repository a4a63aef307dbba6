"""Fast unit tests of the trainer and of every registered objective on a tiny random-init
GPT-2-architecture HookedTransformer (seconds in all; the quick-world integration tests in
tests/integration/test_unlearn_methods.py cover the same methods on a trained model)."""

from __future__ import annotations

import sys

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hookunlearn.errors import HookunlearnError
from hookunlearn.interventions import INTERVENTIONS, get_intervention
from hookunlearn.objectives import METHODS, MethodSpec, get_objective, method_spec
from hookunlearn.objectives.base import ObjectiveContext, StepInputs
from hookunlearn.options import config_from_options, parse_option
from hookunlearn.pipeline.unlearn import method_config, unlearn_model
from hookunlearn.subspace import Basis, Subspace
from hookunlearn.tokens import TokenData, batch_indices
from hookunlearn.train import TrainConfig, Trainer
from tests.fixtures_hf import TOKENIZER_VOCAB_SIZE, make_tiny_tokenizer

D_MODEL, D_SAE, LAYER = 16, 32, 1


def _model(seed: int = 0) -> HookedTransformer:
    torch.manual_seed(seed)
    cfg = HookedTransformerConfig.from_dict(
        {
            "n_layers": 3, "d_model": D_MODEL, "n_heads": 2, "d_head": 8, "d_mlp": 32, "d_vocab": TOKENIZER_VOCAB_SIZE,
            "n_ctx": 16, "act_fn": "gelu_new", "normalization_type": "LN", "device": "cpu",
            "original_architecture": "GPT2LMHeadModel", "seed": seed,
        }
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


def _data(seed: int, n: int = 12, width: int = 10) -> TokenData:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, TOKENIZER_VOCAB_SIZE, (n, width), generator=generator)
    mask = torch.ones(n, width, dtype=torch.bool)
    mask[:, 0] = False  # BOS-like first position is never read
    return TokenData(tokens, mask)


def _sae() -> StandardSAE:
    torch.manual_seed(1)
    cfg = StandardSAEConfig(
        d_in=D_MODEL, d_sae=D_SAE, metadata=SAEMetadata(hook_name=f"blocks.{LAYER}.hook_resid_post")
    )
    return StandardSAE(cfg)


def _subspace() -> Subspace:
    q, _ = torch.linalg.qr(torch.randn(D_MODEL, 8, generator=torch.Generator().manual_seed(2)))
    rel, irr = q[:, :4].contiguous(), q[:, 4:].contiguous()
    codes = torch.rand(2, D_SAE, generator=torch.Generator().manual_seed(3))
    return Subspace(
        layer=LAYER,
        hook=f"blocks.{LAYER}.hook_resid_post",
        k=4,
        relevant=Basis([0, 1, 2, 3], [], rel, [1.0] * 4),
        irrelevant=Basis([4, 5, 6, 7], [], irr, [1.0] * 4),
        centroids={"code_known_all": codes[0], "code_unknown_all": codes[1]},
    )


def _context(model: HookedTransformer, spec: MethodSpec, forget: TokenData) -> ObjectiveContext:
    extra = {}
    if spec.needs_reference_nll:
        from hookunlearn.tokens import sequence_nll

        extra["reference_nll"] = sequence_nll(model, forget)
    return ObjectiveContext(
        d_model=D_MODEL, layer=LAYER, seed=0, subspace=_subspace(), sae=_sae(), extra=extra
    )


# ---------------------------------------------------------------------------------------------
# The registry


def test_registry_is_torch_free_and_declares_every_method() -> None:
    import subprocess

    code = (
        "import sys, hookunlearn.objectives, hookunlearn.interventions, hookunlearn.sources, "
        "hookunlearn.options, hookunlearn.hooks, hookunlearn.entities, hookunlearn.architectures; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name, spec in METHODS.items():
        assert spec.name == name
        assert spec.kind in ("activation", "output")
        assert set(spec.forget) <= {"corpus", "entities"} and spec.forget
        assert set(spec.retain) <= {"corpus", "entities"}
        cls = get_objective(name)
        assert cls.spec is spec
        assert cls.__module__ == spec.module


def test_two_registry_lines_may_share_a_module_without_sharing_a_declaration(monkeypatch) -> None:
    import dataclasses

    from hookunlearn import objectives

    copy = dataclasses.replace(METHODS["rmu"], name="rmu_copy")
    monkeypatch.setitem(objectives.METHODS, "rmu_copy", copy)
    monkeypatch.setattr(objectives, "_CLASSES", dict(objectives._CLASSES))
    assert get_objective("rmu_copy").spec is copy
    assert get_objective("rmu").spec is METHODS["rmu"]


def test_unknown_method_and_option_are_clear_errors() -> None:
    with pytest.raises(HookunlearnError, match="choose one of sspu"):
        method_spec("nope")
    with pytest.raises(HookunlearnError, match=r"method 'rmu' has no option\(s\) bogus; its options: alpha"):
        method_config("rmu", {"bogus": 1})
    config = method_config("sspu", {"alpha": 100})
    assert isinstance(config.alpha, float)


def test_options_parser() -> None:
    assert parse_option("alpha=100") == ("alpha", 100)
    assert parse_option(" regularizer = hard") == ("regularizer", " hard")
    assert parse_option("name=[1, 2]") == ("name", [1, 2])
    with pytest.raises(HookunlearnError, match="use KEY=VALUE"):
        parse_option("alpha")


def test_interventions_registry_has_typed_options() -> None:
    assert "clamp" in INTERVENTIONS
    module = get_intervention("clamp")
    with pytest.raises(HookunlearnError, match=r"intervention 'clamp' has no option\(s\) multipler"):
        config_from_options(module.Config, {"multipler": 5}, "intervention 'clamp'")
    config = config_from_options(module.Config, {"multiplier": 5}, "intervention 'clamp'")
    intervention = module.INTERVENTION.from_subspace(_subspace_with_sae_spec(), config)
    assert intervention.multiplier == 5.0 and intervention.latents == [0, 1, 2, 3]


def _subspace_with_sae_spec() -> Subspace:
    subspace = _subspace()
    subspace.sae = {"spec": "some/sae"}
    return subspace


# ---------------------------------------------------------------------------------------------
# Every objective on the tiny model


@pytest.mark.parametrize("name", list(METHODS))
def test_objective_loss_is_finite_and_has_a_gradient(name: str) -> None:
    model = _model()
    spec = METHODS[name]
    forget, retain = _data(0), _data(1)
    objective = get_objective(name)(method_config(name), _context(model, spec, forget))
    trainer = Trainer(
        model, objective, layer=LAYER, forget=forget, retain=retain, config=TrainConfig(steps=1)
    )
    inputs = trainer._inputs(forget.batch(torch.arange(4)), retain.batch(torch.arange(4)))
    assert isinstance(inputs, StepInputs)
    if spec.kind == "activation":
        assert inputs.forget_resid is not None and inputs.forget_logits is None
    else:
        assert inputs.forget_logits is not None and inputs.forget_resid is None
        assert (inputs.retain_logits is not None) == bool(spec.retain)
    terms = objective.loss(inputs)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = [p.grad for p in trainer.params.values()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), f"{name}: no gradient"


@pytest.mark.parametrize("name", list(METHODS))
def test_unlearn_model_lowers_the_loss_and_trains_only_the_chosen_tensors(name: str) -> None:
    model = _model()
    spec = METHODS[name]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts_forget = ["a b c d e f", "g h i j k", "l m n o p q r"] * 4
    texts_retain = ["s t u v w", "x y z a b c", "d e f g"] * 4
    from hookunlearn.entities import EntityPrompt

    targets = [EntityPrompt("Ann Bel was born", 7, "target", "select", 0)] * 4
    known = [EntityPrompt("Cal Dun was born", 7, "known", "select", 0)] * 4
    model.tokenizer = make_tiny_tokenizer()
    result = unlearn_model(
        model,
        name,
        subspace=_subspace(),
        sae=_sae() if spec.needs_sae else None,
        forget=texts_forget,
        retain=texts_retain,
        targets=targets if "entities" in spec.forget else None,
        known=known if "entities" in spec.retain else None,
        train=TrainConfig(steps=12, lr=1e-2, batch_size=4),
    )
    log = result.train.log
    assert len(log) == 12
    assert log[-1]["loss"] < log[0]["loss"], f"{name}: {log[0]['loss']} -> {log[-1]['loss']}"
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_out"}
    assert set(result.initial) == changed
    for n in changed:
        assert torch.equal(result.initial[n], before[n])


# ---------------------------------------------------------------------------------------------
# The trainer


def _trainer(model: HookedTransformer, name: str, options: dict | None = None, *, steps: int) -> Trainer:
    objective = get_objective(name)(method_config(name, options), _context(model, METHODS[name], _data(0)))
    return Trainer(
        model,
        objective,
        layer=LAYER,
        forget=_data(0),
        retain=_data(1),
        config=TrainConfig(steps=steps, batch_size=4),
    )


def test_activation_objectives_never_run_blocks_above_the_hooked_layer() -> None:
    model = _model()
    calls: list[int] = []
    for index, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_args, i=index: calls.append(i))
    _trainer(model, "rmu", steps=2).run()
    assert calls and max(calls) <= LAYER


def test_trainer_batches_are_deterministic_per_seed_and_step() -> None:
    first = batch_indices(10, 4, step=3, seed=7)
    assert torch.equal(first, batch_indices(10, 4, step=3, seed=7))
    assert not torch.equal(first, batch_indices(10, 4, step=3, seed=8))
    epoch = torch.cat([batch_indices(10, 5, step=s, seed=0) for s in range(2)])
    assert sorted(epoch.tolist()) == list(range(10))  # one epoch covers every row once


def test_trainer_refuses_a_trainable_layer_above_the_hook() -> None:
    model = _model()
    objective = get_objective("rmu")(method_config("rmu"), _context(model, METHODS["rmu"], _data(0)))
    with pytest.raises(HookunlearnError):
        Trainer(
            model,
            objective,
            layer=LAYER,
            forget=_data(0),
            retain=_data(1),
            config=TrainConfig(steps=1, trainable_layers=(2,)),
        )


def test_sspu_hard_regularizer_projects_updates_onto_the_relevant_span() -> None:
    model = _model()
    trainer = _trainer(model, "sspu", {"regularizer": "hard"}, steps=5)
    trainer.run()
    projector = _subspace().relevant.projector()
    for name, param in trainer.params.items():
        delta = param.detach() - trainer.initial[name]
        assert float(delta.abs().max()) > 0
        assert torch.allclose(delta @ projector, delta, atol=1e-5)
