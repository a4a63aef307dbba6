"""The standard suites: multiple choice (``mc``, ``wmdp``, ``mmlu``), entity QA recall (``qa``)
and retain perplexity (``perplexity``).

``wmdp`` and ``mmlu`` are ``mc`` with lm-evaluation-harness's defaults: the hub dataset
(``cais/wmdp`` config ``wmdp-bio|wmdp-chem|wmdp-cyber``, split ``test``; ``cais/mmlu`` config
``all``, split ``test``), the ``letter`` protocol and the harness's description line ("The following
are multiple choice questions (with answers) about {topic}.") per subject. Any local file in the
same schema (``question``, ``choices``, ``answer``; optional ``subject``) works through ``data``.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import load_records, local_records
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.evaluation.mc import (
    WMDP_TOPICS,
    MCQuestion,
    description_line,
    evaluate_mc,
    mc_request,
    parse_questions,
)
from hookunlearn.evaluation.qa import evaluate_qa, parse_qa
from hookunlearn.evaluation.suites import EvalContext, Suite, item_id, prompt_hash, register


def data_name(spec: str) -> str:
    """A plug-in's data (``world:mc_hazard``) -> ``mc_hazard``; ``dir/my_set.jsonl`` -> ``my_set``; a hub id with
    ``/``, ``:`` and ``@`` made file-safe (``cais/wmdp:wmdp-cyber@test`` -> ``cais_wmdp_wmdp-cyber_test``)."""
    from hookunlearn.sources import split

    plugin = split(spec)
    if plugin is not None and plugin[1]:
        return plugin[1]
    if Path(spec).suffix and ":" not in spec:  # a local file
        return Path(spec).stem
    return re.sub(r"[/:@]", "_", spec)


def filter_where(records: list[dict[str, Any]], where: str | None, spec: str) -> list[dict[str, Any]]:
    """Keep the rows whose column equals the value of ``where`` (``COLUMN=VALUE``; None keeps all)."""
    return [records[i] for i in where_indices(records, where, spec)]


def where_indices(records: list[dict[str, Any]], where: str | None, spec: str) -> list[int]:
    """The positions of the rows `filter_where` keeps."""
    if not where:
        return list(range(len(records)))
    column, sep, value = where.partition("=")
    if not sep:
        raise DataError(f"{spec}: where={where!r} must be COLUMN=VALUE.")
    if records and column not in records[0]:
        raise DataError(
            f"{spec}: no column {column!r} for where={where!r}; columns: {', '.join(records[0])}."
        )
    return [i for i, r in enumerate(records) if str(r.get(column)) == value]


def check_limit(suite: str, limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise HookunlearnError(
            f"suite {suite}: limit={limit}; give a positive number of items (or none for all)."
        )


def subset(records: list[dict[str, Any]], limit: int | None, seed: int | None) -> list[dict[str, Any]]:
    """Shuffle with ``seed`` (when given), then keep the first ``limit`` records."""
    return [records[i] for i in subset_indices(len(records), limit, seed)]


def subset_indices(n: int, limit: int | None, seed: int | None) -> list[int]:
    """The positions `subset` keeps of ``n`` records, in its order (a seeded shuffle permutes
    positions the same way whatever the records hold): the samples' ``doc_id``."""
    order = list(range(n))
    if seed is not None:
        random.Random(seed).shuffle(order)
    return order[:limit] if limit is not None else order


def other_columns(record: Mapping[str, Any], used: Sequence[str]) -> dict[str, Any]:
    """A record's columns that a sample does not already show (its ``doc`` field)."""
    return {key: value for key, value in record.items() if key not in used}


