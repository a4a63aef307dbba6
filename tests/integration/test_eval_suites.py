"""The suite framework, the standard and activation-level suites, and reports, on the quick world."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.activation import ProbeConfig, ProbeSuite, fit_probe
from hookunlearn.evaluation.report import (
    EvalReport,
    evaluate,
    find_train_log,
    read_report,
    to_markdown,
    validate_report,
    write_plots,
)
from hookunlearn.evaluation.standard import (
    MCConfig,
    MCSuite,
    PerplexityConfig,
    PerplexitySuite,
    QAConfig,
    QASuite,
    _description,
    subset,
)
from hookunlearn.evaluation.suites import EvalContext, Suite, make_config, parse_suite_spec
from hookunlearn.models import load_model


@pytest.fixture(scope="module")
def model(quick_world: Path):
    return load_model(quick_world / "model", device="cpu")


def test_parse_suite_spec_converts_and_rejects() -> None:
    suite = parse_suite_spec("mc:data=world:mc_benign,limit=5,protocol=letter,length_normalized=true")
    assert isinstance(suite, MCSuite)
    assert suite.config == MCConfig(
        data="world:mc_benign", limit=5, protocol="letter", length_normalized=True
    )
    assert suite.instance_name() == "mc_benign"
    assert parse_suite_spec("qa:limit=none").config.limit is None
    with pytest.raises(HookunlearnError, match="suite 'nope' is unknown; available suites: .*gsm8k"):
        parse_suite_spec("nope")
    with pytest.raises(HookunlearnError, match="has no option.*its options: .*protocol"):
        parse_suite_spec("mc:protokol=letter")
    with pytest.raises(HookunlearnError, match="choose one of letter, continuation"):
        parse_suite_spec("mc:protocol=letters")
    with pytest.raises(HookunlearnError, match="not a valid int"):
        parse_suite_spec("mc:limit=ten")
    with pytest.raises(HookunlearnError, match="KEY=VALUE"):
        parse_suite_spec("mc:letter")
    with pytest.raises(HookunlearnError, match="not a valid bool"):
        make_config(MCSuite, {"per_subject": "maybe"})


def test_description_lines_follow_the_harness() -> None:
    line = "The following are multiple choice questions (with answers) about {}.\n\n"
    assert _description(MCConfig(data="cais/wmdp:wmdp-cyber@test", protocol="letter"), None) == line.format(
        "cybersecurity"
    )
    mmlu = MCConfig(data="cais/mmlu:all@test", protocol="letter")
    assert _description(mmlu, "college_biology") == line.format("college biology")
    assert _description(
        MCConfig(data="x.jsonl", protocol="letter", description="subject"), "high_school_physics"
    ) == (line.format("high school physics"))
    assert _description(MCConfig(data="cais/wmdp:wmdp-bio", protocol="continuation"), None) == ""
    assert _description(MCConfig(data="x.jsonl", protocol="letter", description="none"), "a") == ""


def test_subset_is_seeded_and_limited() -> None:
    rows = [{"i": i} for i in range(20)]
    assert subset(rows, 3, None) == rows[:3]
    assert subset(rows, 5, 1) == subset(rows, 5, 1) != rows[:5]
    assert sorted(r["i"] for r in subset(rows, None, 2)) == list(range(20))


def test_mc_per_subject_matches_the_overall_accuracy(model, quick_world: Path, tmp_path: Path) -> None:
    records = [
        json.loads(line) for line in (quick_world / "data" / "mc_hazard.jsonl").read_text().splitlines()
    ]
    for i, record in enumerate(records):
        record["subject"] = "even" if i % 2 == 0 else "odd"
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = MCSuite(MCConfig(data=str(path))).run(model, EvalContext(batch_size=8))
    m, n = result.metrics, result.n
    assert n["accuracy"] == len(records) == n["accuracy[even]"] + n["accuracy[odd]"]
    combined = (m["accuracy[even]"] * n["accuracy[even]"] + m["accuracy[odd]"] * n["accuracy[odd]"]) / n[
        "accuracy"
    ]
    assert m["accuracy"] == pytest.approx(combined)
    assert result.details["chance"] == pytest.approx(0.25)
    assert result.version == 1 and result.config["data"] == str(path)


def test_perplexity_equals_the_model_loss_on_one_text(model, tmp_path: Path) -> None:
    text = "The star Hydora lies in the constellation of the Owl."
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n")
    result = PerplexitySuite(PerplexityConfig(data=str(path), where=None)).run(model, EvalContext())
    with torch.no_grad():
        loss = float(model(text, return_type="loss"))
    assert result.metrics["nll_per_token"] == pytest.approx(loss, rel=1e-5)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    with pytest.raises(HookunlearnError, match="no column 'split'"):
        PerplexitySuite(PerplexityConfig(data=str(path))).run(model, EvalContext())


def test_perplexity_where_keeps_only_the_retain_rows(model, quick_world: Path) -> None:
    result = PerplexitySuite(PerplexityConfig(data=str(quick_world / "data" / "heldout_text.jsonl"))).run(
        model, EvalContext()
    )
    rows = [json.loads(x) for x in (quick_world / "data" / "heldout_text.jsonl").read_text().splitlines()]
    assert 0 < sum(r["split"] == "retain" for r in rows) < len(rows)
    assert 1 < result.metrics["perplexity"] < model.cfg.d_vocab


def test_fit_probe_separates_a_linear_problem() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    y = x[:, 2] + 0.5 * x[:, 4] > 0
    probe = fit_probe(x, y)
    assert float(((probe.known_probability(x) > 0.5) == y).float().mean()) > 0.95
    with pytest.raises(HookunlearnError, match="both known and unknown"):
        fit_probe(x, torch.ones(200, dtype=torch.bool))


def test_probe_suite_trains_once_on_the_base_and_reports_distances(model, quick_world: Path) -> None:
    from hookunlearn.data import load_records
    from hookunlearn.entities import parse_entity_prompts
    from hookunlearn.saes import load_sae
    from hookunlearn.selection import select
    from hookunlearn.subspace import build

    entities = str(quick_world / "data" / "entity_prompts.jsonl")
    saes = {
        layer: load_sae(quick_world / "saes" / f"layer_{layer}", model) for layer in range(model.cfg.n_layers)
    }
    prompts = parse_entity_prompts(load_records(entities), entities)
    sub = build(select(model, saes, objective="entity", entities=prompts, layer=1), saes[1], k=4)
    context = EvalContext(batch_size=16, baseline=model, subspace=sub, sae=saes[1])
    suite = ProbeSuite(ProbeConfig(entities=entities))
    first = suite.run(model, context)
    assert len(context.cache) == 1
    second = suite.run(model, context)
    assert len(context.cache) == 1 and first.metrics == second.metrics
    m = first.metrics
    assert 0 <= m["probe_target_judged_unknown"] <= 1 and 0 <= m["probe_heldout_accuracy"] <= 1
    # (the quick world's 2-layer model barely separates known from unknown people, so only the
    # plumbing is checked here; the shipped world's align acceptance test checks the direction)
    assert 0 < m["code_distance[known]"] < 1e3 and 0 < m["code_distance[unknown]"] < 1e3
    assert m["latent_activity[forget]"] >= 0 and m["latent_activity[retain]"] >= 0
    assert first.details["hook"] == sub.hook
    without = ProbeSuite(ProbeConfig(entities=entities, layer=1)).run(model, EvalContext(batch_size=16))
    assert "code_distance[known]" not in without.metrics and "skipped" in without.details
    with pytest.raises(HookunlearnError, match="probe:layer=N"):
        ProbeSuite(ProbeConfig(entities=entities)).run(model, EvalContext())


@dataclass(frozen=True)
class _CountConfig:
    value: float = 1.0


class _Counting(Suite):
    name: ClassVar[str] = "counting"
    Config = _CountConfig
    calls: ClassVar[list[str]] = []

    def compute(self, model, context):
        self.calls.append("run")
        return {"score": self.config.value, "other": 2.0}, {"score": 3}, {}


def test_report_compares_reuses_validates_and_renders(model, quick_world: Path, tmp_path: Path) -> None:
    suites = [
        _Counting(_CountConfig(0.25)),
        QASuite(QAConfig(data=str(quick_world / "data" / "entity_qa.jsonl"), limit=12)),
    ]
    report = evaluate(
        model, suites, baseline=model, train_log=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]
    )
    assert len(_Counting.calls) == 2  # base and evaluated
    rows = {(s, m): (b, v, d) for s, m, b, v, d, _ in report.rows()}
    assert rows[("counting", "score")] == (0.25, 0.25, 0.0)
    data = json.loads(json.dumps(report.to_dict()))
    validate_report(data)
    again = EvalReport.from_dict(data)
    assert again.rows() == report.rows()
    # a baseline report is reused, not recomputed, when suite, version and config match
    _Counting.calls.clear()
    reused = evaluate(model, [_Counting(_CountConfig(0.25))], baseline=again)
    assert _Counting.calls == ["run"] and reused.baseline is not None
    assert reused.baseline.results["counting"] is again.evaluated.results["counting"]
    # another config is another measurement: no base value, and the report says which
    other = evaluate(model, [_Counting(_CountConfig(0.5))], baseline=again)
    assert other.baseline is not None and other.baseline.results == {}
    assert other.options["baseline_missing"] == ["counting"]
    assert other.rows()[0][2] is None
    markdown = to_markdown(report)
    assert "| suite | metric | base | unlearned | delta | n |" in markdown
    assert "| counting | score | 0.250 | 0.250 | +0.000 | 3 |" in markdown
    plots = write_plots(report, tmp_path / "plots")
    assert {p.name for p in plots} == {"counting.png", "entity_qa.png", "train_loss.png"}
    assert all(p.stat().st_size > 1000 for p in plots)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(data))
    assert read_report(tmp_path / "r").rows() == report.rows()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("report_version"), "report_version is missing"),
        (lambda d: d.update(report_version=1), "reads versions 2, 3"),
        (lambda d: d["evaluated"].pop("results"), r"evaluated.results must be an object"),
        (lambda d: d["evaluated"]["results"]["counting"].update(version="1"), r"\.version must be int"),
        (
            lambda d: d["evaluated"]["results"]["counting"]["metrics"].update(score="high"),
            r"metrics\['score'\]",
        ),
        (lambda d: d["evaluated"]["results"]["counting"].update(n={"score": 1.5}), r"\.n must map"),
        (lambda d: d.update(train_log={}), "train_log must be a list"),
    ],
)
def test_report_schema_errors_name_the_field(model, mutate, message: str) -> None:
    data = json.loads(json.dumps(evaluate(model, [_Counting(_CountConfig())]).to_dict()))
    validate_report(data)
    mutate(data)
    with pytest.raises(HookunlearnError, match=message):
        validate_report(data)


def test_find_train_log_reads_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "train_log.jsonl").write_text('{"step": 1, "loss": 1.5}\n\n{"step": 2, "loss": 1.0}\n')
    assert find_train_log(str(tmp_path / "model")) is None  # not an exported checkpoint
    (tmp_path / "model" / "hookunlearn.json").write_text("{}")
    assert find_train_log(str(tmp_path / "model")) == [{"step": 1, "loss": 1.5}, {"step": 2, "loss": 1.0}]
    assert find_train_log("world") is None and find_train_log(str(tmp_path / "nowhere" / "x")) is None
    (tmp_path / "train_log.jsonl").write_text("{not json\n")
    with pytest.raises(HookunlearnError, match="line 1 is not JSON"):
        find_train_log(str(tmp_path / "model"))


def test_suite_results_are_versioned_with_their_config(model, quick_world: Path) -> None:
    result = QASuite(QAConfig(data=str(quick_world / "data" / "entity_qa.jsonl"), limit=6)).run(
        model, EvalContext()
    )
    assert result.suite == "qa" and result.name == "entity_qa" and result.version == 1
    assert result.config == dataclasses.asdict(
        QAConfig(data=str(quick_world / "data" / "entity_qa.jsonl"), limit=6)
    )
    assert set(result.metrics) == set(result.n)


def test_shared_options_fill_only_what_the_spec_left_unset() -> None:
    jailbreak = parse_suite_spec("jailbreak:seed=3")
    jailbreak.with_defaults(seed=5, limit=7)
    assert jailbreak.config.seed == 3 and jailbreak.config.limit == 7
    mc = parse_suite_spec("mc")
    mc.with_defaults(seed=5, limit=7, nonexistent=1)
    assert (mc.config.seed, mc.config.limit) == (5, 7)
    with pytest.raises(HookunlearnError, match="limit=-1; give a positive number"):
        parse_suite_spec("mc:limit=-1")
    with pytest.raises(HookunlearnError, match="max_tokens=1"):
        parse_suite_spec("perplexity:max_tokens=1")


def test_probe_results_are_never_reused_from_a_report(model, quick_world: Path) -> None:
    from hookunlearn.evaluation.report import reusable_results

    entities = str(quick_world / "data" / "entity_prompts.jsonl")
    probe = ProbeSuite(ProbeConfig(entities=entities, layer=1))
    qa = QASuite(QAConfig(data=str(quick_world / "data" / "entity_qa.jsonl"), limit=4))
    stored = evaluate(model, [probe, qa])
    assert stored.evaluated.results["probe"].details["probe_trained_on"].startswith("evaluated model")
    kept, missing = reusable_results(stored.evaluated, [probe, qa])
    assert set(kept.results) == {"entity_qa"} and missing == ["probe"]
    context = EvalContext()
    evaluate(model, [qa], baseline=model, context=context)
    assert context.baseline is None  # evaluate leaves the caller's context as it found it


def test_suite_names_from_data_specs() -> None:
    from hookunlearn.evaluation.standard import data_name

    assert data_name("world:mc_hazard") == "mc_hazard"
    assert data_name("/data/my_set.jsonl") == "my_set"
    assert data_name("cais/wmdp:wmdp-cyber@test") == "cais_wmdp_wmdp-cyber_test"
    assert parse_suite_spec("jailbreak:data=cais/wmdp:wmdp-cyber@test").instance_name() == (
        "jailbreak_cais_wmdp_wmdp-cyber_test"
    )
