"""`hookunlearn eval` with suites, a baseline (model or earlier report) and a subspace, on the quick world."""

from __future__ import annotations

import json
from pathlib import Path

from hookunlearn.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


def test_eval_with_suites_and_a_baseline_writes_a_full_report(quick_world: Path, tmp_path: Path) -> None:
    data = quick_world / "data"
    model = str(quick_world / "model")
    suites = [
        "--suite",
        f"qa:data={data / 'entity_qa.jsonl'},limit=8",
        "--suite",
        f"perplexity:data={data / 'heldout_text.jsonl'},limit=6",
        "--suite",
        f"jailbreak:data={data / 'mc_hazard.jsonl'},limit=4,wrappers=roleplay|few_shot",
    ]
    first = tmp_path / "base-report"
    result = runner.invoke(app, ["eval", model, *suites, "--device", "cpu", "--out", str(first)])
    assert result.exit_code == 0, result.output
    second = tmp_path / "report"
    result = runner.invoke(
        app, ["eval", model, "--baseline", str(first), *suites, "--device", "cpu", "--out", str(second)]
    )
    assert result.exit_code == 0, result.output
    assert "baseline" not in result.stderr if hasattr(result, "stderr") else True
    report = json.loads((second / "report.json").read_text())
    assert report["report_version"] == 3
    names = {"entity_qa", "perplexity_heldout_text", "jailbreak_mc_hazard"}
    assert set(report["evaluated"]["results"]) == names == set(report["baseline"]["results"])
    # the same model against its own earlier report: every delta is zero
    markdown = (second / "report.md").read_text()
    assert "| jailbreak_mc_hazard | malicious_accuracy |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "suite" not in line]
    assert rows and all(line.split("|")[5].strip() in ("+0.000", "-0.000") for line in rows)
    plots = {p.name for p in (second / "plots").iterdir()}
    assert {"entity_qa.png", "perplexity_heldout_text.png", "jailbreak_mc_hazard.png"} <= plots


def test_eval_probe_needs_a_subspace_or_a_layer(quick_world: Path, tmp_path: Path) -> None:
    entities = quick_world / "data" / "entity_prompts.jsonl"
    model = str(quick_world / "model")
    result = runner.invoke(app, ["eval", model, "--suite", f"probe:entities={entities}", "--device", "cpu"])
    assert result.exit_code == 2 and "probe:layer=N" in result.output
    result = runner.invoke(
        app,
        [
            "eval",
            model,
            "--baseline",
            model,
            "--suite",
            f"probe:entities={entities},layer=1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "probe_target_judged_unknown" in result.output


def test_eval_list_suites_and_bad_suites(quick_world: Path) -> None:
    result = runner.invoke(app, ["eval", "--list-suites"])
    assert result.exit_code == 0
    for name in (
        "mc",
        "wmdp",
        "mmlu",
        "truthfulqa_mc1",
        "truthfulqa_mc2",
        "gsm8k",
        "qa",
        "jailbreak",
        "probe",
        "relearn",
        "relearn_mc",
        "perplexity",
    ):
        assert f"\n{name}: " in "\n" + result.output, name
    result = runner.invoke(app, ["eval", str(quick_world / "model"), "--suite", "wmdpp"])
    assert result.exit_code == 2 and "available suites" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", str(quick_world / "model"), "--suite", "relearn:fraction=2"])
    assert result.exit_code == 2 and "strictly between 0 and 1" in result.output
    result = runner.invoke(app, ["eval", str(quick_world / "model")])
    assert result.exit_code == 2 and "no suites given" in result.output
