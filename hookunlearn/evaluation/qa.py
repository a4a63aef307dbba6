"""Entity QA recall: does greedy decoding from the prompt produce the whole answer?

Records: ``prompt``, ``answer``, ``entity``, ``split`` (``forget``/``retain``/``unknown``, or any
label). Recall is computed by teacher forcing: one forward pass over prompt + " " + answer, and
an item counts as recalled when the argmax at every answer position is the answer's next token.
That is exactly "greedy decoding emits the answer's tokens" (each greedy step sees the same
prefix as the teacher-forced one as long as all earlier steps matched), at the cost of one
batched forward instead of a generation loop. It does not require the model to stop after the
answer, and it checks the tokenizer's canonical tokenization of the answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import require_columns
from hookunlearn.distributed import map_sharded
from hookunlearn.errors import DataError
from hookunlearn.evaluation.scoring import ContinuationScore, bos_prefix, encode_pair, score_pairs


@dataclass(frozen=True)
class QAItem:
    prompt: str
    answer: str
    entity: str
    split: str


def parse_qa(records: Sequence[Mapping[str, Any]], source: str) -> list[QAItem]:
    require_columns(list(records), ["prompt", "answer", "entity", "split"], source)
    items = []
    for index, record in enumerate(records, start=1):
        for column in ("prompt", "answer"):
            if not isinstance(record[column], str) or not record[column].strip():
                raise DataError(f"{source}: record {index} has an empty or non-text {column!r}.")
        items.append(
            QAItem(record["prompt"], record["answer"].strip(), str(record["entity"]), str(record["split"]))
        )
    return items


@dataclass
class QAResult:
    recall: dict[str, float]
    """Recall per split label."""
    n: dict[str, int]
    mean_answer_prob: dict[str, float]
    """Mean probability of the answer's first token, per split (a confidence measure)."""
    recalled: list[bool] = field(default_factory=list)
    scores: list[ContinuationScore] = field(default_factory=list)
    """Each item's score of ``" " + answer`` (log-likelihood, greedy, the model's top tokens)."""

    def to_dict(self, *, per_item: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"recall": self.recall, "n": self.n, "mean_answer_prob": self.mean_answer_prob}
        if per_item:
            data["recalled"] = self.recalled
        return data


def evaluate_qa(
    model: LanguageModel,
    items: Sequence[QAItem],
    *,
    prepend_bos: bool | None = None,
    batch_size: int = 64,
) -> QAResult:
    """Greedy full-answer recall per split (see the module docstring)."""
    if not items:
        raise DataError("no QA items to evaluate.")
    prefix = bos_prefix(model, prepend_bos)
    pairs = [encode_pair(model, item.prompt, " " + item.answer, prefix) for item in items]
    # under torchrun each rank scores every world_size-th item; all get every score back
    scores = map_sharded(lambda part: score_pairs(model, part, batch_size=batch_size), pairs)
    hits: dict[str, list[bool]] = defaultdict(list)
    probs: dict[str, list[float]] = defaultdict(list)
    for item, score in zip(items, scores, strict=True):
        hits[item.split].append(score.greedy)
        probs[item.split].append(score.first_token_prob)
    return QAResult(
        recall={split: sum(v) / len(v) for split, v in sorted(hits.items())},
        n={split: len(v) for split, v in sorted(hits.items())},
        mean_answer_prob={split: sum(v) / len(v) for split, v in sorted(probs.items())},
        recalled=[score.greedy for score in scores],
        scores=scores,
    )