@dataclass(frozen=True)
class MCConfig:
    data: str = "world:mc_hazard"
    """Data spec in the cais/wmdp schema: a local file, ``world:NAME`` or ``owner/name:config@split``."""
    protocol: Literal["letter", "continuation"] = "continuation"
    """``letter`` (lm-eval's " A".." D") or ``continuation`` (each choice's text as the answer)."""
    description: str = "auto"
    """Letter protocol's description line: ``auto`` (the harness's line for WMDP data, and per
    subject for MMLU data), ``subject`` (per ``subject`` column), ``none``, or a topic word ("biology" -> "...questions (with answers) about biology.")."""
    length_normalized: bool = False
    """Continuation: divide log-likelihoods by the choice length in characters (lm-eval acc_norm)."""
    limit: int | None = None
    """Evaluate only this many questions (after the seeded shuffle, when ``seed`` is set)."""
    seed: int | None = None
    """Shuffle the questions with this seed before ``limit`` (None: file order)."""
    per_subject: bool = True
    """Also report accuracy per ``subject`` column value."""
    name: str | None = None
    """Name of this suite in the report (default: from the data spec)."""

    def __post_init__(self) -> None:
        check_limit("mc", self.limit)


def _description(config: MCConfig, subject: str | None) -> str:
    if config.protocol != "letter" or config.description == "none":
        return ""
    if config.description == "subject":
        return description_line(subject) if subject else ""
    if config.description != "auto":
        return description_line(config.description)
    for key, topic in WMDP_TOPICS.items():
        if key in config.data:
            return description_line(topic)
    if "mmlu" in config.data and subject:
        return description_line(subject)
    return ""


def run_mc(
    model: LanguageModel, config: MCConfig, context: EvalContext
) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
    loaded = load_records(config.data)
    positions = subset_indices(len(loaded), config.limit, config.seed)
    records = [loaded[i] for i in positions]
    questions = parse_questions(records, config.data)
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index, question in enumerate(questions):
        groups[question.subject if _description(config, question.subject) else None].append(index)
    correct: list[bool] = [False] * len(questions)
    outcome: dict[int, tuple[int, list[float], list[float], str]] = {}
    for subject, indices in groups.items():
        description = _description(config, subject)
        result = evaluate_mc(
            model,
            [questions[i] for i in indices],
            protocol=config.protocol,
            description=description,
            length_normalized=config.length_normalized,
            batch_size=context.batch_size,
        )
        for j, (i, ok) in enumerate(zip(indices, result.correct, strict=True)):
            correct[i] = ok
            if context.samples is not None:
                outcome[i] = (result.predictions[j], result.scores[j], result.logliks[j], description)
    if context.samples is not None:
        for i, (question, record) in enumerate(zip(questions, records, strict=True)):
            prediction, scores, logliks, description = outcome[i]
            prompt, continuations = mc_request(question, config.protocol, description)
            sample: dict[str, Any] = {
                "doc_id": positions[i],
                "item_id": item_id(record, positions[i]),
                "prompt": prompt,
                "prompt_hash": prompt_hash(prompt),
                "choices": list(question.choices),
                "continuations": continuations,
                "scores": scores,
                "prediction": prediction,
                "target": question.answer,
                "correct": correct[i],
                "protocol": config.protocol,
                "subject": question.subject,
            }
            if config.length_normalized and config.protocol == "continuation":
                sample["logliks"] = logliks
            sample["doc"] = other_columns(record, ("question", "choices", "answer"))
            context.log_sample(sample)
    metrics = {"accuracy": sum(correct) / len(correct)}
    n = {"accuracy": len(correct)}
    by_subject = _by_column(questions, correct)
    if config.per_subject and len(by_subject) > 1:
        for subject, values in sorted(by_subject.items()):
            metrics[f"accuracy[{subject}]"] = sum(values) / len(values)
            n[f"accuracy[{subject}]"] = len(values)
    return metrics, n, {"chance": _chance(questions)}


def _by_column(questions: list[MCQuestion], correct: list[bool]) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = defaultdict(list)
    for question, ok in zip(questions, correct, strict=True):
        if question.subject:
            out[question.subject].append(ok)
    return out


def _chance(questions: list[MCQuestion]) -> float:
    return sum(1 / len(q.choices) for q in questions) / len(questions)


@register
class MCSuite(Suite):
    name: ClassVar[str] = "mc"
    summary: ClassVar[str] = "Multiple-choice accuracy on any cais/wmdp-schema data (letter or continuation)."
    Config = MCConfig

    def instance_name(self) -> str:
        return self.config.name or data_name(self.config.data)

    def check(self) -> None:
        """The data file is read and its schema checked now (`Suite.check`)."""
        super().check()
        records = local_records(self.config.data)
        if records is not None:
            parse_questions(records, self.config.data)

    def compute(self, model: LanguageModel, context: EvalContext):
        return run_mc(model, self.config, context)


