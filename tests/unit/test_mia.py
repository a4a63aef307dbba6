"""Membership-inference scores, the AUC and the KS test (hand-checked and against scipy), and the
oracle's training text (the world's minus the forget set)."""

from __future__ import annotations

import random

import pytest

from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.mia import auc, ks_2samp


def test_auc_counts_wins_and_half_ties() -> None:
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auc([1.0, 3.0], [2.0]) == 0.5
    assert auc([2.0], [2.0]) == 0.5
    with pytest.raises(HookunlearnError):
        auc([], [1.0])


def test_ks_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n, m, shift in ((30, 40, 0.0), (50, 50, 0.5), (20, 80, 1.5), (200, 150, 0.1)):
        a = [rng.gauss(0, 1) for _ in range(n)]
        b = [rng.gauss(shift, 1) for _ in range(m)]
        d, p = ks_2samp(a, b)
        reference = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(reference.statistic, abs=1e-12)
        assert p == pytest.approx(reference.pvalue, abs=0.03)


def test_ks_of_identical_samples_is_one() -> None:
    sample = [0.1, 0.5, 0.2, 0.9]
    assert ks_2samp(sample, list(sample)) == (0.0, 1.0)


def test_oracle_text_is_the_world_text_minus_the_forget_set() -> None:
    from hookunlearn.world.generator import WorldConfig, generate_world
    from hookunlearn.world.oracle import forget_share, oracle_units

    world = generate_world(WorldConfig.quick(0))
    tagged = world.tagged_training_units(0)
    kept = oracle_units(world, 0)
    assert kept == [u.text for u in tagged if u.split != "forget"]
    removed = [u for u in tagged if u.split == "forget"]
    assert {u.kind for u in removed} >= {"biography", "hazard"}
    forget_names = {p.name for p in world.forget_people}
    forget_facts = {f for f in world.hazard_facts if f.split == "forget"}
    for text in kept:
        assert not any(name in text for name in forget_names)
        assert not any(sentence == text for fact in forget_facts for sentence in fact.sentences)
    share = forget_share(world)
    assert 0 < share["units"] < 0.5 and 0 < share["chars"] < 0.5


def test_report_worst_case_takes_the_highest_post_attack_score_per_target() -> None:
    from hookunlearn.evaluation.report import EvalReport, ModelResults, to_markdown
    from hookunlearn.evaluation.suites import SuiteResult

    def result(suite: str, name: str, metrics: dict, config: dict | None = None) -> SuiteResult:
        return SuiteResult(suite, name, 1, config or {}, metrics)

    evaluated = ModelResults(
        {"spec": "m"},
        {
            "rtt_qa": result("rtt", "rtt_qa", {"score_before": 0.0, "score_after": 0.6}, {"target": "qa"}),
            "relearn_entity_qa": result("relearn", "relearn_entity_qa", {"recall_after": 0.9}),
            "relearn_mc_hazard": result("relearn_mc", "relearn_mc_hazard", {"accuracy_after": 0.7}),
            "entity_qa": result("qa", "entity_qa", {"recall[forget]": 0.99}),
        },
    )
    oracle = ModelResults(
        {"spec": "o"}, {"relearn_entity_qa": result("relearn", "relearn_entity_qa", {"recall_after": 0.1})}
    )
    report = EvalReport(evaluated, oracle=oracle)
    worst = report.worst_case()
    assert worst["qa"] == {
        "suite": "relearn_entity_qa",
        "metric": "recall_after",
        "value": 0.9,
        "oracle": 0.1,
    }
    assert worst["mc"]["suite"] == "relearn_mc_hazard" and worst["mc"]["oracle"] is None
    assert (
        "- qa: relearn_entity_qa recall_after = 0.900 (oracle under the same attack: 0.100)"
        in to_markdown(report)
    )
