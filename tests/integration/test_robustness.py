"""The literature's attacks (rtt grid with LoRA, unrelated fine-tuning, repair then relearn,
ablation, in-context facts) and the decodability probe, on the quick world with tiny budgets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.robustness import (
    AblationConfig,
    AblationSuite,
    DecodabilityConfig,
    DecodabilitySuite,
    InContextConfig,
    InContextSuite,
    RepairRelearnSuite,
    RTTConfig,
    RTTSuite,
    UnrelatedConfig,
    UnrelatedFinetuneSuite,
    ablated,
    lora_copy,
    make_split,
)
from hookunlearn.evaluation.suites import EvalContext
from hookunlearn.models import load_model


@pytest.fixture(scope="module")
def world(quick_world: Path) -> dict:
    data = quick_world / "data"
    return {
        "model": load_model(quick_world / "model"),
        "mc": str(data / "mc_hazard.jsonl"),
        "corpus": str(data / "forget_corpus.jsonl"),
        "qa": str(data / "entity_qa.jsonl"),
        "retain": str(data / "retain_corpus.jsonl"),
    }


def test_splits_are_disjoint_and_seeded(world: dict) -> None:
    from hookunlearn.data import load_records

    split = make_split("qa", world["qa"], None, 0.5, 0, 8)
    train_people = {i.entity for i in split.train_qa}
    assert train_people and not train_people & {i.entity for i in split.eval_qa}
    mc = make_split("mc", world["mc"], world["corpus"], 0.5, 0, 8)
    facts = {r["fact_id"] for r in load_records(world["corpus"]) if r["text"] in set(mc.train_texts)}
    scored = {r["fact_id"] for r in load_records(world["mc"]) if r.get("split") == "forget"} - facts
    assert (
        facts
        and scored
        and mc.n_eval
        == len(
            [r for r in load_records(world["mc"]) if r.get("split") == "forget" and r["fact_id"] in scored]
        )
    )
    again = make_split("qa", world["qa"], None, 0.5, 0, 8)
    assert [i.entity for i in again.eval_qa] == [i.entity for i in split.eval_qa]


def test_lora_copy_starts_unchanged_trains_only_its_factors_and_leaves_the_model(world: dict) -> None:
    model = world["model"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    copy, params = lora_copy(model, rank=2)
    tokens = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(copy(tokens), model(tokens), atol=1e-6)
    assert all(p.requires_grad for p in params) and len(params) == 2 * 3 * model.cfg.n_layers
    frozen = [n for n, p in copy.named_parameters() if p.requires_grad and not n.endswith((".A", ".B"))]
    assert frozen == []
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_rtt_grid_reports_every_cell_and_the_max(world: dict) -> None:
    config = RTTConfig(target="qa", data=world["qa"], lrs=(1e-4, 1e-3), steps=(2,), modes=("full", "lora"))
    metrics = RTTSuite(config).run(world["model"], EvalContext()).metrics
    cells = {k: v for k, v in metrics.items() if k.startswith("score[")}
    assert set(cells) == {
        f"score[{m},lr={lr},steps=2]" for m in ("full", "lora") for lr in ("0.0001", "0.001")
    }
    assert metrics["score_after"] == max(cells.values())
    assert metrics["recovered"] == pytest.approx(metrics["score_after"] - metrics["score_before"])
    with pytest.raises(HookunlearnError, match="modes"):
        RTTConfig(modes=("qlora",))


def test_unrelated_finetune_and_repair_then_relearn(world: dict) -> None:
    config = UnrelatedConfig(target="mc", data=world["mc"], train_data=world["corpus"], unrelated_data=world["retain"],
                             unrelated_texts=8, steps=2)  # fmt: skip
    metrics = UnrelatedFinetuneSuite(config).run(world["model"], EvalContext()).metrics
    assert set(metrics) == {"score_before", "score_after", "recovered"} and 0 <= metrics["score_after"] <= 1
    repaired = RepairRelearnSuite(config).run(world["model"], EvalContext()).metrics
    assert set(repaired) == {"score_before", "score_after_repair", "score_after", "recovered"}


def test_ablation_of_the_difference_undoes_a_shift(world: dict) -> None:
    """A model whose layer-1 output is shifted by a constant vector along e3: the diff direction is
    e3, and with it projected out the shifted model computes exactly what the base model computes
    with e3 projected out."""
    from hookunlearn.evaluation.robustness import diff_directions

    base = world["model"]
    shifted = load_model(Path(world["qa"]).parents[1] / "model")
    shift = torch.zeros(base.cfg.d_model)
    shift[3] = 40.0
    with torch.no_grad():
        shifted.blocks[1].mlp.b_out += shift
    hook = "blocks.1.hook_resid_post"
    found = diff_directions(shifted, base, ["a text", "another text"], hook, 1)[:, 0]
    assert abs(float(found[3])) == pytest.approx(1.0, abs=1e-5)
    tokens = torch.tensor([[1, 5, 9, 12, 7]])
    e3 = torch.eye(base.cfg.d_model)[:, 3:4]
    with torch.no_grad(), ablated(shifted, hook, e3):
        shifted_logits = shifted(tokens)
    with torch.no_grad(), ablated(base, hook, e3):
        base_logits = base(tokens)
    assert torch.allclose(shifted_logits, base_logits, atol=1e-4)
    assert not shifted.hook_dict[hook].fwd_hooks  # the hook comes off again
    context = EvalContext(baseline=base)
    config = AblationConfig(
        target="mc", data=world["mc"], forget_texts=world["corpus"], layer=1, k=1, max_texts=8
    )
    metrics = AblationSuite(config).run(shifted, context).metrics
    split = make_split("mc", world["mc"], world["corpus"], 0.5, 0, 32)
    with ablated(base, hook, e3):
        assert metrics["score_after"] == split.score(base)
    with pytest.raises(HookunlearnError, match="--baseline"):
        AblationSuite(config).run(shifted, EvalContext())
    with pytest.raises(HookunlearnError, match="layer"):
        AblationSuite(AblationConfig(data=world["mc"])).run(shifted, context)


def test_in_context_and_decodability(world: dict) -> None:
    metrics = InContextSuite(InContextConfig(data=world["qa"], shots=2)).run(world["model"], EvalContext())
    assert set(metrics.metrics) == {"score_before", "score_after", "recovered"}
    assert 0 <= metrics.details["mean_shots"] <= 2
    decoded = (
        DecodabilitySuite(DecodabilityConfig(data=world["qa"])).run(world["model"], EvalContext()).metrics
    )
    n_layers = world["model"].cfg.n_layers
    assert {f"logit_lens[{n_layers - 1}]", f"linear[{n_layers - 1}]", "decodable_max"} <= set(decoded)
    assert all(0 <= v <= 1 for v in decoded.values())
