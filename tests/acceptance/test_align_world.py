"""`align` with all defaults on the shipped world meets the issue's target (measured, not tuned here):
forget-entity recall <= 10%, retain-entity recall within 3 points of the base model, and the forget
entities' mean code nearer the unknown centroid than the known one. Retain recall is also checked on
the held-out fold, whose QA format the preservation corpus never contains."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookunlearn.data import load_records, load_texts
from hookunlearn.entities import parse_entity_prompts
from hookunlearn.evaluation.qa import QAItem, evaluate_qa
from hookunlearn.models import load_model
from hookunlearn.pipeline.unlearn import unlearn_model
from hookunlearn.saes import load_sae
from hookunlearn.selection import entity_stats, select
from hookunlearn.subspace import build
from hookunlearn.world.assets import world_dir


@pytest.mark.slow
def test_align_defaults_forget_the_target_people_and_keep_the_others() -> None:
    data = Path(world_dir()) / "data"
    model = load_model("world", device="cpu")
    records = load_records(data / "entity_qa.jsonl")
    items = [QAItem(r["prompt"], r["answer"], r["entity"], f"{r['split']}_{r['fold']}") for r in records]
    by_split = [QAItem(r["prompt"], r["answer"], r["entity"], r["split"]) for r in records]
    base = evaluate_qa(model, by_split).recall
    saes = [load_sae(f"world:{layer}", model) for layer in range(model.cfg.n_layers)]
    prompts = parse_entity_prompts(load_records("world:entity_prompts"), "entity_prompts")
    selection = select(model, saes, objective="entity", entities=prompts)
    sae = saes[selection.chosen_layer]
    subspace = build(selection, sae)
    unlearn_model(
        model,
        "align",
        subspace=subspace,
        sae=sae,
        forget=load_texts("world:forget_entities_corpus"),
        retain=load_texts("world:retain_entities_corpus"),
    )
    after = evaluate_qa(model, by_split).recall
    folds = evaluate_qa(model, items).recall
    assert after["forget"] <= 0.10
    assert after["retain"] >= base["retain"] - 0.03
    assert folds["retain_heldout"] >= base["retain"] - 0.03
    targets = [p for p in prompts if p.set == "target"]
    code = entity_stats(model, {selection.chosen_layer: sae}, targets)[selection.chosen_layer][
        "target"
    ].mean_code
    to_known = float((code - subspace.centroids["code_known_all"]).norm())
    to_unknown = float((code - subspace.centroids["code_unknown_all"]).norm())
    assert to_unknown < to_known
