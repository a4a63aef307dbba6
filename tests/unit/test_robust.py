"""Robustness stages (hookunlearn.robust): each does what its module says, on a tiny random-init
GPT-2-architecture model (seconds in all)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hookunlearn.errors import HookunlearnError
from hookunlearn.objectives import METHODS, get_objective
from hookunlearn.pipeline.unlearn import method_config
from hookunlearn.robust import STAGES, StageRef, check_stages, get_stage, parse_stage, pipeline_name
from hookunlearn.robust.base import MicroBatch, StageContext, forget_part, predicting_mask
from hookunlearn.robust.cir import CIR, CIRConfig, orthonormal_basis, project_gradient
from hookunlearn.robust.distill import DistillConfig, distill, kl_to_teacher, shrink_perturb, xavier_bound
from hookunlearn.robust.lat import LAT, LATConfig
from hookunlearn.robust.sam import SAM, SAMConfig
from hookunlearn.tokens import mean_token_nll
from hookunlearn.train import TrainConfig, Trainer
from tests.unit.test_objectives import LAYER, _context, _data, _model, _subspace


def _trainer(model, name: str, stages=(), *, steps: int = 3, **train) -> Trainer:
    objective = get_objective(name)(method_config(name), _context(model, METHODS[name], _data(0)))
    return Trainer(
        model,
        objective,
        layer=LAYER,
        forget=_data(0),
        retain=_data(1),
        config=TrainConfig(steps=steps, batch_size=4, **train),
        stages=stages,
    )


# --- the registry ---------------------------------------------------------------------------


def test_every_registered_stage_has_a_config_and_a_class() -> None:
    for name, spec in STAGES.items():
        module = get_stage(name)
        assert dataclasses.is_dataclass(module.Config), name
        assert module.STAGE.Config is module.Config
        assert spec.where in ("trainer", "after")


def test_parse_stage_reads_name_and_options() -> None:
    ref = parse_stage("lat:eps=2.5,space=full")
    assert ref == StageRef("lat", {"eps": 2.5, "space": "full"})
    assert parse_stage("sam").options == {}
    assert pipeline_name("sspu", [ref, parse_stage("distill")]) == "sspu+lat+distill"


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (["nope"], "stage 'nope' does not exist"),
        (["sam:radius=1"], "has no option(s) radius"),
        (["sam", "sam"], "named twice"),
        (["distill", "sam"], "come before"),
        (["sam", "cir"], "both compute"),
    ],
)
def test_bad_stage_lists_are_clear_errors(stages, message) -> None:
    with pytest.raises(HookunlearnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_stages(stages)


def test_two_gradient_stages_are_refused() -> None:
    model = _model()
    with pytest.raises(HookunlearnError, match="both compute"):
        _trainer(model, "ga", [SAM(SAMConfig(), StageContext()), CIR(CIRConfig(), StageContext())])


def test_without_a_retain_term_the_forget_part_is_the_whole_loss() -> None:
    forget, retain = _data(0).batch(torch.arange(4)), _data(1).batch(torch.arange(4))
    losses, _ = _trainer(_model(), "ga").losses(forget, retain)
    assert "retain_term" not in losses and forget_part(losses) is losses["loss"]


@pytest.mark.parametrize("name", [name for name, spec in METHODS.items() if spec.retain])
def test_the_forget_part_is_the_loss_without_its_retain_term(name: str) -> None:
    forget, retain = _data(0).batch(torch.arange(4)), _data(1).batch(torch.arange(4))

    def moved(trainer: Trainer) -> Trainer:  # off the initial weights, so the retain term is not 0
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in trainer.params.values():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
        return trainer

    losses, _ = moved(_trainer(_model(), name)).losses(forget, retain)
    assert losses["retain_term"].requires_grad and float(losses["retain_term"]) > 0
    trainer = moved(_trainer(_model(), name))
    trainer.objective = get_objective(name)(
        method_config(name, {"alpha": 0.0}), _context(_model(), METHODS[name], _data(0))
    )
    alone, _ = trainer.losses(forget, retain)
    assert float(forget_part(losses)) == pytest.approx(float(alone["loss"]), rel=1e-5, abs=1e-6)


# --- SAM ------------------------------------------------------------------------------------


def test_sam_takes_the_forget_gradient_at_the_perturbed_weights_and_the_retain_one_at_theta() -> None:
    model = _model()
    rho = 0.05
    trainer = _trainer(model, "graddiff")
    stage = SAM(SAMConfig(rho=rho), StageContext())
    forget, retain = trainer.forget.batch(torch.arange(4)), trainer.retain.batch(torch.arange(4))
    params = list(trainer.params.values())
    before = [p.detach().clone() for p in params]

    losses, total = trainer.losses(forget, retain)
    stage.backward(trainer, MicroBatch(forget, retain, None, losses, total, 1))
    got = [p.grad.clone() for p in params]
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))  # weights restored

    # by hand: e = rho g_f / |g_f| at theta; forget grad at theta + e; retain grad at theta
    losses, total = trainer.losses(forget, retain)
    g_f = torch.autograd.grad(forget_part(losses), params, retain_graph=True)
    g_r = torch.autograd.grad(losses["retain_term"], params)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in g_f]))
    with torch.no_grad():
        for p, g in zip(params, g_f, strict=True):
            p.add_(rho * g / norm)
    losses, _ = trainer.losses(forget, retain)
    g_adv = torch.autograd.grad(forget_part(losses), params)
    expected = [a + r for a, r in zip(g_adv, g_r, strict=True)]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # and it is not the plain gradient
    plain = [f + r for f, r in zip(g_f, g_r, strict=True)]
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(got, plain, strict=True))


def test_sam_runs_in_the_trainer_and_records_its_cost() -> None:
    model = _model()
    result = _trainer(model, "rmu", [SAM(SAMConfig(), StageContext())], steps=3).run()
    assert result.stages["sam"]["extra_passes"] == 3
    assert "retain_term" not in result.log[-1]  # a part of the loss, not a logged term
    accumulated = _trainer(_model(), "rmu", [SAM(SAMConfig(), StageContext())], steps=3, grad_accum=2).run()
    assert accumulated.stages["sam"]["extra_passes"] == 6  # once per micro-batch


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan"), float("inf")])
def test_sam_refuses_a_bad_radius(rho: float) -> None:
    with pytest.raises(HookunlearnError, match="rho"):
        SAMConfig(rho=rho)
    with pytest.raises(HookunlearnError, match="rho"):
        check_stages([f"sam:rho={rho}"])


# --- LAT ------------------------------------------------------------------------------------


def test_lat_perturbation_stays_in_the_relevant_span_and_the_ball_and_restores_the_forget_text() -> None:
    model = _model()
    subspace = _subspace()
    trainer = _trainer(model, "rmu")
    eps = 0.5
    stage = LAT(LATConfig(eps=eps, steps=10, lr=0.1, space="relevant"), StageContext(subspace=subspace))
    stage.setup(trainer)
    forget = trainer.forget.batch(torch.arange(4))
    forget.mask[:, :4] = False  # a span in the middle: the loss reads positions 3..9 only
    at, delta = stage.perturbation(trainer, forget)
    assert at == LAYER  # the hooked layer's input, as the reference
    u = subspace.U_rel.float()
    outside = delta - (delta @ u) @ u.T
    assert float(outside.abs().max()) < 1e-5  # inside span(U_rel)
    assert float(delta.norm(dim=-1).max()) <= eps + 1e-5  # inside the per-token ball
    assert float(delta.norm(dim=-1).max()) > 0.5 * eps  # and it used its budget
    reads = predicting_mask(forget.mask)
    assert torch.equal(delta[~reads], torch.zeros_like(delta[~reads]))  # positions no loss reads untouched
    resid = trainer.resid_at(forget, at)

    def nll(d):
        logits = model(resid + d, start_at_layer=at, return_type="logits")
        return float(mean_token_nll(logits, forget.tokens, forget.mask))

    assert nll(delta) < nll(torch.zeros_like(delta))  # the adversary brings the forget text back
    assert stage.cost()["adversary_passes"] == 10
    assert (
        float(delta[:, 3].norm()) > 0 and float(delta[:, :3].abs().max()) == 0
    )  # the predicting position too


def test_lat_full_space_needs_no_subspace_and_relevant_does() -> None:
    LAT(LATConfig(space="full"), StageContext())
    with pytest.raises(HookunlearnError, match="needs a subspace"):
        LAT(LATConfig(space="relevant"), StageContext())


def test_lat_refuses_a_layer_the_loss_cannot_see() -> None:
    model = _model()
    stage = LAT(LATConfig(space="full", layer=LAYER + 1), StageContext())
    with pytest.raises(HookunlearnError, match="above the layer"):
        _trainer(model, "rmu", [stage]).run()


@pytest.mark.parametrize(("name", "layer"), [("rmu", None), ("ga", None), ("rmu", 0)])
def test_lat_perturbs_the_loss_the_method_trains_on(name: str, layer: int | None) -> None:
    model = _model()
    trainer = _trainer(model, name)
    forget, retain = trainer.forget.batch(torch.arange(4)), trainer.retain.batch(torch.arange(4))
    stage = LAT(LATConfig(eps=1.0, steps=3, space="full", layer=layer), StageContext())
    stage.setup(trainer)
    perturbation = stage.perturbation(trainer, forget)
    assert perturbation[0] == (LAYER if layer is None else layer)
    plain, _ = trainer.losses(forget, retain)
    attacked, _ = trainer.losses(forget, retain, perturbation)
    assert float(forget_part(plain)) != pytest.approx(float(forget_part(attacked)))
    if "retain_term" in plain:  # the retain side runs unperturbed
        assert float(plain["retain_term"]) == pytest.approx(float(attacked["retain_term"]))
    result = _trainer(_model(), name, [LAT(LATConfig(eps=1.0, steps=2, space="full"), StageContext())]).run()
    assert result.stages["lat"]["adversary_passes"] == 3 * 2


# --- CIR ------------------------------------------------------------------------------------


def test_cir_projection_removes_both_sides() -> None:
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(32, 16, generator=generator)
    acts = orthonormal_basis(torch.randn(200, 32, generator=generator) + 3.0, 5)
    outs = orthonormal_basis(torch.randn(200, 16, generator=generator), 4)
    assert acts.shape == (32, 5) and outs.shape == (16, 4)
    torch.testing.assert_close(acts.T @ acts, torch.eye(5), atol=1e-5, rtol=0)
    projected = project_gradient(grad, acts, outs)
    assert float((acts.T @ projected).abs().max()) < 1e-5
    assert float((projected @ outs).abs().max()) < 1e-5
    assert torch.equal(project_gradient(grad, None, None), grad)


def test_cir_projects_the_forget_gradient_in_the_trainer() -> None:
    model = _model()
    stage = CIR(
        CIRConfig(act_components=4, grad_components=3, warmup_batches=2, refresh_every=0), StageContext()
    )
    trainer = _trainer(model, "ga", [stage], steps=1)
    stage.setup(trainer)
    assert set(stage.bases) == set(trainer.params)
    forget, retain = trainer.forget.batch(torch.arange(4)), trainer.retain.batch(torch.arange(4))
    with stage.forward_context(trainer):
        losses, total = trainer.losses(forget, retain)
    stage.backward(trainer, MicroBatch(forget, retain, None, losses, total, 1))
    for name, param in trainer.params.items():
        act_basis, grad_basis = stage.bases[name]
        assert float(param.grad.abs().max()) > 0
        assert float((act_basis.T @ param.grad).abs().max()) < 1e-5
        assert float((param.grad @ grad_basis).abs().max()) < 1e-5
    assert stage.cost()["warmup_passes"] == 2


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_cir_refreshes_once_per_refresh_step_and_runs_in_the_trainer(grad_accum: int) -> None:
    model = _model()
    stage = CIR(
        CIRConfig(act_components=4, grad_components=3, warmup_batches=1, refresh_every=2), StageContext()
    )
    result = _trainer(model, "rmu", [stage], steps=4, grad_accum=grad_accum).run()
    assert result.stages["cir"]["refreshes"] == 1 + 2


def test_cir_captures_the_forget_forward_not_the_retain_or_the_reference() -> None:
    model = _model()
    stage = CIR(
        CIRConfig(act_components=2, grad_components=2, warmup_batches=1, refresh_every=0), StageContext()
    )
    trainer = _trainer(model, "rmu", [stage], steps=1)
    stage.setup(trainer)
    forget, retain = trainer.forget.batch(torch.arange(4)), trainer.retain.batch(torch.arange(4, 8))
    with stage.forward_context(trainer):
        trainer.losses(forget, retain)
    _, cache = model.run_with_cache(forget.tokens, stop_at_layer=LAYER + 1)
    for name in trainer.params:
        layer = name.split(".")[1]
        torch.testing.assert_close(stage._acts[name], cache[f"blocks.{layer}.mlp.hook_post"])


def test_cir_with_no_gradient_directions_projects_the_activation_side_only() -> None:
    grad = torch.randn(8, 6)
    acts = orthonormal_basis(torch.randn(50, 8), 3)
    assert orthonormal_basis(torch.randn(50, 6), 0) is None
    projected = project_gradient(grad, acts, None)
    assert float((acts.T @ projected).abs().max()) < 1e-5


def test_cir_refuses_parameters_it_cannot_project() -> None:
    model = _model()
    stage = CIR(CIRConfig(), StageContext())
    trainer = _trainer(model, "ga", [stage], trainable=("attn.W_O",))
    with pytest.raises(HookunlearnError, match="attn.W_O"):
        trainer.run()


# --- distill --------------------------------------------------------------------------------


def test_shrink_and_perturb_follows_undo() -> None:
    model = _model()
    alpha, beta = 0.4, 0.5
    student = shrink_perturb(model, alpha, beta, seed=0)
    teacher = dict(model.named_parameters())
    for name, param in student.named_parameters():
        base = teacher[name].detach()
        if name.rsplit(".", 1)[-1].startswith("W_"):
            noise = (param.detach() - (1 - alpha) * base) / (alpha * beta)
            assert float(noise.abs().max()) <= xavier_bound(name, param.shape) + 1e-5, name
            assert float(noise.std()) > 0.1 * xavier_bound(name, param.shape), name
        else:
            torch.testing.assert_close(param.detach(), (1 - alpha) * base)
    assert all(
        torch.equal(a, b)
        for a, b in zip(shrink_perturb(model, 0.0, 0.3, 0).parameters(), model.parameters(), strict=True)
    )
    with pytest.raises(HookunlearnError, match="alpha"):
        shrink_perturb(model, 1.5, 0.1, 0)


def test_distill_starts_from_the_perturbed_student_and_moves_it_toward_the_teacher() -> None:
    teacher = _model()
    rows = _data(5, n=80, width=12).tokens
    mask = torch.ones_like(rows, dtype=torch.bool)
    config = DistillConfig(
        alpha=0.5, beta=0.1, tokens=12 * 8 * 30, batch_size=8, n_ctx=12, lr=3e-3, warmup_steps=1
    )
    start = shrink_perturb(teacher, config.alpha, config.beta, config.seed)
    with torch.no_grad():
        kl_start = float(
            kl_to_teacher(start(rows, return_type="logits"), teacher(rows, return_type="logits"), mask)
        )
    student, result = distill(teacher, rows, mask, config, oracle_tokens=10_000)
    with torch.no_grad():
        kl_end = float(
            kl_to_teacher(student(rows, return_type="logits"), teacher(rows, return_type="logits"), mask)
        )
    assert kl_end < 0.5 * kl_start
    assert result.steps == 30 and result.tokens == 30 * 8 * 12
    assert result.cost == 4 * result.tokens and result.oracle_cost == 30_000
    assert result.cost_vs_oracle == pytest.approx(result.cost / 30_000)
    # one step with a vanishing learning rate leaves the perturbed start in place
    same, _ = distill(teacher, rows, mask, dataclasses.replace(config, tokens=1, lr=1e-12))
    for a, b in zip(same.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_demo_pipelines_parse_and_the_control_takes_only_after_stages() -> None:
    from hookunlearn.pipeline.demo import parse_pipeline

    method, stages = parse_pipeline("sspu+lat:eps=2+distill")
    assert method == "sspu" and [s.name for s in stages] == ["lat", "distill"]
    assert parse_pipeline("base+distill:alpha=0.8")[0] == "base"
    for bad, message in (
        ("base+sam", "only after stages"),
        ("base", "only after stages"),
        ("magic+sam", "magic"),
    ):
        with pytest.raises(HookunlearnError, match=message):
            parse_pipeline(bad)
