"""The model card (``README.md``) an export carries: YAML metadata for the Hub, then prose.

Built from the export record (``hookunlearn.json``) alone, so it says only what hookunlearn
knows: the base model, the method and its options, fingerprints of the forget and retain data
(hashes and sizes, never the texts), the verification, the evaluation when a report is given,
and the intended use and limits every unlearned checkpoint shares. Torch-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["eval_summary", "model_card"]

_LIMITS = (
    "Unlearning methods suppress knowledge more easily than they erase it. Measured on hookunlearn's "
    "world, a few steps of fine-tuning on part of the forgotten facts bring much of the rest back, "
    "and the gap to an oracle (a model trained without the forget set) is reported by "
    "`hookunlearn eval` (`forget_quality`, `relearn` and the attack suites). Treat this checkpoint as "
    "reduced-access, not as a model that never saw the data; do not rely on it as a safety or privacy "
    "guarantee without your own adversarial evaluation."
)


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar (JSON is valid YAML flow syntax for strings, numbers and booleans)."""
    return json.dumps(value, ensure_ascii=False)


def _yaml(meta: Mapping[str, Any]) -> str:
    lines = ["---"]
    for key, value in meta.items():
        if isinstance(value, (list, tuple)):
            lines.append(f"{key}:")
            lines += [f"- {_yaml_scalar(item)}" for item in value]
        elif isinstance(value, Mapping):
            lines.append(f"{key}:")
            lines += [f"  {k}: {_yaml_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    lines.append("---")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def eval_summary(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{suite, metric, base, value, oracle}`` from an eval report's JSON (``report.json``)."""

    def metrics(role: str) -> dict[tuple[str, str], float]:
        block = report.get(role) or {}
        return {
            (suite, metric): value
            for suite, result in (block.get("results") or {}).items()
            for metric, value in (result.get("metrics") or {}).items()
        }

    evaluated, base, oracle = metrics("evaluated"), metrics("baseline"), metrics("oracle")
    return [
        {
            "suite": suite,
            "metric": metric,
            "base": base.get((suite, metric)),
            "value": value,
            "oracle": oracle.get((suite, metric)),
        }
        for (suite, metric), value in evaluated.items()
    ]


def model_card(info: Mapping[str, Any], *, report: Mapping[str, Any] | None = None) -> str:
    """``README.md`` text for an export whose record is ``info`` (`hookunlearn.json`'s content)."""
    metadata = info.get("metadata") or {}
    model = info.get("model") or {}
    export = info.get("export") or {}
    verification = info.get("verification") or {}
    method = metadata.get("method")
    base_spec = (metadata.get("inputs") or {}).get("model") or model.get("spec")
    data = metadata.get("data") or {}
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    if model.get("source") == "official" and model.get("name"):
        meta["base_model"] = model["name"]  # a Hub id TransformerLens knows
    meta["tags"] = ["hookunlearn", "unlearning", *([f"unlearning-{method}"] if method else [])]
    fingerprints = {
        f"{side}_data_sha256": record.get("sha256")
        for side, record in data.items()
        if isinstance(record, Mapping) and record.get("sha256")
    }
    meta["hookunlearn"] = {
        "method": method or "none (exported without unlearning)",
        "base_model": base_spec,
        "architecture": export.get("architecture"),
        "dtype": export.get("dtype"),
        "tokenizer_adds_bos": (info.get("tokenizer_bos") or {}).get("tokenizer_adds_bos"),
        **fingerprints,
        "verified_max_logprob_diff": verification.get("max_logprob_diff"),
    }
    title = f"{base_spec or 'model'}, unlearned with hookunlearn ({method})" if method else f"{base_spec}"
    out = [_yaml(meta), "", f"# {title}", ""]
    out.append(
        f"A `{export.get('hf_architecture', 'transformers')}` checkpoint written by "
        f"hookunlearn {(info.get('versions') or {}).get('hookunlearn', '')}. "
        "It loads with `AutoModelForCausalLM.from_pretrained` and its tokenizer with `AutoTokenizer`; "
        "no custom code."
    )
    out += ["", "## How it was made", ""]
    out.append(
        f"- Base model: `{base_spec}` ({model.get('architecture')}, {model.get('n_layers')} layers, "
        f"d_model {model.get('d_model')})."
    )
    if method:
        out.append(
            f"- Method: `{method}` at layer {metadata.get('layer')}, stages: "
            f"{', '.join(s.get('name', '?') for s in metadata.get('stages') or []) or 'none'}."
        )
        options = metadata.get("method_options") or {}
        if options:
            out.append(
                "- Method options: " + ", ".join(f"`{k}={v}`" for k, v in sorted(options.items())) + "."
            )
        train = metadata.get("train") or {}
        if train:
            keys = ("steps", "lr", "batch_size", "seed", "schedule")
            out.append("- Training: " + ", ".join(f"`{k}={train[k]}`" for k in keys if k in train) + ".")
    for side, record in data.items():
        if isinstance(record, Mapping):
            out.append(
                f"- {side.capitalize()} data: `{record.get('spec')}`, {record.get('n_items')} items, "
                f"sha256 `{record.get('sha256')}` (a hash of the texts; the texts are not included)."
            )
    out.append(
        f"- Verified: reloaded with transformers, max |log-prob difference| "
        f"{_number(verification.get('max_logprob_diff'))} against the edited model "
        f"(tolerance {_number(verification.get('tolerance'))})."
        if verification.get("performed")
        else "- Not verified at export."
    )
    bos = info.get("tokenizer_bos") or {}
    if bos.get("tokenizer_adds_bos"):
        out.append(
            "- The tokenizer prepends BOS with its defaults, as the model was evaluated; call it "
            "with its defaults (lm-evaluation-harness, `pipeline` and `generate` do)."
        )
    if report:
        rows = eval_summary(report)
        if rows:
            out += [
                "",
                "## Evaluation (hookunlearn eval)",
                "",
                "| suite | metric | base | this model | oracle |",
                "|---|---|---|---|---|",
            ]
            out += [
                f"| {r['suite']} | {r['metric']} | {_number(r['base'])} | {_number(r['value'])} | "
                f"{_number(r['oracle'])} |"
                for r in rows
            ]
    out += [
        "",
        "## Intended use and limits",
        "",
        "For research on machine unlearning and interpretability: measuring what an unlearning "
        "method removes and what it leaves.",
        "",
        _LIMITS,
        "",
        "The full record (options, changed tensors, library versions) is in `hookunlearn.json`.",
        "",
    ]
    return "\n".join(out)
