"""Half precision on CPU (issue 17 item 16): every method, select, build, eval and export run in
bfloat16 (what GPU users pass), and a float16 subset where CPU kernels allow, on the quick world."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.interventions import INTERVENTIONS
from hookunlearn.models import load_model
from hookunlearn.objectives import METHODS
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig

runner = CliRunner()


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half(request: pytest.FixtureRequest, quick_world: Path) -> dict:
    """select and build in ``dtype`` on the quick world's model (both run in it)."""
    dtype = request.param
    data = quick_world / "data"
    model = load_model(quick_world / "model", device="cpu", dtype=dtype)
    assert next(model.parameters()).dtype == getattr(torch, dtype)
    saes = {layer: load_sae(quick_world / "saes" / f"layer_{layer}", model) for layer in range(2)}
    forget = load_texts(data / "forget_corpus.jsonl")[:48]
    retain = load_texts(data / "retain_corpus.jsonl")[:48]
    selection = select(model, saes, forget=forget, retain=retain, layer=1)
    assert all(math.isfinite(s.layer_score) for s in selection.layers.values())
    subspace = build(selection, saes[1], k=4)
    assert torch.isfinite(subspace.U_rel).all() and torch.isfinite(subspace.U_irr).all()
    prompts = parse_entity_prompts(load_records(data / "entity_prompts.jsonl"), "entity_prompts")
    entity = build(select(model, saes, objective="entity", entities=prompts, layer=1), saes[1], k=4)
    return {
        "dtype": dtype,
        "world": quick_world,
        "sae": saes[1],
        "sub": subspace,
        "entity": entity,
        "targets": [p for p in prompts if p.set == "target"],
        "known": [p for p in prompts if p.set == "known"],
        "forget": forget,
        "retain": retain,
    }


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_in_half_precision(half: dict, method: str) -> None:
    model = load_model(half["world"] / "model", device="cpu", dtype=half["dtype"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = unlearn_model(
        model,
        method,
        subspace=half["entity"] if METHODS[method].subspace == "entity" else half["sub"],
        sae=half["sae"],
        layer=1,
        forget=half["forget"][:16],
        retain=half["retain"][:16],
        targets=half["targets"],
        known=half["known"],
        train=TrainConfig(steps=3, batch_size=4, lr=3e-3),
    )
    assert all(math.isfinite(row["loss"]) for row in result.train.log), result.train.log
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert changed and all(model.get_parameter(n).dtype == getattr(torch, half["dtype"]) for n in changed)


def test_the_issue_command_sspu_bfloat16_through_the_cli(quick_world: Path, tmp_path: Path) -> None:
    """`unlearn --method sspu --dtype bfloat16` crashed in the soft regulariser; now it trains,
    exports (verified at the bf16 tolerance) and evaluates in bfloat16."""
    data = quick_world / "data"
    saes = [arg for layer in range(2) for arg in ("--sae", str(quick_world / "saes" / f"layer_{layer}"))]
    corpora = ["--forget", str(data / "forget_corpus.jsonl"), "--retain", str(data / "retain_corpus.jsonl")]
    bf16 = ["--dtype", "bfloat16", "--device", "cpu"]
    model = str(quick_world / "model")
    result = runner.invoke(
        app,
        [
            "select",
            "--model",
            model,
            *saes,
            *corpora,
            "--layer",
            "1",
            "--top-contexts",
            "0",
            "--out",
            str(tmp_path / "sel"),
            *bf16,
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["build", str(tmp_path / "sel"), "--k", "4", "--out", str(tmp_path / "sub")])
    assert result.exit_code == 0, result.output
    for regularizer in ("soft", "hard"):
        out = tmp_path / f"run_{regularizer}"
        result = runner.invoke(
            app,
            [
                "unlearn",
                str(tmp_path / "sub"),
                "--method",
                "sspu",
                "-o",
                f"regularizer={regularizer}",
                *corpora,
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--out",
                str(out),
                *bf16,
            ],
        )
        assert result.exit_code == 0, result.output
        assert (out / "model" / "hookunlearn.json").is_file()
    result = runner.invoke(
        app,
        [
            "eval",
            str(tmp_path / "run_soft" / "model"),
            "--mc",
            str(data / "mc_hazard.jsonl"),
            "--qa",
            str(data / "entity_qa.jsonl"),
            "--suite",
            "perplexity",
            "--limit",
            "8",
            "--oracle",
            "none",
            *bf16,
        ],
    )
    assert result.exit_code == 0, result.output


def test_export_and_eval_in_half_precision(half: dict, tmp_path: Path) -> None:
    from hookunlearn.export import export_model
    from hookunlearn.pipeline.eval import EvalConfig, evaluate

    model = load_model(half["world"] / "model", device="cpu", dtype=half["dtype"])
    result = export_model(model, tmp_path / "hf")
    assert result.verified and result.dtype == half["dtype"]
    data = half["world"] / "data"
    run = evaluate(
        EvalConfig(
            model=str(tmp_path / "hf"),
            mc=(str(data / "mc_hazard.jsonl"),),
            qa=(str(data / "entity_qa.jsonl"),),
            limit=8,
            oracle="none",
            dtype=half["dtype"],
            device="cpu",
        )
    )
    values = [row["value"] for row in run.report.table()]
    assert values and all(v is None or math.isfinite(v) for v in values)


def test_clamp_in_half_precision(half: dict) -> None:
    from hookunlearn.interventions import get_intervention

    assert "clamp" in INTERVENTIONS
    model = load_model(half["world"] / "model", device="cpu", dtype=half["dtype"])
    clamp = get_intervention("clamp").INTERVENTION.from_subspace(
        half["sub"], get_intervention("clamp").Config()
    )
    tokens = model.to_tokens(half["forget"][:2], padding_side="right")
    with clamp.applied(model):
        logits = model(tokens)
    assert logits.dtype == getattr(torch, half["dtype"]) and torch.isfinite(logits).all()
