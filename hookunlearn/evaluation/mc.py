"""Multiple-choice accuracy with two protocols.

``letter``: exactly lm-evaluation-harness's zero-shot WMDP/MMLU task. The prompt is the optional
description line, then ``"{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"``;
the prediction is the choice whose letter (" A".." D") has the highest log-likelihood. One
forward pass per question, batched.

``continuation``: each choice's *text* is scored as the continuation of
``"{question.strip()}\\nAnswer:"`` (the harness's cloze style); optionally normalised by the
choice's length in characters (the harness's ``acc_norm``). All choices of all questions go into
the same batches. Tiny models cannot do letter-MC; this protocol measures whether they know the fact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import require_columns
from hookunlearn.distributed import map_sharded
from hookunlearn.errors import DataError
from hookunlearn.evaluation.scoring import (
    bos_prefix,
    encode,
    encode_pairs,
    score_next_token,
    score_pairs,
)

Protocol = Literal["letter", "continuation"]
PROTOCOLS: tuple[str, ...] = ("letter", "continuation")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WMDP_TOPICS = {"wmdp-bio": "biology", "wmdp-chem": "chemistry", "wmdp-cyber": "cybersecurity"}


@dataclass(frozen=True)
class MCQuestion:
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None


def description_line(topic: str) -> str:
    """The harness's task description for WMDP (topic) and MMLU (subject with spaces)."""
    return f"The following are multiple choice questions (with answers) about {topic.replace('_', ' ')}.\n\n"


def letter_prompt(question: MCQuestion, description: str = "") -> str:
    """The lm-evaluation-harness zero-shot prompt, character for character."""
    lines = [question.question.strip()]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(question.choices)]
    return description + "\n".join(lines) + "\nAnswer:"


def continuation_context(question: MCQuestion) -> str:
    return f"{question.question.strip()}\nAnswer:"


def parse_questions(records: Sequence[Mapping[str, Any]], source: str) -> list[MCQuestion]:
    """Validate records in the ``cais/wmdp`` schema (``question``, ``choices``, ``answer`` int)."""
    require_columns(list(records), ["question", "choices", "answer"], source)
    questions = []
    for index, record in enumerate(records, start=1):
        choices = record["choices"]
        answer = record["answer"]
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise DataError(f"{source}: record {index} has an empty or non-text 'question'.")
        if (
            not isinstance(choices, (list, tuple))
            or len(choices) < 2
            or not all(isinstance(c, str) for c in choices)
        ):
            raise DataError(
                f"{source}: record {index}: 'choices' must be a list of at least 2 strings, got {choices!r}."
            )
        if len(choices) > len(LETTERS):
            raise DataError(
                f"{source}: record {index} has {len(choices)} choices; at most {len(LETTERS)} are supported."
            )
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(
                f"{source}: record {index}: 'answer' is {answer!r}, it must be an integer index in 0..{len(choices) - 1}."
            )
        subject = record.get("subject") or record.get("domain")
        questions.append(MCQuestion(record["question"], tuple(choices), answer, subject))
    return questions


@dataclass
class MCResult:
    protocol: str
    n: int
    accuracy: float
    predictions: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    length_normalized: bool = False
    scores: list[list[float]] = field(default_factory=list)
    """Per question, the value of each choice that the prediction is the arg-max of: the letter's
    or the choice's log-likelihood (divided by the choice's length when ``length_normalized``)."""
    logliks: list[list[float]] = field(default_factory=list)
    """Per question, each choice's summed log-likelihood (``scores`` before any normalisation)."""

    def to_dict(self, *, per_item: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "protocol": self.protocol,
            "n": self.n,
            "accuracy": self.accuracy,
            "length_normalized": self.length_normalized,
        }
        if per_item:
            data["predictions"] = self.predictions
            data["correct"] = self.correct
        return data


