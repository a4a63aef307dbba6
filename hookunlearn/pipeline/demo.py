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
from hookunlearn.evaluation.mia import ForgetQualityConfig, ForgetQualitySuite, MIAConfig, MIASuite
from hookunlearn.evaluation.standard import MCConfig, MCSuite, QAConfig, QASuite
from hookunlearn.evaluation.suites import EvalContext
from hookunlearn.models import load_model
from hookunlearn.objectives import METHODS, method_spec
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig
from hookunlearn.world.oracle import ORACLE_DIR

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
        "mia_auc_worst": metrics["mia"]["auc[worst]"],
        "forget_quality": metrics["forget_quality"]["forget_quality"]
        if "forget_quality" in metrics
        else None,
        "seconds": seconds,
    }


def _gaps(row: dict[str, Any], oracle: dict[str, Any] | None) -> None:
    """Add the gaps to the oracle's row: before any attack and after the worst one."""
    keys = {
        "gap_hazard_mc": ("hazard_mc", "hazard_mc"),
        "gap_qa_forget": ("qa_forget", "qa_forget"),
        "worst_attack_hazard_mc": ("relearn_hazard_mc", None),
        "worst_attack_qa_forget": ("relearn_qa_forget", None),
        "worst_attack_gap_hazard_mc": ("relearn_hazard_mc", "relearn_hazard_mc"),
        "worst_attack_gap_qa_forget": ("relearn_qa_forget", "relearn_qa_forget"),
    }
    for key, (mine, theirs) in keys.items():
        if theirs is None:
            row[key] = row[mine]  # the worst case over the demo's attacks (relearning only, today)
        else:
            row[key] = row[mine] - oracle[theirs] if oracle is not None else None


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

    oracle_dir = world / ORACLE_DIR
    oracle = load_model(oracle_dir, device="cpu") if (oracle_dir / "config.json").is_file() else None
    context = EvalContext(batch_size=64, baseline=base, subspace=entity_sub, sae=entity_sae, oracle=oracle)
    qa_data = str(data / "entity_qa.jsonl")
    knowledge = {
        "mc_hazard": MCSuite(MCConfig(data=str(data / "mc_hazard.jsonl"))),
        "mc_benign": MCSuite(MCConfig(data=str(data / "mc_benign.jsonl"))),
        "qa": QASuite(QAConfig(data=qa_data)),
        "mia": MIASuite(MIAConfig(members=qa_data, nonmembers=qa_data)),
    }
    if oracle is not None:
        knowledge["forget_quality"] = ForgetQualitySuite(ForgetQualityConfig(data=qa_data))
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
    oracle_row = None
    if oracle is not None:
        say("oracle (never saw the forget set)")
        oracle_row = _row("oracle", None, measure(oracle))
        rows.append(oracle_row)
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
    for row in rows:
        _gaps(row, oracle_row)
    return {
        "rows": rows,
        "topic_layer": topic.chosen_layer,
        "entity_layer": entity.chosen_layer,
        "k": k,
        "entity_k": entity_k,
        "oracle": str(oracle_dir) if oracle is not None else None,
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
fine-tune a copy for 20 steps on half of the facts, then hazard MC / forget QA on the other half;
MIA = the strongest membership-inference AUC (LOSS, zlib, Min-K%++) of the forget people's QA
lines vs the unknown people's (0.5: indistinguishable); forget quality = TOFU's KS p-value of
per-item answer NLL against the oracle (high: indistinguishable); gap = minus the oracle's value
(the oracle: the same training run without the forget set), before any attack and after the
worst attack the demo runs (relearning).
"""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.1f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison table as Markdown (what `report.md` holds)."""
    header = (
        "| method | hazard MC | benign MC | QA forget | QA retain | QA unknown | probe: targets unknown "
        "| target code d(known) / d(unknown) | relearn: hazard MC | relearn: QA forget | MIA AUC "
        "| forget quality | gap to oracle: hazard MC / QA forget | worst attack, gap to oracle: hazard MC / QA forget | s |"
    )
    lines = [header, "|" + "---|" * 15]
    for row in result["rows"]:
        codes = (
            f"{row['target_code_to_known']:.1f} / {row['target_code_to_unknown']:.1f}"
            if row["target_code_to_known"] is not None
            else ""
        )
        seconds = f"{row['seconds']:.0f}" if row["seconds"] is not None else ""
        quality = f"{row['forget_quality']:.2g}" if row.get("forget_quality") is not None else ""
        gap = (
            f"{_signed(row['gap_hazard_mc'])} / {_signed(row['gap_qa_forget'])}"
            if row["gap_hazard_mc"] is not None
            else ""
        )
        worst = (
            f"{_signed(row['worst_attack_gap_hazard_mc'])} / {_signed(row['worst_attack_gap_qa_forget'])}"
            if row["worst_attack_gap_hazard_mc"] is not None
            else ""
        )
        lines.append(
            f"| {row['method']} | {_pct(row['hazard_mc'])} | {_pct(row['benign_mc'])} | {_pct(row['qa_forget'])} | "
            f"{_pct(row['qa_retain'])} | {_pct(row['qa_unknown'])} | {_pct(row['probe_targets_unknown'])} | {codes} | "
            f"{_pct(row['relearn_hazard_mc'])} | {_pct(row['relearn_qa_forget'])} | {row['mia_auc_worst']:.3f} | "
            f"{quality} | {gap} | {worst} | {seconds} |"
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
    if unknown:
        raise HookunlearnError(
            f"--methods: {', '.join(unknown)} not available in the demo; use any of {', '.join(METHODS)}."
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