@dataclass(frozen=True)
class WMDPConfig:
    subset: Literal["wmdp-bio", "wmdp-chem", "wmdp-cyber"] = "wmdp-cyber"
    """The WMDP config."""
    data: str | None = None
    """A local file in the same schema instead of the hub dataset ``cais/wmdp:{subset}@test``."""
    protocol: Literal["letter", "continuation"] = "letter"
    limit: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        check_limit("wmdp", self.limit)


@register
class WMDPSuite(Suite):
    name: ClassVar[str] = "wmdp"
    summary: ClassVar[str] = "WMDP (cais/wmdp) as lm-evaluation-harness scores it (letter protocol)."
    Config = WMDPConfig

    def instance_name(self) -> str:
        return self.config.subset

    def compute(self, model: LanguageModel, context: EvalContext):
        topic = WMDP_TOPICS[self.config.subset]
        config = MCConfig(
            data=self.config.data or f"cais/wmdp:{self.config.subset}@test",
            protocol=self.config.protocol,
            description=topic,
            limit=self.config.limit,
            seed=self.config.seed,
            per_subject=False,
        )
        return run_mc(model, config, context)


@dataclass(frozen=True)
class MMLUConfig:
    subjects: str = "all"
    """The cais/mmlu config: ``all`` or one subject (e.g. ``college_biology``)."""
    data: str | None = None
    """A local file in the same schema (with a ``subject`` column) instead of the hub dataset."""
    protocol: Literal["letter", "continuation"] = "letter"
    limit: int | None = None
    seed: int | None = None
    per_subject: bool = True

    def __post_init__(self) -> None:
        check_limit("mmlu", self.limit)


@register
class MMLUSuite(Suite):
    name: ClassVar[str] = "mmlu"
    summary: ClassVar[str] = "MMLU (cais/mmlu) with the harness's per-subject description lines."
    Config = MMLUConfig

    def instance_name(self) -> str:
        return "mmlu" if self.config.subjects == "all" else f"mmlu_{self.config.subjects}"

    def compute(self, model: LanguageModel, context: EvalContext):
        data = self.config.data or f"cais/mmlu:{self.config.subjects}@test"
        config = MCConfig(
            data=data,
            protocol=self.config.protocol,
            description="subject",
            limit=self.config.limit,
            seed=self.config.seed,
            per_subject=self.config.per_subject,
        )
        return run_mc(model, config, context)


@dataclass(frozen=True)
class QAConfig:
    data: str = "world:entity_qa"
    """Rows with ``prompt``, ``answer``, ``entity``, ``split`` (e.g. forget / retain / unknown)."""
    limit: int | None = None
    seed: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        check_limit("qa", self.limit)


@register
class QASuite(Suite):
    name: ClassVar[str] = "qa"
    summary: ClassVar[str] = "Entity QA: greedy full-answer recall per split (forget / retain / unknown)."
    Config = QAConfig

    def instance_name(self) -> str:
        return self.config.name or data_name(self.config.data)

    def check(self) -> None:
        """The data file is read and its schema checked now (`Suite.check`)."""
        super().check()
        records = local_records(self.config.data)
        if records is not None:
            parse_qa(records, self.config.data)

    def compute(self, model: LanguageModel, context: EvalContext):
        loaded = load_records(self.config.data)
        positions = subset_indices(len(loaded), self.config.limit, self.config.seed)
        records = [loaded[i] for i in positions]
        items = parse_qa(records, self.config.data)
        result = evaluate_qa(model, items, batch_size=context.batch_size)
        if context.samples is not None:
            assert model.tokenizer is not None
            for doc_id, record, item, score in zip(positions, records, items, result.scores, strict=True):
                context.log_sample(
                    {
                        "doc_id": doc_id,
                        "item_id": item_id(record, doc_id),
                        "prompt": item.prompt,
                        "prompt_hash": prompt_hash(item.prompt),
                        "continuation": " " + item.answer,
                        "target": item.answer,
                        "prediction": model.tokenizer.decode(list(score.greedy_prefix())).strip(),
                        "correct": score.greedy,
                        "loglik": score.logprob,
                        "answer_prob": score.first_token_prob,
                        "n_tokens": score.n_tokens,
                        "split": item.split,
                        "entity": item.entity,
                        "doc": other_columns(record, ("prompt", "answer", "entity", "split")),
                    }
                )
        metrics = {f"recall[{split}]": value for split, value in result.recall.items()}
        metrics |= {f"answer_prob[{split}]": value for split, value in result.mean_answer_prob.items()}
        n = {f"recall[{split}]": count for split, count in result.n.items()}
        n |= {f"answer_prob[{split}]": count for split, count in result.n.items()}
        return metrics, n, {}


