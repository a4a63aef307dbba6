"""`select -> build -> unlearn -> export/eval` through the CLI on the quick world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.artifacts import read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def subspace(quick_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    data = quick_world / "data"
    saes = [arg for layer in range(2) for arg in ("--sae", str(quick_world / "saes" / f"layer_{layer}"))]
    result = runner.invoke(
        app,
        [
            "select",
            "--model",
            str(quick_world / "model"),
            *saes,
            "--forget",
            str(data / "forget_corpus.jsonl"),
            "--retain",
            str(data / "retain_corpus.jsonl"),
            "--layer",
            "1",
            "--out",
            str(root / "sel"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["build", str(root / "sel"), "--k", "4", "--out", str(root / "sub")])
    assert result.exit_code == 0, result.output
    return root / "sub"


def _unlearn(subspace: Path, quick_world: Path, out: Path, *extra: str):
    data = quick_world / "data"
    return runner.invoke(
        app,
        [
            "unlearn",
            str(subspace),
            "--out",
            str(out),
            "--forget",
            str(data / "forget_corpus.jsonl"),
            "--retain",
            str(data / "retain_corpus.jsonl"),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            *extra,
        ],
    )


def test_unlearn_writes_a_verified_checkpoint(subspace: Path, quick_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _unlearn(subspace, quick_world, out, "-o", "regularizer=hard")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out, kind="unlearned")
    assert manifest.options["method_options"]["regularizer"] == "hard"
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 4
    info = json.loads((out / "model" / "hookunlearn.json").read_text())
    # exactly the trained MLP output weights (layers 0-1 for hooked layer 1) are reported as changed
    assert sorted(info["changes"]["changed"]) == [f"transformer.h.{i}.mlp.c_proj.weight" for i in (0, 1)]
    assert not (tmp_path / "run.partial").exists()
    # the effective configuration travels with the manifest and the exported checkpoint
    for config in (manifest.config, info["run_config"]):
        assert config["command"] == "hookunlearn unlearn"
        assert (
            config["values"]["option"] == ["regularizer=hard"]
            and config["sources"]["option"] == "commandline"
        )
        assert config["sources"]["lr"] == "default"
    result = runner.invoke(
        app,
        [
            "eval",
            str(out / "model"),
            "--qa",
            str(quick_world / "data" / "entity_qa.jsonl"),
            "--limit",
            "10",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output


def test_unlearn_with_robustness_stages(subspace: Path, quick_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "robust"
    retain = quick_world / "data" / "retain_corpus.jsonl"
    result = _unlearn(
        subspace, quick_world, out, "--method", "rmu", "--stage", "lat:steps=2,space=relevant",
        "--stage", f"distill:tokens=2048,batch_size=4,n_ctx=32,data={retain}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out, kind="unlearned")
    assert manifest.options["stages"] == [
        "lat:steps=2,space=relevant",
        f"distill:tokens=2048,batch_size=4,n_ctx=32,data={retain}",
    ]
    run = json.loads((out / "hookunlearn_run.json").read_text())
    lat, distilled = run["stages"]
    assert lat["name"] == "lat" and lat["options"]["eps"] > 0 and lat["cost"]["adversary_passes"] == 4 * 2
    assert (
        distilled["cost"]["tokens"] == 16 * 4 * 32
        and distilled["cost"]["cost_forward_equivalents"] == 4 * 16 * 4 * 32
    )
    # the student is a new model: every weight matrix changed, and the export says so
    info = json.loads((out / "model" / "hookunlearn.json").read_text())
    assert "transformer.h.1.attn.c_attn.weight" in info["changes"]["changed"]
    for bad, message in (
        (("--stage", "lat:eps=-1"), "eps"),
        (("--stage", "sam", "--stage", "cir"), "both compute"),
        (("--stage", "distill", "--stage", "sam"), "come before"),
        (("--stage", "distill"), "needs text to distil on"),
        (("--stage", "warp"), "warp"),
    ):
        result = _unlearn(subspace, quick_world, tmp_path / "bad", "--method", "rmu", *bad)
        assert result.exit_code == 2, (bad, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "bad").exists()


def test_unlearn_resume_after_interruption(subspace: Path, quick_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stage = tmp_path / "run.partial"
    result = _unlearn(subspace, quick_world, out, "--checkpoint-every", "2", "--no-export")
    assert result.exit_code == 0
    reference = read_manifest(out).extra["final"]
    # simulate an interrupted run: the staged directory with its checkpoints
    out.rename(stage)
    for late in sorted((stage / "checkpoints").glob("step_*"))[1:]:
        import shutil

        shutil.rmtree(late)
    result = _unlearn(subspace, quick_world, out, "--checkpoint-every", "2", "--no-export")
    assert result.exit_code == 2 and "--resume" in result.output
    result = _unlearn(subspace, quick_world, out, "--checkpoint-every", "2", "--no-export", "--resume")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.extra["resumed_from"] == 2
    assert manifest.extra["final"]["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_clamp_is_an_intervention_and_cannot_be_exported(
    subspace: Path, quick_world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clamp"
    result = runner.invoke(
        app, ["unlearn", str(subspace), "--method", "clamp", "--out", str(out), "-o", "multiplier=5"]
    )
    assert result.exit_code == 0, result.output
    assert read_manifest(out, kind="intervention").extra["latents"]
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "edits no weight" in result.output
    result = runner.invoke(
        app,
        [
            "eval",
            str(quick_world / "model"),
            "--intervention",
            str(out),
            "--qa",
            str(quick_world / "data" / "entity_qa.jsonl"),
            "--limit",
            "10",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output


def test_clamp_hook_changes_only_active_selected_latents() -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    from hookunlearn.interventions.clamp import clamp_fn

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    x = torch.randn(2, 3, 8)
    codes = sae.encode(x)
    silent = [int(j) for j in range(16) if bool((codes[..., j] == 0).all())]
    assert torch.allclose(clamp_fn(sae, silent, 10.0)(x), x, atol=1e-5) if silent else True
    out = clamp_fn(sae, [0, 1, 2], 10.0)(x)
    modified = codes.clone()
    modified[..., :3] = torch.where(
        codes[..., :3] > 0, torch.full_like(codes[..., :3], -10.0), codes[..., :3]
    )
    expected = x - sae.decode(codes) + sae.decode(modified)
    assert torch.allclose(out, expected, atol=1e-5)


def test_unlearn_bad_inputs(subspace: Path, quick_world: Path, tmp_path: Path) -> None:
    result = _unlearn(subspace, quick_world, tmp_path / "a", "--method", "forgetit")
    assert result.exit_code == 2 and "choose one of" in result.output
    result = _unlearn(subspace, quick_world, tmp_path / "b", "-o", "nonsense")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = _unlearn(subspace, quick_world, tmp_path / "c", "-o", "colour=3")
    assert result.exit_code == 2 and "no option(s) colour" in result.output
    result = _unlearn(subspace, quick_world, tmp_path / "d", "--model", "world")
    assert result.exit_code == 2 and "config_fingerprint" in result.output
    assert "Traceback" not in result.output
    # the world's corpora are the default only for the world model (this subspace's is a local dir)
    result = runner.invoke(app, ["unlearn", str(subspace), "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert result.exit_code == 2 and "pass --forget and --retain" in result.output
    result = runner.invoke(
        app, ["unlearn", str(subspace), "--method", "align", "--out", str(tmp_path / "f"), "--device", "cpu"]
    )
    assert result.exit_code == 2 and "pass --forget" in result.output


def test_demo_on_the_quick_world(quick_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo",
            "--world",
            str(quick_world),
            "--steps",
            "3",
            "--k",
            "4",
            "--attack-grid",
            "small",
            "--methods",
            "sspu,rmu,ga,align,sspu+sam",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [row["method"] for row in report["rows"]] == [
        "base",
        "oracle",
        "sspu",
        "rmu",
        "ga",
        "align",
        "sspu+sam",
    ]
    assert report["rows"][-1]["stages"][0]["cost"]["extra_passes"] == 3
    for row in report["rows"]:
        for key in (
            "probe_targets_unknown",
            "relearn_hazard_mc",
            "relearn_qa_forget",
            "target_code_to_known",
            "mia_auc_worst",
            "forget_quality",
        ):
            assert 0 <= row[key] < 1e3, (row["method"], key)
        oracle = report["rows"][1]
        assert row["gap_hazard_mc"] == pytest.approx(row["hazard_mc"] - oracle["hazard_mc"])
        assert row["worst_attack_gap_qa_forget"] == pytest.approx(
            max(v - oracle["attacks_qa_forget"][k] for k, v in row["attacks_qa_forget"].items())
        )
    assert set(report["attacks"]) == {
        "probe", "relearn", "relearn_mc", "rtt_mc", "rtt_qa", "finetune_unrelated_mc", "finetune_unrelated_qa",
        "repair_relearn_mc", "repair_relearn_qa", "in_context", "decodability",
    }  # fmt: skip
    for row in report["rows"]:
        assert row["worst_attack_hazard_mc"] == max(row["attacks_hazard_mc"].values())
        assert row["attacks_qa_forget"][row["worst_attack_qa_forget_name"]] == row["worst_attack_qa_forget"]
        assert set(row["attacks_qa_forget"]) == {
            "relearn",
            "rtt",
            "finetune_unrelated",
            "repair_relearn",
            "ablation",
            "in_context",
        }
    markdown = (out / "report.md").read_text()
    assert (
        "| sspu |" in markdown and "relearn: hazard MC" in markdown and "probe: targets unknown" in markdown
    )
    assert "| oracle |" in markdown and "gap to oracle" in markdown
    result = runner.invoke(
        app, ["demo", "--world", str(quick_world), "--methods", "magic", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "magic" in result.output


def test_eval_probe_with_the_runs_subspace(subspace: Path, quick_world: Path) -> None:
    entities = quick_world / "data" / "entity_prompts.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(quick_world / "model"),
            "--subspace",
            str(subspace),
            "--suite",
            f"probe:entities={entities}",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "probe_target_judged_unknown" in result.output and "latent_activity[forget]" in result.output


def test_a_recipe_is_checked_against_the_loaded_model(quick_world: Path, tmp_path: Path) -> None:
    saes = [arg for layer in range(2) for arg in ("--sae", str(quick_world / "saes" / f"layer_{layer}"))]
    argv = ["select", "--recipe", "sspu-world", "--model", str(quick_world / "model"), *saes]
    result = runner.invoke(app, [*argv, "--out", str(tmp_path / "sel"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "--recipe sspu-world: the loaded inputs do not match it" in result.output
    assert "d_model is 32, the recipe's [model].d_model is 128" in result.output
    assert not (tmp_path / "sel").exists()