def evaluate_mc(
    model: LanguageModel,
    questions: Sequence[MCQuestion],
    *,
    protocol: Protocol = "continuation",
    description: str = "",
    length_normalized: bool = False,
    prepend_bos: bool | None = None,
    batch_size: int = 32,
) -> MCResult:
    """Accuracy of ``model`` on ``questions`` under ``protocol`` (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise DataError(f"MC protocol {protocol!r} is unknown; choose one of {', '.join(PROTOCOLS)}.")
    if not questions:
        raise DataError("no multiple-choice questions to evaluate.")
    prefix = bos_prefix(model, prepend_bos)
    # under torchrun each rank scores every world_size-th question; all get every row back
    if protocol == "letter":
        logliks = map_sharded(
            lambda part: _letter_logliks(model, part, description, prefix, batch_size), questions
        )
        scores = logliks
    else:
        logliks = map_sharded(lambda part: _continuation_logliks(model, part, prefix, batch_size), questions)
        scores = [
            [value / len(choice) for value, choice in zip(row, q.choices, strict=True)]
            if length_normalized
            else row
            for row, q in zip(logliks, questions, strict=True)
        ]
    predictions = [max(range(len(row)), key=row.__getitem__) for row in scores]
    correct = [p == q.answer for p, q in zip(predictions, questions, strict=True)]
    return MCResult(
        protocol,
        len(questions),
        sum(correct) / len(correct),
        predictions,
        correct,
        length_normalized,
        scores,
        logliks,
    )


def mc_request(question: MCQuestion, protocol: Protocol, description: str = "") -> tuple[str, list[str]]:
    """The context a question is scored after and the continuation of each choice under
    ``protocol`` (letter: the description line is part of the context; continuation: it is not)."""
    if protocol == "letter":
        return letter_prompt(question, description), [" " + LETTERS[i] for i in range(len(question.choices))]
    return continuation_context(question), [" " + choice for choice in question.choices]


def _letter_logliks(
    model: LanguageModel,
    questions: Sequence[MCQuestion],
    description: str,
    prefix: list[int],
    batch_size: int,
) -> list[list[float]]:
    n_choices = {len(q.choices) for q in questions}
    requests = [mc_request(q, "letter", description) for q in questions]
    flat_pairs = encode_pairs(
        model, [(context, letter) for context, letters in requests for letter in letters], prefix
    )
    pairs, offset = [], 0
    for _context, letters in requests:
        pairs.append(flat_pairs[offset : offset + len(letters)])
        offset += len(letters)
    single = all(len(p.continuation) == 1 for row in pairs for p in row)
    if single and len({row[0].continuation for row in pairs}) <= 1 and len(n_choices) == 1:
        # every letter is one token after every prompt: score each prompt once
        candidates = [row.continuation[0] for row in pairs[0]]
        log_probs = score_next_token(
            model, [row[0].context for row in pairs], candidates, batch_size=batch_size
        )
        return [[float(v) for v in row] for row in log_probs.tolist()]
    flat = [pair for row in pairs for pair in row]
    scores = score_pairs(model, flat, batch_size=batch_size)
    return _per_question(questions, [s.logprob for s in scores])


def _continuation_logliks(
    model: LanguageModel,
    questions: Sequence[MCQuestion],
    prefix: list[int],
    batch_size: int,
) -> list[list[float]]:
    flat = encode_pairs(
        model,
        [
            (context, continuation)
            for context, continuations in (mc_request(q, "continuation") for q in questions)
            for continuation in continuations
        ],
        prefix,
    )
    scores = score_pairs(model, flat, batch_size=batch_size)
    return _per_question(questions, [s.logprob for s in scores])


def _per_question(questions: Sequence[MCQuestion], values: Sequence[float]) -> list[list[float]]:
    rows, offset = [], 0
    for q in questions:
        rows.append(list(values[offset : offset + len(q.choices)]))
        offset += len(q.choices)
    return rows


__all__ = [
    "MCQuestion",
    "MCResult",
    "PROTOCOLS",
    "description_line",
    "encode",
    "evaluate_mc",
    "letter_prompt",
    "mc_request",
    "parse_questions",
]