@dataclass(frozen=True)
class PerplexityConfig:
    data: str = "world:heldout_text"
    """Held-out text (never trained on); ``text_column`` holds the text."""
    text_column: str = "text"
    where: str | None = "split=retain"
    """Keep rows whose column equals the value (``COLUMN=VALUE``; None keeps every row). The
    world's held-out text tags retain-side rows ``split=retain``."""
    max_tokens: int | None = None
    """Truncate each text to this many tokens (default: the model's context)."""
    limit: int | None = None
    seed: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        check_limit("perplexity", self.limit)
        if self.max_tokens is not None and self.max_tokens < 2:
            raise HookunlearnError(
                f"suite perplexity: max_tokens={self.max_tokens}; at least 2 tokens are needed to score one."
            )


@register
class PerplexitySuite(Suite):
    name: ClassVar[str] = "perplexity"
    summary: ClassVar[str] = "Token-level perplexity on held-out (retain) text."
    Config = PerplexityConfig

    def instance_name(self) -> str:
        return self.config.name or f"perplexity_{data_name(self.config.data)}"

    def compute(self, model: LanguageModel, context: EvalContext):
        from hookunlearn.tokens import tokenize_texts

        loaded = load_records(self.config.data)
        kept = where_indices(loaded, self.config.where, self.config.data)
        positions = [kept[i] for i in subset_indices(len(kept), self.config.limit, self.config.seed)]
        records = [loaded[i] for i in positions]
        texts = [r.get(self.config.text_column) for r in records]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError(
                f"{self.config.data}: no non-empty {self.config.text_column!r} texts to score "
                f"(after where={self.config.where!r})."
            )
        data = tokenize_texts(model, texts, self.config.max_tokens)
        total, count = 0.0, 0
        device = model.cfg.device
        with torch.no_grad():
            for start in range(0, len(data), context.batch_size):
                tokens = data.tokens[start : start + context.batch_size].to(device)
                mask = data.mask[start : start + context.batch_size].to(device)
                logits = model(tokens)
                log_probs = logits[:, :-1].float().log_softmax(-1)
                nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
                # a token counts when it is real and predicted (its mask), never the first
                keep = mask[:, 1:]
                total += float(nll[keep].sum())
                count += int(keep.sum())
                if context.samples is not None:
                    row_nll = torch.where(keep, nll, 0.0).sum(-1).tolist()
                    row_count = keep.sum(-1).tolist()
                    for offset, (value, n_tokens) in enumerate(zip(row_nll, row_count, strict=True)):
                        index = start + offset
                        context.log_sample(
                            {
                                "doc_id": positions[index],
                                "item_id": item_id(records[index], positions[index]),
                                "text": texts[index],
                                "nll": value,
                                "n_tokens": n_tokens,
                                "nll_per_token": value / n_tokens if n_tokens else None,
                            }
                        )
        if count == 0:
            raise DataError(f"{self.config.data}: no token to score (every text is a single token?).")
        mean = total / count
        return (
            {"perplexity": math.exp(mean), "nll_per_token": mean},
            {"perplexity": count, "nll_per_token": count},
            {},
        )


__all__ = [
    "MCConfig",
    "MCSuite",
    "MMLUConfig",
    "MMLUSuite",
    "PerplexityConfig",
    "PerplexitySuite",
    "QAConfig",
    "QASuite",
    "WMDPConfig",
    "WMDPSuite",
    "data_name",
    "run_mc",
    "subset",
    "subset_indices",
    "where_indices",
]
