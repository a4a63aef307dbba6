"""GSM8K: grade-school maths by greedy generation, scored as lm-evaluation-harness's ``gsm8k`` task.

The prompt is ``n_shot`` solved examples from the few-shot split, each
``"Question: {question}\\nAnswer: {answer}"`` and each followed by ``"\\n\\n"``, then
``"Question: {question}\\nAnswer:"``. The harness (v3 of the task) draws the shots at random for
every question from one ``random.Random(1234)`` advanced in document order; ``fewshot_sampler``
``random`` does the same (``first_n`` takes the split's first examples for every question).

The model continues greedily until ``"Question:"``, ``"</s>"``, ``"<|im_end|>"``, the tokenizer's
EOS, or ``max_new_tokens``; the text is cut at the first stop string. Two answers are read from
it: ``strict`` (the first ``#### N``) and ``flexible`` (the last number anywhere), and each is
compared with the reference after the harness's normalisation (commas, ``$``, everything up to
``#### `` and a final period removed; case ignored).

Generation is batched with left padding, an attention mask and a key/value cache; TransformerLens
offsets the positions of left-padded rows, so a prompt's greedy output does not depend on its
batch. A prompt longer than the context minus ``max_new_tokens`` loses its oldest tokens (the
harness's left truncation; a BOS token is kept).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import TransformerLensKeyValueCache

from hookunlearn.backends import backend_name
from hookunlearn.backends.types import LanguageModel
from hookunlearn.data import load_records, require_columns
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.evaluation.scoring import bos_prefix, encode_batch, tail_log_probs
from hookunlearn.evaluation.standard import data_name
from hookunlearn.evaluation.suites import EvalContext, Suite, item_id, prompt_hash, register

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
STOP_SEQUENCES: tuple[str, ...] = ("Question:", "</s>", "<|im_end|>")
STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
INVALID = "[invalid]"
IGNORED_PATTERNS: tuple[str, ...] = (",", r"\$", r"(?s).*#### ", r"\.$")
"""The harness's ``regexes_to_ignore``, removed in this order from prediction and reference."""

DEFAULT_DATA = "openai/gsm8k:main@test"
DEFAULT_FEWSHOT_DATA = "openai/gsm8k:main@train"
HARNESS_FEWSHOT_SEED = 1234
N_SAMPLES = 3


@dataclass(frozen=True)
class GSM8KProblem:
    question: str
    answer: str
    """The full reference solution, ending in ``#### N``."""


def parse_problems(records: Sequence[Mapping[str, Any]], source: str) -> list[GSM8KProblem]:
    """Validate records in the ``openai/gsm8k`` schema (``question``, ``answer`` text)."""
    require_columns(list(records), ["question", "answer"], source)
    problems = []
    for index, record in enumerate(records, start=1):
        for column in ("question", "answer"):
            if not isinstance(record[column], str) or not record[column].strip():
                raise DataError(
                    f"{source}: record {index} has an empty or non-text {column!r}; "
                    "GSM8K records need a 'question' and an 'answer' ending in '#### N'."
                )
        problems.append(GSM8KProblem(record["question"], record["answer"]))
    return problems


def _regex_answer(pattern: re.Pattern[str], text: str, select: int) -> str:
    """The harness's ``regex`` filter: ``findall``, pick one match, its non-empty group, stripped."""
    matches = pattern.findall(text)
    if not matches:
        return INVALID
    match = matches[select]
    if isinstance(match, tuple):
        match = next(group for group in match if group)
    return match.strip()


def extract_strict(text: str) -> str:
    """The number after the first ``#### `` (``strict-match``), or ``[invalid]``."""
    return _regex_answer(STRICT_PATTERN, text, 0)


def extract_flexible(text: str) -> str:
    """The last number-like span in the text (``flexible-extract``), or ``[invalid]``."""
    return _regex_answer(FLEXIBLE_PATTERN, text, -1)


def normalize_answer(text: str) -> str:
    """The harness's exact-match normalisation: drop `IGNORED_PATTERNS` in order, lower-case."""
    for pattern in IGNORED_PATTERNS:
        text = re.sub(pattern, "", text)
    return text.lower()


