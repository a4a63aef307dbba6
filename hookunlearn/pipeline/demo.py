"""`hookunlearn demo`: the whole flow on the embedded world, one comparison table.

select -> build -> unlearn -> eval for each method at the same budget, on the subspace its
declaration names (``topic``: the hazardous domain; ``entity``: the forget people) and on its
declared world data; every method starts from a fresh copy of the base model, and every number
comes from the registered eval suites.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.errors import HookunlearnError
from hookunlearn.evaluation.activation import ProbeConfig, ProbeSuite
from hookunlearn.evaluation.attacks import RelearnConfig, RelearnMCConfig, RelearnMCSuite, RelearnSuite
from hookunlearn.evaluation.standard import MCConfig, MCSuite, QAConfig, QASuite
from hookunlearn.evaluation.suites import EvalContext
from hookunlearn.models import load_model
from hookunlearn.objectives import METHODS, method_spec
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig

DEMO_METHODS: tuple[str, ...] = ("sspu", "rmu", "ga", "align")
"""The demo's default methods; any registered method may be asked for."""


def _row(name: str, seconds: float | None, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    probe, qa = metrics["probe"], metrics["qa"]
    return {
        "method": name,
        "hazard_mc": metrics["mc_hazard"]["accuracy"],
        "benign_mc": metrics["mc_benign"]["accuracy"],
        "qa_forget": qa["recall[forget]"],
        "qa_retain": qa["recall[retain]"],
        "qa_unknown": qa["recall[unknown]"],
        "probe_targets_unknown": probe["probe_target_judged_unknown"],
        "target_code_to_known": probe.get("code_distance[known]"),
        "target_code_to_unknown": probe.get("code_distance[unknown]"),
        "relearn_hazard_mc": metrics["relearn_mc"]["accuracy_after"],
        "relearn_hazard_mc_before": metrics["relearn_mc"]["accuracy_before"],
        "relearn_qa_forget": metrics["relearn"]["recall_after"],
        "relearn_qa_forget_before": metrics["relearn"]["recall_before"],
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
    prompts = parse_entity_prompts(load_records(data / "entity_prompts.jsonl"), "entity_prompts")
    specs = [method_spec(name) for name in methods]

    say("select + build (topic)")
    topic = select(base, saes, forget=forget, retain=retain)
    topic_sub = build(topic, saes[topic.chosen_layer], k=k)
    say("select + build (entity)")
    entity = select(base, saes, objective="entity", entities=prompts)
    entity_k = min(k, len(entity.chosen.ranked()) // 2)
    entity_sub = build(entity, saes[entity.chosen_layer], k=entity_k)
    entity_sae = saes[entity.chosen_layer]

    context = EvalContext(batch_size=64, baseline=base, subspace=entity_sub, sae=entity_sae)
    knowledge = {
        "mc_hazard": MCSuite(MCConfig(data=str(data / "mc_hazard.jsonl"))),
        "mc_benign": MCSuite(MCConfig(data=str(data / "mc_benign.jsonl"))),
        "qa": QASuite(QAConfig(data=str(data / "entity_qa.jsonl"))),
    }
    attacks = {
        "probe": ProbeSuite(ProbeConfig(entities=str(data / "entity_prompts.jsonl"))),
        "relearn": RelearnSuite(RelearnConfig(data=str(data / "entity_qa.jsonl"))),
        "relearn_mc": RelearnMCSuite(
            RelearnMCConfig(data=str(data / "mc_hazard.jsonl"), train_data=str(data / "forget_corpus.jsonl"))
        ),
    }

    def measure(model: Any) -> dict[str, dict[str, float]]:
        return {key: suite.run(model, context).metrics for key, suite in (knowledge | attacks).items()}

    say("base model")
    rows = [_row("base", None, measure(base))]
    for spec in specs:
        say(f"{spec.name}: unlearn + eval")
        model = load_model(world / "model", device="cpu")
        # every method gets a subspace (it gives the layer); the one it declares, else the topic one
        subspace, layer = (
            (entity_sub, entity.chosen_layer)
            if spec.subspace == "entity"
            else (topic_sub, topic.chosen_layer)
        )
        start = time.perf_counter()
        unlearn_model(
            model,
            spec.name,
            subspace=subspace,
            sae=load_sae(world / "saes" / f"layer_{layer}", model) if spec.needs_sae else None,
            forget=_world_texts(data, spec.world_data.get("forget")),
            retain=_world_texts(data, spec.world_data.get("retain")),
            train=train,
        )
        seconds = time.perf_counter() - start
        rows.append(_row(spec.name, seconds, measure(model)))
    return {
        "rows": rows,
        "topic_layer": topic.chosen_layer,
        "entity_layer": entity.chosen_layer,
        "k": k,
        "entity_k": entity_k,
        "train": {"steps": train.steps, "lr": train.lr, "batch_size": train.batch_size},
        "attacks": {key: dataclasses.asdict(suite.config) for key, suite in attacks.items()},
    }


def _world_texts(data: Path, spec: str | None) -> list[str] | None:
    """A method's declared world data (``world:NAME``) read from this world's ``data/``."""
    from hookunlearn.sources import split

    parts = split(spec) if spec else None
    if parts is None:
        return None
    return load_texts(data / f"{parts[1]}.jsonl")


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


@dataclass(frozen=True)
class DemoConfig:
    """Everything ``hookunlearn demo`` takes; `demo(config)` runs it."""

    out: str | None = "demo-report"
    """Directory for report.json, report.md and manifest.json (None: write nothing)."""
    methods: tuple[str, ...] = DEMO_METHODS
    """Any registered weight-editing methods (`hookunlearn.objectives.METHODS`)."""
    steps: int = 300
    """Optimiser steps per method (the same budget for all)."""
    k: int = 32
    world: str | None = None
    """A world directory (default: the active world, ``$HOOKUNLEARN_WORLD`` or the shipped one)."""
    force: bool = False


@dataclass
class DemoResult:
    result: dict[str, Any]
    """Rows (one per model) and the choices made (layers, k, train settings, attack configs)."""
    table: str
    """The comparison table as Markdown (what ``report.md`` holds)."""
    world: Path
    out: Path | None


def demo(config: DemoConfig, *, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole flow on the world and write the comparison (atomically)."""
    from hookunlearn.artifacts import MANIFEST_NAME, Manifest, check_can_write, run_directory, write_json
    from hookunlearn.world.assets import world_dir

    if config.out is not None:
        check_can_write(config.out, force=config.force)
    unknown = [name for name in config.methods if name not in METHODS]
    if unknown or not config.methods:
        raise HookunlearnError(
            f"--methods: {', '.join(unknown) or 'none given'} not available in the demo; use any of {', '.join(METHODS)}."
        )
    path = Path(config.world) if config.world else world_dir()
    result = run_demo(
        path, methods=config.methods, train=TrainConfig(steps=config.steps), k=config.k, progress=progress
    )
    table = markdown_table(result)
    if config.out is not None:
        manifest = Manifest(
            kind="report",
            command="hookunlearn demo",
            options={"methods": list(config.methods), "steps": config.steps, "world": str(path)},
        )
        with run_directory(config.out, force=config.force) as tmp:
            write_json(tmp / "report.json", result)
            (tmp / "report.md").write_text(table, encoding="utf-8")
            (tmp / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return DemoResult(result, table, path, Path(config.out) if config.out is not None else None)
