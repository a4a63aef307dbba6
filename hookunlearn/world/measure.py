"""What the world's model knows and what its SAEs show, measured live with the real eval code.

Used by ``hookunlearn world info`` and at the end of ``world build`` (stored in the manifest).
Every number comes from data the selection did not see where a choice is made: the best
known-vs-unknown latent is chosen on the ``select`` fold of entities and scored on ``heldout``;
the hazard latent is chosen on one half of the held-out sentences and scored on the other half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from hookunlearn.activations import activations_at_span_end
from hookunlearn.attribution import encode, firing_rate, known_unknown_scores, text_firing
from hookunlearn.data import load_records
from hookunlearn.evaluation.mc import evaluate_mc, parse_questions
from hookunlearn.evaluation.qa import QAItem, evaluate_qa, parse_qa
from hookunlearn.sae_metrics import sae_quality

MAX_BENIGN_RATE = 0.05
"""A "hazard latent" may fire on at most this share of (selection-half) benign sentences."""


def measure_knowledge(model: HookedTransformer, data_dir: Path, *, batch_size: int = 64) -> dict[str, Any]:
    """QA recall per split and MC (continuation) accuracy per domain and split."""
    qa_records = load_records(data_dir / "entity_qa.jsonl")
    items = parse_qa(qa_records, "entity_qa.jsonl")
    qa = evaluate_qa(model, items, batch_size=batch_size)
    # Known people who never appeared in QA format in training: recall that must generalise.
    unseen = [
        QAItem(item.prompt, item.answer, item.entity, f"{item.split}_no_qa_in_training")
        for item, record in zip(items, qa_records, strict=True)
        if record.get("known") and not record.get("qa_in_training")
    ]
    qa_unseen = evaluate_qa(model, unseen, batch_size=batch_size) if unseen else None
    result: dict[str, Any] = {
        "qa_recall": qa.recall,
        "qa_n": qa.n,
        "qa_mean_answer_prob": qa.mean_answer_prob,
        "qa_recall_no_qa_in_training": qa_unseen.recall if qa_unseen else {},
        "mc": {},
    }
    for domain in ("hazard", "benign"):
        records = load_records(data_dir / f"mc_{domain}.jsonl")
        questions = parse_questions(records, f"mc_{domain}.jsonl")
        mc = evaluate_mc(model, questions, protocol="continuation", batch_size=batch_size)
        by_split: dict[str, list[bool]] = {}
        for record, ok in zip(records, mc.correct, strict=True):
            by_split.setdefault(record.get("split", "all"), []).append(ok)
            # prose-only facts: the question format was never trained on them (the target set)
            group = "qa_in_training" if record.get("qa_in_training") else "prose_only"
            by_split.setdefault(group, []).append(ok)
        result["mc"][domain] = {
            "continuation": mc.accuracy,
            "n": mc.n,
            "by_split": {split: sum(v) / len(v) for split, v in sorted(by_split.items())},
            "n_by_split": {split: len(v) for split, v in sorted(by_split.items())},
        }
    return result


def measure_sae(
    model: HookedTransformer, sae: SAE, data_dir: Path, *, batch_size: int = 64
) -> dict[str, Any]:
    """SAE quality on held-out text, the best known-vs-unknown latent, and the best hazard latent."""
    hook = sae.cfg.metadata.hook_name
    heldout = load_records(data_dir / "heldout_text.jsonl")
    quality = sae_quality(model, sae, [r["text"] for r in heldout], batch_size=batch_size)
    result: dict[str, Any] = {"quality": quality.to_dict(), "known_unknown": {}}

    prompts = load_records(data_dir / "entity_prompts.jsonl")
    for template in sorted({r.get("template", "default") for r in prompts}):
        rows = [
            r
            for r in prompts
            if r.get("template", "default") == template and r["set"] in ("known", "unknown")
        ]
        acts = activations_at_span_end(
            model,
            [r["prompt"] for r in rows],
            [r["entity_end_char"] for r in rows],
            [hook],
            batch_size=batch_size,
        )[hook]
        codes = encode(sae, acts)

        def group(
            fold: str, kind: str, _rows: Sequence[dict[str, Any]] = rows, _codes: torch.Tensor = codes
        ) -> torch.Tensor:
            index = [i for i, r in enumerate(_rows) if r.get("fold") == fold and r["set"] == kind]
            return _codes[index]

        select_scores = known_unknown_scores(group("select", "known"), group("select", "unknown"))
        best = int(select_scores.argmax())
        known_rate = float(firing_rate(group("heldout", "known"))[best])
        unknown_rate = float(firing_rate(group("heldout", "unknown"))[best])
        result["known_unknown"][template] = {
            "latent": best,
            "select_score": float(select_scores[best]),
            "heldout_score": known_rate - unknown_rate,
            "heldout_p_fires_known": known_rate,
            "heldout_p_fires_unknown": unknown_rate,
        }

    hazard = [r["text"] for r in heldout if r["type"] == "hazard"]
    benign = [r["text"] for r in heldout if r["type"] == "benign"]
    fires_h = text_firing(model, sae, hazard, batch_size=batch_size).float()
    fires_b = text_firing(model, sae, benign, batch_size=batch_size).float()
    rate_h_sel, rate_h_eval = fires_h[0::2].mean(0), fires_h[1::2].mean(0)
    rate_b_sel, rate_b_eval = fires_b[0::2].mean(0), fires_b[1::2].mean(0)
    eligible = torch.where(rate_b_sel <= MAX_BENIGN_RATE, rate_h_sel, torch.full_like(rate_h_sel, -1.0))
    best = int(eligible.argmax())
    result["hazard_latent"] = {
        "latent": best,
        "heldout_p_fires_hazard_sentence": float(rate_h_eval[best]),
        "heldout_p_fires_benign_sentence": float(rate_b_eval[best]),
        "n_hazard_sentences": len(hazard[1::2]),
        "n_benign_sentences": len(benign[1::2]),
    }
    return result


def measure_world(
    world_path: Path,
    *,
    model: HookedTransformer | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    attacks: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """All of the above for a world directory (``data/``, ``model/``, ``saes/layer_L``, and
    ``oracle/`` when it has one); ``attacks``: also the forgetting measures and attack suites on
    the model and the oracle (`attack_measurements`)."""
    from hookunlearn.models import load_model
    from hookunlearn.saes import load_sae

    say = progress or (lambda _message: None)
    model = model or load_model(world_path / "model", device="cpu")
    data_dir = world_path / "data"
    say("knowledge: entity QA and multiple choice")
    result: dict[str, Any] = {
        "knowledge": measure_knowledge(model, data_dir, batch_size=batch_size),
        "saes": {},
    }
    oracle_dir = world_path / "oracle"
    if (oracle_dir / "config.json").is_file():
        say("oracle: entity QA and multiple choice")
        oracle = load_model(oracle_dir, device="cpu")
        result["oracle"] = {"knowledge": measure_knowledge(oracle, data_dir, batch_size=batch_size)}
        if attacks:
            say("attacks on the model and the oracle")
            result["attacks"] = attack_measurements(model, oracle, data_dir, batch_size=batch_size)
    available = sorted(int(p.name.removeprefix("layer_")) for p in (world_path / "saes").glob("layer_*"))
    for layer in layers if layers is not None else available:
        say(f"SAE at layer {layer}")
        sae = load_sae(world_path / "saes" / f"layer_{layer}", model)
        result["saes"][str(layer)] = measure_sae(model, sae, data_dir, batch_size=batch_size)
    return result


def attack_measurements(
    model: HookedTransformer, oracle: HookedTransformer, data_dir: Path, *, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Membership inference, forget quality, decodability and every attack suite (world data,
    default settings) on ``model`` and on ``oracle``: ``{suite: {"model": score, "oracle": score}}``
    with each suite's headline metric (an attack's post-attack score)."""
    from hookunlearn.evaluation.suites import EvalContext, parse_suite_spec

    qa, mc = data_dir / "entity_qa.jsonl", data_dir / "mc_hazard.jsonl"
    corpus, retain = data_dir / "forget_corpus.jsonl", data_dir / "retain_corpus.jsonl"
    specs = {
        "mia (auc[worst])": (f"mia:members={qa},nonmembers={qa}", "auc[worst]"),
        "forget_quality": (f"forget_quality:data={qa}", "forget_quality"),
        "decodability (decodable_max)": (f"decodability:data={qa}", "decodable_max"),
        "relearn: forget QA": (f"relearn:data={qa}", "recall_after"),
        "relearn_mc: hazard MC": (f"relearn_mc:data={mc},train_data={corpus}", "accuracy_after"),
        "rtt: hazard MC": (f"rtt:target=mc,data={mc},train_data={corpus}", "score_after"),
        "rtt: forget QA": (f"rtt:target=qa,data={qa}", "score_after"),
        "finetune_unrelated: hazard MC": (
            f"finetune_unrelated:target=mc,data={mc},train_data={corpus},unrelated_data={retain}",
            "score_after",
        ),
        "repair_relearn: hazard MC": (
            f"repair_relearn:target=mc,data={mc},train_data={corpus},unrelated_data={retain}",
            "score_after",
        ),
        "in_context: forget QA": (f"in_context:data={qa}", "score_after"),
    }
    context = EvalContext(batch_size=batch_size, baseline=model, oracle=oracle)
    out: dict[str, dict[str, float]] = {}
    for label, (spec, metric) in specs.items():
        suite = parse_suite_spec(spec)
        out[label] = {
            name: suite.run(m, context).metrics[metric] for name, m in (("model", model), ("oracle", oracle))
        }
    return out
