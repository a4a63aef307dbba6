"""`world build --quick` end to end, and the CLI commands that run on a world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.artifacts import read_manifest
from hookunlearn.models import load_model
from hookunlearn.saes import load_sae, sae_info

runner = CliRunner()


def test_quick_world_layout_and_loading(quick_world: Path) -> None:
    manifest = read_manifest(quick_world, kind="world")
    assert manifest.seed == 0
    for name in ("mc_hazard", "mc_benign", "entity_qa", "entity_prompts", "forget_corpus", "retain_corpus"):
        assert (quick_world / "data" / f"{name}.jsonl").is_file(), name
    assert (quick_world / "model" / "config.json").is_file()
    assert (quick_world / "model" / "tokenizer.json").is_file()
    assert not (quick_world / "tokenizer").exists()
    assert not list(quick_world.parent.glob(".quick.partial-*"))
    model = load_model(quick_world / "model", device="cpu")
    for layer in range(model.cfg.n_layers):
        sae = load_sae(quick_world / "saes" / f"layer_{layer}", model)
        info = sae_info(sae)
        assert info.hook_name == f"blocks.{layer}.hook_resid_post"
        assert info.d_in == model.cfg.d_model
    measured = manifest.extra["measured"]
    assert set(measured["knowledge"]["qa_recall"]) == {"forget", "retain", "unknown"}
    assert set(measured["saes"]) == {str(i) for i in range(model.cfg.n_layers)}
    timings = manifest.extra["timings"]
    assert set(timings) >= {"lm_s", "saes_s", "measure_s"}


def test_world_info_cli(quick_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    result = runner.invoke(app, ["world", "info", "--world", str(quick_world), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "entity QA recall" in result.output and "SAE layer 1" in result.output
    live = json.loads(out.read_text())
    stored = read_manifest(quick_world).extra["measured"]
    # live measurement with the real eval code reproduces what the build recorded
    assert live["knowledge"]["qa_recall"] == pytest.approx(stored["knowledge"]["qa_recall"], abs=1e-6)
    assert live["saes"]["0"]["quality"]["explained_variance"] == pytest.approx(
        stored["saes"]["0"]["quality"]["explained_variance"], abs=1e-4
    )


def test_world_build_refuses_existing_output(quick_world: Path) -> None:
    result = runner.invoke(app, ["world", "build", "--quick", "--out", str(quick_world)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert read_manifest(quick_world).kind == "world"


def test_eval_cli_writes_report(quick_world: Path, tmp_path: Path) -> None:
    data = quick_world / "data"
    out = tmp_path / "report"
    argv = [
        "eval",
        str(quick_world / "model"),
        "--mc",
        str(data / "mc_hazard.jsonl"),
        "--qa",
        str(data / "entity_qa.jsonl"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--limit",
        "20",
    ]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["report_version"] == 3
    results = report["evaluated"]["results"]
    assert results["mc_hazard"]["n"]["accuracy"] == 20
    assert results["mc_hazard"]["config"]["protocol"] == "continuation"
    assert sum(v for k, v in results["entity_qa"]["n"].items() if k.startswith("recall")) == 20
    assert "mc_hazard" in result.output and "accuracy" in result.output
    assert (out / "report.md").is_file() and (out / "plots" / "mc_hazard.png").is_file()
    assert read_manifest(out, kind="report").model["architecture"] == "gpt2"
    # letter protocol runs too (a tiny model is near chance; this checks the path, not the number)
    result = runner.invoke(app, [*argv[:4], "--protocol", "letter", "--limit", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mc_hazard" in result.output


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "q", "choices": ["a", "b", "c", "d"]}], "lacks column(s) answer"),
        ([{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7}], "'answer' is 7"),
        ([], "is empty"),
    ],
)
def test_eval_bad_mc_file(quick_world: Path, tmp_path: Path, rows: list, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["eval", str(quick_world / "model"), "--mc", str(path), "--device", "cpu"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_eval_without_suites_on_a_non_world_model(quick_world: Path) -> None:
    result = runner.invoke(app, ["eval", str(quick_world / "model")])
    assert result.exit_code == 2 and "no suites given" in result.output


def test_eval_missing_model_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--mc", "world:mc_hazard"])
    assert result.exit_code == 2 and "nope" in result.output
