"""The oracle (the world model retrained without the forget set) and what needs it: `world:oracle`,
`eval --oracle` (report columns, gap, reuse), the `mia` and `forget_quality` suites, on the quick world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.mia import (
    ForgetQualityConfig,
    ForgetQualitySuite,
    MIAConfig,
    MIASuite,
    text_scores,
)
from hookunlearn.evaluation.suites import EvalContext
from hookunlearn.models import load_model
from hookunlearn.pipeline.eval import EvalConfig, resolve_oracle

runner = CliRunner()


@pytest.fixture()
def world_env(quick_world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOOKUNLEARN_WORLD", str(quick_world))
    return quick_world


def test_the_quick_world_has_an_oracle_trained_like_its_model(quick_world: Path) -> None:
    model_run = json.loads((quick_world / "model" / "training.json").read_text())
    oracle_run = json.loads((quick_world / "oracle" / "training.json").read_text())
    assert model_run["config"] == oracle_run["config"]  # same seed, architecture, schedule, budget
    assert oracle_run["stats"]["tokens"] == model_run["stats"]["tokens"]
    assert (quick_world / "oracle" / "tokenizer.json").read_text() == (
        quick_world / "model" / "tokenizer.json"
    ).read_text()
    manifest = json.loads((quick_world / "manifest.json").read_text())
    assert 0 < manifest["extra"]["oracle"]["training"]["forget_share_of_epoch_0"]["units"] < 1
    base, oracle = load_model(quick_world / "model"), load_model(quick_world / "oracle")
    assert not torch.equal(base.blocks[0].mlp.W_out, oracle.blocks[0].mlp.W_out)


def test_world_oracle_spec_and_auto_resolution(world_env: Path, tmp_path: Path) -> None:
    oracle = load_model("world:oracle")
    assert oracle.hookunlearn_info.name == str((world_env / "oracle").resolve())
    assert resolve_oracle(EvalConfig(model="world")) == "world:oracle"
    assert resolve_oracle(EvalConfig(model="world:oracle")) is None  # the oracle itself
    assert resolve_oracle(EvalConfig(model="world", oracle="none")) is None
    assert resolve_oracle(EvalConfig(model=str(world_env / "model"))) is None  # not known to derive from it
    export = tmp_path / "run-model"
    export.mkdir()
    (export / "hookunlearn.json").write_text(json.dumps({"metadata": {"inputs": {"model": "world"}}}))
    assert resolve_oracle(EvalConfig(model=str(export))) == "world:oracle"  # an unlearn export of the world
    with pytest.raises(HookunlearnError, match="world:nope"):
        load_model("world:nope")


def test_a_world_without_an_oracle_says_how_to_make_one(
    tmp_path: Path, quick_world: Path, monkeypatch
) -> None:
    import shutil

    copy = tmp_path / "world"
    shutil.copytree(quick_world, copy, ignore=shutil.ignore_patterns("oracle", "saes"))
    monkeypatch.setenv("HOOKUNLEARN_WORLD", str(copy))
    with pytest.raises(HookunlearnError, match="hookunlearn world oracle"):
        load_model("world:oracle")
    assert resolve_oracle(EvalConfig(model="world")) is None  # auto: no oracle, no error


def test_eval_with_an_oracle_reports_it_and_the_gap_and_reuses_its_report(
    world_env: Path, tmp_path: Path
) -> None:
    suites = ["--suite", "qa:limit=8", "--suite", "mia:limit=6"]
    oracle_report = tmp_path / "oracle-report"
    result = runner.invoke(
        app, ["eval", "world:oracle", *suites, "--device", "cpu", "--out", str(oracle_report)]
    )
    assert result.exit_code == 0, result.output
    assert "gap" not in result.output.splitlines()[0]  # evaluating the oracle itself: no oracle column
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "world", *suites, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("suite"))
    assert header.split() == ["suite", "metric", "base", "value", "delta", "oracle", "gap", "n"]
    report = json.loads((out / "report.json").read_text())
    assert report["report_version"] == 3 and report["options"]["oracle"] == "world:oracle"
    assert (
        set(report["oracle"]["results"])
        == set(report["evaluated"]["results"])
        == {"entity_qa", "mia_entity_qa"}
    )
    markdown = (out / "report.md").read_text()
    assert "## Gap to the oracle" in markdown and "| oracle | gap |" in markdown
    # the oracle's results from its own earlier report equal the freshly computed ones
    reused = tmp_path / "reused"
    result = runner.invoke(
        app,
        ["eval", "world", *suites, "--oracle", str(oracle_report), "--device", "cpu", "--out", str(reused)],
    )
    assert result.exit_code == 0, result.output
    again = json.loads((reused / "report.json").read_text())
    for name, fresh in report["oracle"]["results"].items():
        assert again["oracle"]["results"][name]["metrics"] == pytest.approx(fresh["metrics"])
    plots = {p.name for p in (out / "plots").iterdir()}
    assert "entity_qa.png" in plots


def test_mia_scores_follow_their_definitions(quick_world: Path) -> None:
    model = load_model(quick_world / "model")
    texts = ["Q: Where was Ann born? A: Paris", "a b c"]
    scores = text_scores(model, texts, k=1.0)
    from hookunlearn.tokens import tokenize_texts

    data = tokenize_texts(model, texts[:1])
    with torch.no_grad():
        log_probs = model(data.tokens)[:, :-1].log_softmax(-1)
    picked = log_probs.gather(-1, data.tokens[:, 1:, None])[0, :, 0]
    assert scores["loss"][0] == pytest.approx(float(picked.mean()), abs=1e-5)  # minus the mean NLL
    probs = log_probs.exp()[0]
    mu = (probs * log_probs[0]).sum(-1)
    sigma = ((probs * log_probs[0] ** 2).sum(-1) - mu**2).sqrt()
    assert scores["min_k++"][0] == pytest.approx(float(((picked - mu) / sigma).mean()), abs=1e-4)


def test_mia_suite_on_the_world(quick_world: Path) -> None:
    model = load_model(quick_world / "model")
    qa = str(quick_world / "data" / "entity_qa.jsonl")
    result = MIASuite(MIAConfig(members=qa, nonmembers=qa, limit=10)).run(model, EvalContext())
    assert set(result.metrics) == {"auc[loss]", "auc[zlib]", "auc[min_k++]", "auc[worst]"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.metrics["auc[worst]"] == max(
        max(v, 1 - v) for k, v in result.metrics.items() if k != "auc[worst]"
    )
    same = MIASuite(MIAConfig(members=qa, nonmembers=qa, nonmembers_where="split=forget", limit=10))
    assert same.run(model, EvalContext()).metrics["auc[loss]"] == 0.5  # members vs themselves
    with pytest.raises(HookunlearnError, match="k=0.0"):
        MIAConfig(k=0.0)


def test_forget_quality_needs_an_oracle_and_is_one_against_itself(quick_world: Path) -> None:
    model = load_model(quick_world / "model")
    qa = str(quick_world / "data" / "entity_qa.jsonl")
    suite = ForgetQualitySuite(ForgetQualityConfig(data=qa, limit=12))
    with pytest.raises(HookunlearnError, match="--oracle"):
        suite.run(model, EvalContext())
    assert suite.run(model, EvalContext(oracle=model)).metrics["forget_quality"] == 1.0
    oracle = load_model(quick_world / "oracle")
    metrics = suite.run(model, EvalContext(oracle=oracle)).metrics
    assert 0.0 <= metrics["forget_quality"] <= 1.0 and metrics["ks_statistic"] > 0


def test_world_info_reports_the_oracle_and_its_attacks(quick_world: Path) -> None:
    result = runner.invoke(app, ["world", "info", "--world", str(quick_world), "--no-saes", "--attacks"])
    assert result.exit_code == 0, result.output
    assert "oracle: entity QA recall" in result.output and "oracle: MC hazard (continuation)" in result.output
    for label in ("mia (auc[worst])", "forget_quality", "rtt: hazard MC", "in_context: forget QA"):
        assert label in result.output
    line = next(row for row in result.output.splitlines() if row.startswith("forget_quality"))
    assert line.split()[-1] == "1.000"  # the oracle against itself