def is_exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def reference_answer(answer: str) -> str:
    """The final answer of a reference solution (the text after ``#### ``)."""
    return answer.rsplit("#### ", 1)[-1].strip()


def question_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def render_prompt(question: str, shots: Sequence[GSM8KProblem]) -> str:
    """The harness's few-shot context: each shot, its target and a delimiter, then the question."""
    examples = "".join(
        question_text(shot.question) + TARGET_DELIMITER + shot.answer + FEWSHOT_DELIMITER for shot in shots
    )
    return examples + question_text(question)


def choose_shots(
    problems: Sequence[GSM8KProblem],
    pool: Sequence[GSM8KProblem],
    n_shot: int,
    *,
    sampler: Literal["random", "first_n"] = "random",
    seed: int = HARNESS_FEWSHOT_SEED,
    same_split: bool = False,
) -> list[list[GSM8KProblem]]:
    """The shots for each problem, in order.

    ``random`` is the harness's default sampler: one ``random.Random(seed)``, one ``sample`` per
    problem (one extra when the shots come from the evaluated split, the problem itself removed).
    """
    if n_shot == 0:
        return [[] for _ in problems]
    n_draw = n_shot + int(same_split)
    if n_draw > len(pool):
        raise DataError(
            f"{n_shot}-shot prompts need {n_draw} few-shot examples but the few-shot data has "
            f"{len(pool)}; lower n_shot or pass a larger fewshot_data."
        )
    if sampler == "first_n":
        drawn = [list(pool[:n_draw]) for _ in problems]
    else:
        rng, population = random.Random(seed), list(pool)
        drawn = [rng.sample(population, n_draw) for _ in problems]
    return [
        [shot for shot in shots if shot != problem][:n_shot]
        for shots, problem in zip(drawn, problems, strict=True)
    ]


def truncate_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """Cut ``text`` before its first stop string (the harness splits on each in turn)."""
    for stop in stop_sequences:
        if stop:
            text = text.split(stop)[0]
    return text


def _left_pad(
    rows: Sequence[Sequence[int]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return tokens, mask


def _next_logits(
    model: LanguageModel,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    cache: TransformerLensKeyValueCache,
) -> Float[Tensor, "batch vocab"]:
    """Scores of the next token after each row's last token, for its argmax (the cache grows by
    ``tokens``). On the hooked backend: log-probabilities, with the final norm and unembedding at
    the last position only (`log_probs_at`'s tail), so a prompt's prefill is one forward with no
    ``[batch, pos, vocab]`` tensor; on the bridge: the logits there."""
    device = model.cfg.device
    if backend_name(model) == "hooked":
        residual = model(
            tokens.to(device),
            attention_mask=mask.to(device),
            past_kv_cache=cache,
            stop_at_layer=model.cfg.n_layers,
        )
        return tail_log_probs(model, residual[:, -1])
    logits = model(tokens.to(device), attention_mask=mask.to(device), past_kv_cache=cache)
    return logits[:, -1, :]


def _hit_stop(model: LanguageModel, generated: list[int], stop_sequences: Sequence[str]) -> bool:
    # Decode only the tail each step (stop strings are short); confirm on the whole text.
    assert model.tokenizer is not None
    if not stop_sequences:
        return False
    window = max(len(stop) for stop in stop_sequences) + 2
    tail = model.tokenizer.decode(generated[-window:])
    if not any(stop in tail for stop in stop_sequences):
        return False
    text = model.tokenizer.decode(generated)
    return any(stop in text for stop in stop_sequences)


@torch.no_grad()
def _generate_batch(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_sequences: Sequence[str],
    eos_id: int | None,
    pad_id: int,
) -> list[str]:
    assert model.tokenizer is not None
    tokens, mask = _left_pad(prompts, pad_id)
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, len(prompts))
    generated: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    if tokens.shape[1] > 1 and backend_name(model) != "hooked":
        # Prefill without logits: [batch, pos, vocab] would be huge for long prompts and vocabularies.
        device = model.cfg.device
        model(
            tokens[:, :-1].to(device),
            attention_mask=mask[:, :-1].to(device),
            past_kv_cache=cache,
            return_type=None,
        )
        tokens, mask = tokens[:, -1:], mask[:, -1:]
    logits = _next_logits(model, tokens, mask, cache)
    for step in range(max_new_tokens):
        next_ids = logits.argmax(dim=-1).cpu()
        for row, token in enumerate(next_ids.tolist()):
            if done[row]:
                continue
            if token == eos_id:
                done[row] = True
                continue
            generated[row].append(token)
            done[row] = _hit_stop(model, generated[row], stop_sequences)
        if all(done) or step == max_new_tokens - 1:
            break
        new_mask = torch.ones((len(prompts), 1), dtype=torch.long)
        logits = _next_logits(model, next_ids[:, None], new_mask, cache)
    # decoded as the harness's hf model decodes a generation: special tokens (pad, BOS, ...) dropped
    return [
        truncate_at_stop(model.tokenizer.decode(row, skip_special_tokens=True), stop_sequences)
        for row in generated
    ]


def generate_greedy(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_sequences: Sequence[str] = STOP_SEQUENCES,
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of token ``prompts``, cut at the first stop string or EOS.

    Prompts are batched longest first, left-padded; each batch stops when every row has stopped.
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise DataError("the model has no tokenizer; load it with hookunlearn.models.load_model.")
    longest = max((len(prompt) for prompt in prompts), default=0)
    if longest + max_new_tokens > model.cfg.n_ctx or not all(prompts):
        raise DataError(
            f"generation prompts must be non-empty and at most {model.cfg.n_ctx - max_new_tokens} tokens "
            f"long (the model's context is {model.cfg.n_ctx}, minus max_new_tokens={max_new_tokens}); "
            f"the longest is {longest}."
        )
    eos_id = None if tokenizer.eos_token_id is None else int(tokenizer.eos_token_id)
    stops = list(stop_sequences)
    if eos_id is not None:
        stops.append(tokenizer.decode([eos_id]))
    stops = [stop for stop in stops if stop]
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_id or 0))
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        texts = _generate_batch(model, [prompts[i] for i in rows], max_new_tokens, stops, eos_id, pad_id)
        for i, text in zip(rows, texts, strict=True):
            outputs[i] = text
    return outputs


