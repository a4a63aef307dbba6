"""`hookunlearn demo`: the whole flow on the embedded world, one comparison table.

select -> build -> unlearn -> eval for each method at the same budget, on the subspace its
declaration names (``topic``: the hazardous domain; ``entity``: the forget people) and on its
declared world data; every method starts from a fresh copy of the base model, and every number
comes from the registered eval suites.
"""

from __future__ import annotations

import dataclasses
import re
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
from hookunlearn.robust import StageRef, check_stages, run_after_stages
from hookunlearn.saes import load_sae
from hookunlearn.selection import select
from hookunlearn.subspace import build
from hookunlearn.train import TrainConfig
from hookunlearn.world.oracle import ORACLE_DIR

DEMO_METHODS: tuple[str, ...] = ("sspu", "rmu", "ga", "align", "sspu+distill", "base+distill")
"""The demo's default methods: the plain ones, the pipeline that held best under attack across
worlds (docs/methods/robust.md) and its control (distillation alone, no unlearning); any
registered method may be asked for, alone or as a pipeline with robustness stages (``sspu+lat``,
``align+distill:alpha=0.3``; `parse_pipeline`)."""


CONTROL = "base"
"""``base+distill``: the control row, the after stages alone on the base model (no unlearning)."""


def parse_pipeline(text: str) -> tuple[str, tuple[StageRef, ...]]:
    """``METHOD[+STAGE[:KEY=VALUE,...]]...`` -> (method, its stages), each checked; ``base+STAGE``
    runs only after stages, on the base model (the control: what distillation alone does)."""
    # "+" followed by a name separates stages ("rho=1e+0" keeps its exponent)
    method, *stages = (part.strip() for part in re.split(r"\+(?=[A-Za-z_])", text))
    refs = check_stages(stages)
    if method == CONTROL:
        if not refs or any(ref.spec.where != "after" for ref in refs):
            raise HookunlearnError(
                f"--methods {text!r}: 'base+' takes only after stages (e.g. base+distill)."
            )
        return method, refs
    method_spec(method)
    return method, refs


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
        "decodable": metrics["decodability"]["decodable_max"],
        "attacks_hazard_mc": {name: metrics[key][field] for name, (key, field) in MC_ATTACKS.items()},
        "attacks_qa_forget": {name: metrics[key][field] for name, (key, field) in QA_ATTACKS.items()},
        "forget_quality": metrics["forget_quality"]["forget_quality"]
        if "forget_quality" in metrics
        else None,
        "seconds": seconds,
        "stages": [],
    }


MC_ATTACKS: dict[str, tuple[str, str]] = {
    "relearn": ("relearn_mc", "accuracy_after"),
    "rtt": ("rtt_mc", "score_after"),
    "finetune_unrelated": ("finetune_unrelated_mc", "score_after"),
    "repair_relearn": ("repair_relearn_mc", "score_after"),
    "ablation": ("ablation_mc", "score_after"),
}
"""The attacks on the hazardous domain: name -> (suite key, post-attack metric)."""
QA_ATTACKS: dict[str, tuple[str, str]] = {
    "relearn": ("relearn", "recall_after"),
    "rtt": ("rtt_qa", "score_after"),
    "finetune_unrelated": ("finetune_unrelated_qa", "score_after"),
    "repair_relearn": ("repair_relearn_qa", "score_after"),
    "ablation": ("ablation_qa", "score_after"),
    "in_context": ("in_context", "score_after"),
}
"""The attacks on the forget people's facts."""


def _literature_attacks(data: Path, grid: str) -> dict[str, Any]:
    from hookunlearn.evaluation.robustness import (
        DecodabilityConfig,
        DecodabilitySuite,
        InContextConfig,
        InContextSuite,
        RepairRelearnSuite,
        RTTConfig,
        RTTSuite,
        UnrelatedConfig,
        UnrelatedFinetuneSuite,
    )

    if grid not in ("full", "small"):
        raise HookunlearnError(f"--attack-grid {grid!r}: choose 'full' or 'small'.")
    small = {"lrs": (1e-4,), "steps": (20,)} if grid == "small" else {}
    mc = {"data": str(data / "mc_hazard.jsonl"), "train_data": str(data / "forget_corpus.jsonl")}
    qa = {"data": str(data / "entity_qa.jsonl")}
    unrelated = {"unrelated_data": str(data / "retain_corpus.jsonl")}
    return {
        "rtt_mc": RTTSuite(RTTConfig(target="mc", **mc, **small)),
        "rtt_qa": RTTSuite(RTTConfig(target="qa", **qa, **small)),
        "finetune_unrelated_mc": UnrelatedFinetuneSuite(UnrelatedConfig(target="mc", **mc, **unrelated)),
        "finetune_unrelated_qa": UnrelatedFinetuneSuite(UnrelatedConfig(target="qa", **qa, **unrelated)),
        "repair_relearn_mc": RepairRelearnSuite(UnrelatedConfig(target="mc", **mc, **unrelated)),
        "repair_relearn_qa": RepairRelearnSuite(UnrelatedConfig(target="qa", **qa, **unrelated)),
        "in_context": InContextSuite(InContextConfig(data=qa["data"])),
        "decodability": DecodabilitySuite(DecodabilityConfig(data=qa["data"])),
    }


