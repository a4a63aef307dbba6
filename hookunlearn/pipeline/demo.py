"""`hookunlearn demo`: the whole flow on the embedded world, one comparison table.

select -> build -> unlearn -> eval for ``sspu`` on the hazardous domain and ``align`` on the
forget entities, plus ``rmu`` and ``ga`` at the same budget; every method starts from a fresh
copy of the base model, and every number comes from the real eval code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hookunlearn.data import load_records, load_texts
from hookunlearn.evaluation.activation import ProbeConfig, ProbeSuite
from hookunlearn.evaluation.attacks import RelearnConfig, RelearnMCConfig, RelearnMCSuite, RelearnSuite
from hookunlearn.evaluation.suites import EvalContext
from hookunlearn.models import load_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import parse_entity_prompts, select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig
from hookunlearn.unlearn import unlearn
from hookunlearn.world.measure import measure_knowledge

DEMO_METHODS: tuple[str, ...] = ("sspu", "rmu", "ga", "align")


def _row(
    name: str, knowledge: dict[str, Any], seconds: float | None, attacks: dict[str, dict[str, float]]
) -> dict[str, Any]:
    probe = attacks["probe"]
    return {
        "method": name,
        "hazard_mc": knowledge["mc"]["hazard"]["continuation"],
        "benign_mc": knowledge["mc"]["benign"]["continuation"],
        "qa_forget": knowledge["qa_recall"]["forget"],
        "qa_retain": knowledge["qa_recall"]["retain"],
        "qa_unknown": knowledge["qa_recall"]["unknown"],
        "probe_targets_unknown": probe["probe_target_judged_unknown"],
        "target_code_to_known": probe.get("code_distance[known]"),
        "target_code_to_unknown": probe.get("code_distance[unknown]"),
        "relearn_hazard_mc": attacks["relearn_mc"]["accuracy_after"],
        "relearn_hazard_mc_before": attacks["relearn_mc"]["accuracy_before"],
        "relearn_qa_forget": attacks["relearn"]["recall_after"],
        "relearn_qa_forget_before": attacks["relearn"]["recall_before"],
        "seconds": seconds,
    }


def run_demo(
    world: Path,
    *,
    methods: Sequence[str] = DEMO_METHODS,
    train: TrainConfig | None = None,
    k: int = 32,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the flow on the world directory ``world``; returns the table rows and the choices made."""
    say = progress or (lambda _message: None)
    data = world / "data"
    train = train or TrainConfig()
    base = load_model(world / "model", device="cpu")
    saes = [load_sae(world / "saes" / f"layer_{layer}", base) for layer in range(base.cfg.n_layers)]
    forget = load_texts(data / "forget_corpus.jsonl")
    retain = load_texts(data / "retain_corpus.jsonl")
    forget_entities = load_texts(data / "forget_entities_corpus.jsonl")
    retain_entities = load_texts(data / "retain_entities_corpus.jsonl")
    prompts = parse_entity_prompts(load_records(data / "entity_prompts.jsonl"), "entity_prompts")

    say("select + build (topic)")
    topic = select(base, saes, forget=forget, retain=retain)
    topic_sub = build(topic, saes[topic.chosen_layer], k=k)
    say("select + build (entity)")
    entity = select(base, saes, objective="entity", entities=prompts)
    entity_k = min(k, len(entity.chosen.ranked()) // 2)
    entity_sub = build(entity, saes[entity.chosen_layer], k=entity_k)
    entity_sae = saes[entity.chosen_layer]

    context = EvalContext(batch_size=64, baseline=base, subspace=entity_sub, sae=entity_sae)
    suites = {
        "probe": ProbeSuite(ProbeConfig(entities=str(data / "entity_prompts.jsonl"))),
        "relearn": RelearnSuite(RelearnConfig(data=str(data / "entity_qa.jsonl"))),
        "relearn_mc": RelearnMCSuite(
            RelearnMCConfig(data=str(data / "mc_hazard.jsonl"), train_data=str(data / "forget_corpus.jsonl"))
        ),
    }

    def attacks(model: Any) -> dict[str, dict[str, float]]:
        return {key: suite.run(model, context).metrics for key, suite in suites.items()}

    say("base model")
    rows = [_row("base", measure_knowledge(base, data), None, attacks(base))]
    for method in methods:
        say(f"{method}: unlearn + eval")
        model = load_model(world / "model", device="cpu")
        start = time.perf_counter()
        if method == "align":
            unlearn(
                model,
                "align",
                subspace=entity_sub,
                sae=load_sae(world / "saes" / f"layer_{entity.chosen_layer}", model),
                forget=forget_entities,
                retain=retain_entities,
                train=train,
            )
        else:
            unlearn(model, method, subspace=topic_sub, forget=forget, retain=retain, train=train)
        seconds = time.perf_counter() - start
        rows.append(_row(method, measure_knowledge(model, data), seconds, attacks(model)))
    return {
        "rows": rows,
        "topic_layer": topic.chosen_layer,
        "entity_layer": entity.chosen_layer,
        "k": k,
        "entity_k": entity_k,
        "train": {"steps": train.steps, "lr": train.lr, "batch_size": train.batch_size},
        "attacks": {key: dataclasses.asdict(suite.config) for key, suite in suites.items()},
    }


TABLE_LEGEND = """\
Columns: hazard/benign MC = continuation accuracy on the hazardous/benign domain (chance 25%);
QA = greedy recall of the forget/retain/unknown people's facts; probe = share of target people a
known-vs-unknown probe trained on the base model's layer activations calls unknown; code =
distance of the targets' mean SAE code to the known / unknown centroid; relearn = the attack:
fine-tune a copy for 20 steps on half of the facts, then hazard MC / forget QA on the other half.
"""


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison table as Markdown (what `report.md` holds)."""
    header = (
        "| method | hazard MC | benign MC | QA forget | QA retain | QA unknown | probe: targets unknown "
        "| target code d(known) / d(unknown) | relearn: hazard MC | relearn: QA forget | s |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in result["rows"]:
        codes = (
            f"{row['target_code_to_known']:.1f} / {row['target_code_to_unknown']:.1f}"
            if row["target_code_to_known"] is not None
            else ""
        )
        seconds = f"{row['seconds']:.0f}" if row["seconds"] is not None else ""
        lines.append(
            f"| {row['method']} | {row['hazard_mc']:.1%} | {row['benign_mc']:.1%} | {row['qa_forget']:.1%} | "
            f"{row['qa_retain']:.1%} | {row['qa_unknown']:.1%} | {row['probe_targets_unknown']:.1%} | {codes} | "
            f"{row['relearn_hazard_mc']:.1%} | {row['relearn_qa_forget']:.1%} | {seconds} |"
        )
    return "\n".join(lines) + "\n\n" + TABLE_LEGEND
