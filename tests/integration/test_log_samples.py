"""`hookunlearn eval --log-samples`: per-item JSONL per model role and suite, on the quick world.

The records must agree with the report: the mean of ``correct`` is the suite's accuracy, doc ids
are unique positions in the data, and every line is one JSON object.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hookunlearn.cli.app import app
from typer.testing import CliRunner

from hookunlearn.errors import HookunlearnError
from hookunlearn.pipeline.eval import EvalConfig, evaluate

runner = CliRunner()


def read_samples(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(isinstance(r, dict) for r in records)
    ids = [r["doc_id"] for r in records]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    return records


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mean(values: list[Any]) -> float:
    return sum(float(v) for v in values) / len(values)


def test_samples_of_mc_letter_continuation_qa_and_perplexity_agree_with_the_report(
    quick_world: Path, tmp_path: Path
) -> None:
    data = quick_world / "data"
    model = str(quick_world / "model")
    out = tmp_path / "report"
    suites = [
        "--suite",
        f"mc:data={data / 'mc_hazard.jsonl'},protocol=letter,name=mc_letter,limit=10,seed=3",
        "--suite",
        f"mc:data={data / 'mc_benign.jsonl'},name=mc_cont,length_normalized=true,limit=10",
        "--suite",
        f"qa:data={data / 'entity_qa.jsonl'},limit=16,seed=1",
        "--suite",
        f"perplexity:data={data / 'heldout_text.jsonl'},limit=5",
    ]
    result = runner.invoke(
        app,
        ["eval", model, "--baseline", model, "--oracle", model, *suites]
        + ["--device", "cpu", "--out", str(out), "--log-samples"],
    )
    assert result.exit_code == 0, result.output
    assert "samples/" in result.output
    report = json.loads((out / "report.json").read_text())
    files = report["samples"]["files"]
    assert report["samples"]["format"] == 1 and report["options"]["log_samples"] is True
    names = {"mc_letter", "mc_cont", "entity_qa", "perplexity_heldout_text"}
    assert set(files) == {"model", "baseline", "oracle"}
    assert all(set(files[role]) == names for role in files)
    side = {"model": "evaluated", "baseline": "baseline", "oracle": "oracle"}
    hazard = rows(data / "mc_hazard.jsonl")
    for role, suites_of_role in files.items():
        metrics = {name: r["metrics"] for name, r in report[side[role]]["results"].items()}
        for name, entry in suites_of_role.items():
            assert entry["path"] == f"samples/{role}/{name}.jsonl"
            records = read_samples(out / entry["path"])
            assert entry["n"] == len(records)
            if name.startswith("mc_"):
                assert len(records) == 10
                assert mean([r["correct"] for r in records]) == pytest.approx(metrics[name]["accuracy"])
                for r in records:
                    assert r["prediction"] == max(range(len(r["scores"])), key=r["scores"].__getitem__)
                    assert r["correct"] == (r["prediction"] == r["target"])
                    assert len(r["scores"]) == len(r["choices"]) == len(r["continuations"])
            elif name == "entity_qa":
                by_split: dict[str, list[bool]] = defaultdict(list)
                for r in records:
                    by_split[r["split"]].append(r["correct"])
                    assert r["correct"] == (r["prediction"] == r["target"])
                for split, values in by_split.items():
                    assert mean(values) == pytest.approx(metrics[name][f"recall[{split}]"])
            else:
                nll = sum(r["nll"] for r in records) / sum(r["n_tokens"] for r in records)
                assert nll == pytest.approx(metrics[name]["nll_per_token"], rel=1e-5)
    letter = read_samples(out / "samples/model/mc_letter.jsonl")
    assert [r["continuations"] for r in letter][0] == [" A", " B", " C", " D"]
    for r in letter:  # doc_id is the row in the data, whatever the seeded shuffle did
        assert r["prompt"].startswith(hazard[r["doc_id"]]["question"].strip())
        assert r["item_id"] == hazard[r["doc_id"]]["fact_id"]
        assert r["doc"]["split"] == hazard[r["doc_id"]]["split"]
    assert sorted(r["doc_id"] for r in letter) != list(range(10))  # the seed shuffled
    continuation = read_samples(out / "samples/model/mc_cont.jsonl")
    assert [r["doc_id"] for r in continuation] == list(range(10))
    for r in continuation:
        assert r["continuations"] == [" " + c for c in r["choices"]]
        assert r["prompt"].endswith("\nAnswer:") and "\nA. " not in r["prompt"]
        assert r["scores"] == pytest.approx(
            [ll / len(c) for ll, c in zip(r["logliks"], r["choices"], strict=True)]
        )
    # the same model in all three roles: the same records
    assert rows(out / "samples/model/entity_qa.jsonl") == rows(out / "samples/baseline/entity_qa.jsonl")
    markdown = (out / "report.md").read_text()
    assert "`samples/model/entity_qa.jsonl` (16 items)" in markdown
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_truthfulqa_gsm8k_and_jailbreak_samples(quick_world: Path, tmp_path: Path) -> None:
    questions = [
        ("Where was Haldelda Lovinpe born?", ["Istrane", "Brindlemere", "Hydis"]),
        ("What is the job of Haldelda Lovinpe?", ["photographer", "lawyer", "firefighter"]),
        ("Who works at Northwind Energy?", ["Vindelba Quinfe", "Belne Dunmarle"]),
    ]
    tqa = tmp_path / "tqa.jsonl"
    tqa.write_text(
        "\n".join(
            json.dumps(
                {
                    "question": q,
                    "mc1_targets": {"choices": c, "labels": [1] + [0] * (len(c) - 1)},
                    "mc2_targets": {"choices": c, "labels": [1, 1] + [0] * (len(c) - 2)},
                }
            )
            for q, c in questions
        )
        + "\n"
    )
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        "\n".join(
            json.dumps(
                {"id": f"p{i}", "question": f"What is {i} plus {i}?", "answer": f"{i} + {i}\n#### {2 * i}"}
            )
            for i in range(4)
        )
        + "\n"
    )
    out = tmp_path / "report"
    run = evaluate(
        EvalConfig(
            model=str(quick_world / "model"),
            oracle="none",
            suites=(
                f"truthfulqa_mc1:data={tqa}",
                f"truthfulqa_mc2:data={tqa}",
                f"gsm8k:data={gsm},n_shot=0,max_new_tokens=6",
                f"jailbreak:data={quick_world / 'data' / 'mc_hazard.jsonl'},limit=5,wrappers=roleplay",
            ),
            device="cpu",
            out=str(out),
            log_samples=True,
        )
    )
    results = run.report.evaluated.results
    mc1 = read_samples(out / "samples/model/truthfulqa_mc1-tqa.jsonl")
    mc2 = read_samples(out / "samples/model/truthfulqa_mc2-tqa.jsonl")
    assert mean([r["correct"] for r in mc1]) == pytest.approx(results["truthfulqa_mc1-tqa"].metrics["acc"])
    assert mean([r["acc"] for r in mc2]) == pytest.approx(results["truthfulqa_mc2-tqa"].metrics["acc"])
    assert [r["target"] for r in mc1] == [0, 0, 0] and mc2[0]["target"] == [0, 1]
    assert mc1[0]["scores"] == mc2[0]["scores"] and mc1[0]["prompt"].endswith(
        "Q: Where was Haldelda Lovinpe born?\nA:"
    )
    for r in mc2:
        total = sum(math.exp(s) for s in r["scores"])
        true = sum(math.exp(s) for s, label in zip(r["scores"], r["labels"], strict=True) if label)
        assert r["acc"] == pytest.approx(true / total)
    gsm8k = read_samples(out / "samples/model/gsm8k-gsm.jsonl")
    assert [r["item_id"] for r in gsm8k] == ["p0", "p1", "p2", "p3"]
    assert [r["target"] for r in gsm8k] == ["0", "2", "4", "6"]
    metrics = results["gsm8k-gsm"].metrics
    assert mean([r["correct"] for r in gsm8k]) == pytest.approx(metrics["exact_match_strict"])
    assert mean([r["correct_flexible"] for r in gsm8k]) == pytest.approx(metrics["exact_match_flexible"])
    assert all(isinstance(r["generation"], str) and r["prompt"].endswith("\nAnswer:") for r in gsm8k)
    jailbreak = read_samples(out / "samples/model/jailbreak_mc_hazard.jsonl")
    metrics = results["jailbreak_mc_hazard"].metrics
    for wrapper in ("none", "roleplay"):
        values = [r["by_wrapper"][wrapper]["correct"] for r in jailbreak]
        assert mean(values) == pytest.approx(metrics[f"accuracy[{wrapper}]"])


def test_log_samples_needs_out_and_nothing_is_written_without_the_flag(
    quick_world: Path, tmp_path: Path
) -> None:
    model = str(quick_world / "model")
    qa = f"qa:data={quick_world / 'data' / 'entity_qa.jsonl'},limit=4"
    result = runner.invoke(app, ["eval", model, "--suite", qa, "--device", "cpu", "--log-samples"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--out" in errors[0] and "Traceback" not in result.output
    with pytest.raises(HookunlearnError, match="--log-samples"):
        evaluate(EvalConfig(model=model, suites=(qa,), log_samples=True))
    plain = tmp_path / "plain"
    result = runner.invoke(app, ["eval", model, "--suite", qa, "--device", "cpu", "--out", str(plain)])
    assert result.exit_code == 0, result.output
    assert not (plain / "samples").exists()
    assert "samples" not in json.loads((plain / "report.json").read_text())
    assert "samples" not in (plain / "report.md").read_text()


def test_reused_baseline_samples_are_copied_and_a_failed_eval_leaves_nothing(
    quick_world: Path, tmp_path: Path
) -> None:
    model = str(quick_world / "model")
    data = quick_world / "data"
    qa = f"qa:data={data / 'entity_qa.jsonl'},limit=6"
    mc = f"mc:data={data / 'mc_hazard.jsonl'},limit=6"
    common = ["--device", "cpu", "--oracle", "none", "--log-samples"]
    base = tmp_path / "base"
    result = runner.invoke(app, ["eval", model, "--suite", qa, *common, "--out", str(base)])
    assert result.exit_code == 0, result.output
    second = tmp_path / "second"
    result = runner.invoke(
        app,
        ["eval", model, "--baseline", str(base), "--suite", qa, "--suite", mc, *common, "--out", str(second)],
    )
    assert result.exit_code == 0, result.output
    files = json.loads((second / "report.json").read_text())["samples"]["files"]
    assert set(files["baseline"]) == {"entity_qa"}  # mc has no reused result, so no baseline samples
    copied = files["baseline"]["entity_qa"]
    assert copied["copied_from"].endswith("samples/model/entity_qa.jsonl") and copied["n"] == 6
    assert rows(second / copied["path"]) == rows(base / "samples/model/entity_qa.jsonl")
    assert set(files["model"]) == {"entity_qa", "mc_hazard"}
    # a suite that fails after another one logged: no --out, no staging directory
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q: ?\nA:"}) + "\n")
    failed = tmp_path / "failed"
    result = runner.invoke(
        app, ["eval", model, "--suite", mc, "--suite", f"qa:data={bad}", *common, "--out", str(failed)]
    )
    assert result.exit_code == 2, result.output
    assert not failed.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