def _ablations(data: Path, layer: int) -> dict[str, Any]:
    """Ablation of the top difference direction (vs the base model) at the row's hooked layer."""
    from hookunlearn.evaluation.robustness import AblationConfig, AblationSuite

    forget = str(data / "forget_corpus.jsonl")
    return {
        "ablation_mc": AblationSuite(
            AblationConfig(target="mc", data=str(data / "mc_hazard.jsonl"), forget_texts=forget, layer=layer)
        ),
        "ablation_qa": AblationSuite(
            AblationConfig(
                target="qa",
                data=str(data / "entity_qa.jsonl"),
                forget_texts=str(data / "forget_entities_corpus.jsonl"),
                layer=layer,
            )
        ),
    }


def _gaps(row: dict[str, Any], oracle: dict[str, Any] | None) -> None:
    """Add the gaps to the oracle's row: before any attack, and the worst attack (the largest
    post-attack score, and the largest post-attack score above the oracle's under the same attack)."""
    row["gap_hazard_mc"] = row["hazard_mc"] - oracle["hazard_mc"] if oracle is not None else None
    row["gap_qa_forget"] = row["qa_forget"] - oracle["qa_forget"] if oracle is not None else None
    for target in ("hazard_mc", "qa_forget"):
        scores = row[f"attacks_{target}"]
        worst = max(scores, key=scores.__getitem__)
        row[f"worst_attack_{target}"], row[f"worst_attack_{target}_name"] = scores[worst], worst
        if oracle is None:
            row[f"worst_attack_gap_{target}"] = row[f"worst_attack_gap_{target}_name"] = None
            continue
        gaps = {name: value - oracle[f"attacks_{target}"][name] for name, value in scores.items()}
        worst_gap = max(gaps, key=gaps.__getitem__)
        row[f"worst_attack_gap_{target}"], row[f"worst_attack_gap_{target}_name"] = gaps[worst_gap], worst_gap