def fit_prompt(ids: Sequence[int], prefix: Sequence[int], budget: int) -> list[int]:
    """``prefix + ids``, dropping the oldest ``ids`` so that at most ``budget`` tokens remain."""
    keep = max(budget - len(prefix), 1)
    return list(prefix) + list(ids[-keep:])


@register
class GSM8K(Suite):
    name = "gsm8k"
    version = 1
    summary = "GSM8K maths word problems, n-shot greedy generation, lm-eval exact match (strict/flexible)"

    @dataclass(frozen=True)
    class Config:
        data: str = DEFAULT_DATA
        """Problems (``question``, ``answer`` ending in ``#### N``): a hub spec or a local file."""
        fewshot_data: str = DEFAULT_FEWSHOT_DATA
        """Where the solved examples of the prompt come from (same schema)."""
        n_shot: int = 5
        """Solved examples before each question (the harness's task uses 5)."""
        fewshot_sampler: Literal["random", "first_n"] = "random"
        """``random``: the harness's per-question draw; ``first_n``: the split's first examples."""
        fewshot_seed: int = HARNESS_FEWSHOT_SEED
        """Seed of the ``random`` sampler (the harness's default is 1234)."""
        limit: int | None = None
        """Evaluate only the first ``limit`` problems (after shuffling, when ``seed`` is set)."""
        seed: int | None = None
        """When set, shuffle the problems with this seed before ``limit``."""
        max_new_tokens: int = 256
        """Most tokens generated per problem (the harness's default is 256)."""
        batch_size: int | None = None
        """Prompts generated together; None uses the evaluation's batch size."""
        prepend_bos: bool | None = None
        """Prepend the BOS token; None follows the model's default."""

        def __post_init__(self) -> None:
            for key in ("n_shot", "max_new_tokens", "limit", "batch_size"):
                value = getattr(self, key)
                least = 0 if key == "n_shot" else 1
                if value is not None and value < least:
                    raise HookunlearnError(f"suite gsm8k: {key}={value} must be at least {least}.")

    def instance_name(self) -> str:
        return self.name if self.config.data == DEFAULT_DATA else f"{self.name}-{data_name(self.config.data)}"

    def problems(self) -> list[GSM8KProblem]:
        """The evaluated problems: loaded, validated, shuffled if ``seed`` is set, limited."""
        return self.selection()[2]

    def selection(self) -> tuple[list[int], list[Mapping[str, Any]], list[GSM8KProblem]]:
        """The evaluated problems' positions in the data, their records and the problems."""
        records = load_records(self.config.data)
        problems = parse_problems(records, self.config.data)
        positions = list(range(len(problems)))
        if self.config.seed is not None:
            random.Random(self.config.seed).shuffle(positions)
        if self.config.limit is not None:
            positions = positions[: self.config.limit]
        return positions, [records[i] for i in positions], [problems[i] for i in positions]

    def prompts(self, problems: Sequence[GSM8KProblem]) -> list[str]:
        config = self.config
        pool: list[GSM8KProblem] = []
        if config.n_shot > 0:
            pool = parse_problems(load_records(config.fewshot_data), config.fewshot_data)
        shots = choose_shots(
            problems,
            pool,
            config.n_shot,
            sampler=config.fewshot_sampler,
            seed=config.fewshot_seed,
            same_split=config.fewshot_data == config.data,
        )
        return [render_prompt(p.question, s) for p, s in zip(problems, shots, strict=True)]

    def compute(
        self, model: LanguageModel, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
        config = self.config
        budget = model.cfg.n_ctx - config.max_new_tokens
        if budget < 2:
            raise HookunlearnError(
                f"suite gsm8k: max_new_tokens={config.max_new_tokens} leaves no room for the prompt in "
                f"the model's {model.cfg.n_ctx}-token context; pass a smaller max_new_tokens."
            )
        positions, records, problems = self.selection()
        prompts = self.prompts(problems)
        prefix = bos_prefix(model, config.prepend_bos)
        encoded = encode_batch(model, prompts)
        n_truncated = sum(len(prefix) + len(ids) > budget for ids in encoded)
        context.say(f"gsm8k: generating for {len(problems)} problems ({config.n_shot}-shot)")
        generations = generate_greedy(
            model,
            [fit_prompt(ids, prefix, budget) for ids in encoded],
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size or context.batch_size,
        )
        strict = [extract_strict(text) for text in generations]
        flexible = [extract_flexible(text) for text in generations]
        strict_hits = [is_exact_match(a, p.answer) for a, p in zip(strict, problems, strict=True)]
        flexible_hits = [is_exact_match(a, p.answer) for a, p in zip(flexible, problems, strict=True)]
        n = len(problems)
        if context.samples is not None:
            for i, (doc_id, record) in enumerate(zip(positions, records, strict=True)):
                context.log_sample(
                    {
                        "doc_id": doc_id,
                        "item_id": item_id(record, doc_id),
                        "prompt": prompts[i],
                        "prompt_hash": prompt_hash(prompts[i]),
                        "question": problems[i].question,
                        "target": reference_answer(problems[i].answer),
                        "generation": generations[i],
                        "prediction": strict[i],
                        "correct": strict_hits[i],
                        "prediction_flexible": flexible[i],
                        "correct_flexible": flexible_hits[i],
                        "truncated": len(prefix) + len(encoded[i]) > budget,
                    }
                )
        samples = [
            {
                "question": problems[i].question,
                "target": reference_answer(problems[i].answer),
                "generation": generations[i],
                "strict": strict[i],
                "flexible": flexible[i],
            }
            for i in range(min(n, N_SAMPLES))
        ]
        metrics = {
            "exact_match_strict": sum(strict_hits) / n,
            "exact_match_flexible": sum(flexible_hits) / n,
        }
        details = {"samples": samples, "n_truncated_prompts": n_truncated}
        return metrics, {"exact_match_strict": n, "exact_match_flexible": n}, details


__all__ = [
    "FEWSHOT_DELIMITER",
    "GSM8K",
    "INVALID",
    "STOP_SEQUENCES",
    "TARGET_DELIMITER",
    "GSM8KProblem",
    "choose_shots",
    "extract_flexible",
    "extract_strict",
    "fit_prompt",
    "generate_greedy",
    "is_exact_match",
    "normalize_answer",
    "parse_problems",
    "reference_answer",
    "render_prompt",
    "truncate_at_stop",
]