def run_demo(
    world: Path,
    *,
    methods: Sequence[str] = DEMO_METHODS,
    train: TrainConfig | None = None,
    k: int = 32,
    attack_grid: str = "full",
    progress: Callable[[str], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the flow on the world directory ``world``; returns the table rows and the choices made
    (``on_row`` is called with each row as soon as it is measured, before the gaps to the oracle).
    ``attack_grid``: ``full`` (the RTT grid of `RTTConfig`) or ``small`` (one learning rate and
    step count, full and LoRA: for tests)."""
    say = progress or (lambda _message: None)
    data = world / "data"
    train = train or TrainConfig()
    base = load_model(world / "model", device="cpu")
    saes = [load_sae(world / "saes" / f"layer_{layer}", base) for layer in range(base.cfg.n_layers)]
    forget = load_texts(data / "forget_corpus.jsonl")
    retain = load_texts(data / "retain_corpus.jsonl")
    prompts = parse_entity_prompts(load_records(data / "entity_prompts.jsonl"), "entity_prompts")
    pipelines = [(entry, *parse_pipeline(entry)) for entry in methods]

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

    attacks |= _literature_attacks(data, attack_grid)

    def measure(model: Any, layer: int) -> dict[str, dict[str, float]]:
        suites = knowledge | attacks | _ablations(data, layer)
        return {key: suite.run(model, context).metrics for key, suite in suites.items()}

    say("base model")
    rows = [_row("base", None, measure(base, topic.chosen_layer))]
    if on_row is not None:
        on_row(rows[-1])
    oracle_row = None
    if oracle is not None:
        say("oracle (never saw the forget set)")
        oracle_row = _row("oracle", None, measure(oracle, topic.chosen_layer))
        rows.append(oracle_row)
        if on_row is not None:
            on_row(oracle_row)
    for entry, name, stages in pipelines:
        if name == CONTROL:
            say(f"{entry}: the control (no unlearning) + eval")
            model = load_model(world / "model", device="cpu")
            start = time.perf_counter()
            records = run_after_stages(model, stages, world)
            row = _row(entry, time.perf_counter() - start, measure(model, topic.chosen_layer))
            row["stages"] = records
            rows.append(row)
            if on_row is not None:
                on_row(row)
            continue
        spec = method_spec(name)
        say(f"{entry}: unlearn + eval")
        model = load_model(world / "model", device="cpu")
        # every method gets a subspace (it gives the layer); the one it declares, else the topic one
        subspace, layer = (
            (entity_sub, entity.chosen_layer)
            if spec.subspace == "entity"
            else (topic_sub, topic.chosen_layer)
        )
        start = time.perf_counter()
        outcome = unlearn_model(
            model,
            spec.name,
            subspace=subspace,
            sae=load_sae(world / "saes" / f"layer_{layer}", model) if spec.needs_sae else None,
            forget=_world_texts(data, spec.world_data.get("forget")),
            retain=_world_texts(data, spec.world_data.get("retain")),
            train=train,
            stages=stages,
            world_dir=world,
        )
        seconds = time.perf_counter() - start
        row = _row(entry, seconds, measure(model, layer))
        row["stages"] = outcome.stages
        rows.append(row)
        if on_row is not None:
            on_row(row)
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
        "attack_grid": attack_grid,
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
per-item answer NLL against the oracle (high: indistinguishable); decodable = share of forget
people whose answer a base-trained linear read-out finds in some layer; gap = minus the oracle's
value (the oracle: the same training run without the forget set). Worst-case attack = the highest
hazard MC / forget QA recall over the attacks (relearn, the RTT grid of full and LoRA fine-tuning,
fine-tuning on unrelated text, repair then relearn, ablation of the top difference direction, and
for QA in-context facts), every attack scored on held-out facts or people; worst-case gap = the
largest excess over the oracle's score under the same attack (the control).
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
        "| forget quality | decodable | gap to oracle: hazard MC / QA forget "
        "| worst-case attack: hazard MC / QA forget | worst-case gap to oracle: hazard MC / QA forget | s |"
    )
    lines = [header, "|" + "---|" * 17]
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
            f"{_pct(row['worst_attack_hazard_mc'])} ({row['worst_attack_hazard_mc_name']}) / "
            f"{_pct(row['worst_attack_qa_forget'])} ({row['worst_attack_qa_forget_name']})"
        )
        worst_gap = (
            f"{_signed(row['worst_attack_gap_hazard_mc'])} ({row['worst_attack_gap_hazard_mc_name']}) / "
            f"{_signed(row['worst_attack_gap_qa_forget'])} ({row['worst_attack_gap_qa_forget_name']})"
            if row["worst_attack_gap_hazard_mc"] is not None
            else ""
        )
        lines.append(
            f"| {row['method']} | {_pct(row['hazard_mc'])} | {_pct(row['benign_mc'])} | {_pct(row['qa_forget'])} | "
            f"{_pct(row['qa_retain'])} | {_pct(row['qa_unknown'])} | {_pct(row['probe_targets_unknown'])} | {codes} | "
            f"{_pct(row['relearn_hazard_mc'])} | {_pct(row['relearn_qa_forget'])} | {row['mia_auc_worst']:.3f} | "
            f"{quality} | {row['decodable']:.1%} | {gap} | {worst} | {worst_gap} | {seconds} |"
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
    attack_grid: str = "full"
    """``full``: the RTT grid of every learning rate and step count; ``small``: one of each."""
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
    from hookunlearn.html_report import write_html_report
    from hookunlearn.world.assets import world_dir

    if config.out is not None:
        check_can_write(config.out, force=config.force)
    unknown = [name for name in config.methods if name.split("+")[0].strip() not in (*METHODS, "base")]
    if unknown:
        raise HookunlearnError(
            f"--methods: {', '.join(unknown)} not available in the demo; use any of {', '.join(METHODS)}, "
            "alone or with stages (e.g. sspu+lat)."
        )
    for entry in config.methods:
        parse_pipeline(entry)
    if config.attack_grid not in ("full", "small"):  # before any work, not after select and build
        raise HookunlearnError(f"--attack-grid {config.attack_grid!r}: choose 'full' or 'small'.")
    path = Path(config.world) if config.world else world_dir()
    result = run_demo(
        path,
        methods=config.methods,
        train=TrainConfig(steps=config.steps),
        k=config.k,
        attack_grid=config.attack_grid,
        progress=progress,
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
            write_html_report(tmp, fallback=True)  # report.html, from the files just written
    return DemoResult(result, table, path, Path(config.out) if config.out is not None else None)
