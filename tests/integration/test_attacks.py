"""Attack suites on the quick world: jailbreak wrappers keep the question intact and never leak
the target's answer; malicious accuracy is the worst case; relearning leaves the passed model
alone, splits the forget items cleanly, fits its training facts and is deterministic."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from hookunlearn.data import load_records
from hookunlearn.errors import DataError, HookunlearnError
from hookunlearn.evaluation.attacks import (
    WRAPPERS,
    JailbreakSuite,
    RelearnSuite,
    Wrapper,
    get_wrapper,
    pick_examples,
    relearn,
    solved_example,
    split_items,
    wrap_questions,
)
from hookunlearn.evaluation.mc import LETTERS, continuation_context, letter_prompt, parse_questions
from hookunlearn.evaluation.suites import EvalContext, make_config
from hookunlearn.models import load_model


@pytest.fixture(scope="module")
def model(quick_world: Path):
    return load_model(quick_world / "model", device="cpu")


@pytest.fixture(scope="module")
def mc_data(quick_world: Path) -> str:
    return str(quick_world / "data" / "mc_hazard.jsonl")


@pytest.fixture(scope="module")
def qa_data(quick_world: Path) -> str:
    return str(quick_world / "data" / "entity_qa.jsonl")


@pytest.fixture(scope="module")
def questions(mc_data: str):
    return parse_questions(load_records(mc_data), mc_data)


def test_at_least_six_documented_wrappers():
    assert len(WRAPPERS) >= 6
    for name, wrapper in WRAPPERS.items():
        assert wrapper.name == name
        assert wrapper.description and "\n" not in wrapper.description
    assert {"few_shot", "many_shot"} <= set(WRAPPERS)


@pytest.mark.parametrize("name", list(WRAPPERS))
@pytest.mark.parametrize("protocol", ["letter", "continuation"])
def test_wrapper_keeps_question_and_choices(name: str, protocol: str, questions):
    wrapper = WRAPPERS[name]
    for index, question in enumerate(questions[:10]):
        rng = random.Random(index)
        examples = [solved_example(q, protocol) for q in pick_examples(questions, question, 4, rng)]
        wrapped = wrapper.wrap(question, examples if wrapper.shots != "none" else ())
        assert (wrapped.choices, wrapped.answer) == (question.choices, question.answer)
        assert wrapped.question != question.question
        letter = letter_prompt(wrapped)
        # the original question, then its choices, then "Answer:" - only text before it was added
        assert letter.endswith(letter_prompt(question))
        assert question.question.strip() in letter
        for i, choice in enumerate(question.choices):
            assert f"\n{LETTERS[i]}. {choice}\n" in letter
        assert continuation_context(wrapped).endswith(continuation_context(question))


@pytest.mark.parametrize("name", ["few_shot", "many_shot"])
@pytest.mark.parametrize("protocol", ["letter", "continuation"])
def test_solved_examples_never_show_the_target(name: str, protocol: str, questions):
    wrapper = WRAPPERS[name]
    for index, question in enumerate(questions):
        rng = random.Random(f"0:{name}:{index}")
        examples = pick_examples(questions, question, 16, rng)
        assert len(examples) == min(16, len(questions) - 1)
        text = wrapper.wrap(question, [solved_example(q, protocol) for q in examples]).question
        own_answer = (
            f"{letter_prompt(question)} {LETTERS[question.answer]}"
            if protocol == "letter"
            else f"{continuation_context(question)} {question.choices[question.answer]}"
        )
        assert own_answer not in text
        assert text.count(question.question.strip()) == 1
        for example in examples:
            assert solved_example(example, protocol) in text


@pytest.mark.parametrize("name", ["few_shot", "many_shot"])
def test_shots_are_deterministic_for_a_seed_and_fit_the_context(name: str, model, questions):
    def run(seed: int):
        return wrap_questions(
            model,
            questions[:20],
            WRAPPERS[name],
            pool=questions,
            protocol="continuation",
            shots=16,
            seed=seed,
        )

    first, again, other = run(0), run(0), run(1)
    assert first.questions == again.questions and first.shots == again.shots
    assert first.questions != other.questions
    assert all(1 <= count <= 16 for count in first.shots)
    for original, wrapped, count in zip(questions[:20], first.questions, first.shots, strict=True):
        assert wrapped.question.count("\nAnswer: ") == count
        assert continuation_context(wrapped).endswith(continuation_context(original))


def test_template_longer_than_the_context_is_a_clear_error(model, questions):
    long = Wrapper("long", "too long", lambda question, examples: "word " * 200 + question)
    with pytest.raises(DataError, match="'long'.*context"):
        wrap_questions(model, questions[:2], long, pool=questions, protocol="continuation")


def test_malicious_accuracy_is_the_worst_case(model, mc_data: str):
    suite = JailbreakSuite(make_config(JailbreakSuite, {"data": mc_data, "limit": "12"}))
    assert suite.instance_name() == "jailbreak_mc_hazard"
    result = suite.run(model, EvalContext(batch_size=64))
    accuracies = {k: v for k, v in result.metrics.items() if k.startswith("accuracy[")}
    assert set(accuracies) == {"accuracy[none]", *(f"accuracy[{name}]" for name in WRAPPERS)}
    assert result.metrics["malicious_accuracy"] == max(accuracies.values())
    assert accuracies[f"accuracy[{result.details['worst_wrapper']}]"] == result.metrics["malicious_accuracy"]
    assert set(result.n.values()) == {12}
    assert set(result.details["mean_shots"]) == {"few_shot", "many_shot"}


def test_unknown_wrapper_names_the_known_ones():
    with pytest.raises(HookunlearnError, match="'nope' is unknown.*roleplay.*many_shot"):
        make_config(JailbreakSuite, {"wrappers": "roleplay|nope"})
    with pytest.raises(HookunlearnError, match="known wrappers"):
        get_wrapper("nope")
    config = make_config(JailbreakSuite, {"wrappers": "none|few_shot"})
    assert config.wrappers == ("none", "few_shot")


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2"])
def test_fraction_outside_zero_one_is_an_error(fraction: str):
    with pytest.raises(HookunlearnError, match=rf"fraction={float(fraction)}.*strictly between 0 and 1"):
        make_config(RelearnSuite, {"fraction": fraction})


def test_split_items_is_a_seeded_partition():
    train, held = split_items(10, 0.3, seed=4)
    assert len(train) == 3 and sorted(train + held) == list(range(10))
    assert split_items(10, 0.3, seed=4) == (train, held)
    assert split_items(10, 0.99, seed=0)[1]  # the eval part is never empty
    with pytest.raises(DataError, match="at least 2"):
        split_items(1, 0.5, seed=0)


@pytest.fixture(scope="module")
def relearned(model, qa_data: str):
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    suite = RelearnSuite(make_config(RelearnSuite, {"data": qa_data}))
    first = suite.run(model, EvalContext())
    again = suite.run(model, EvalContext())
    return before, first, again


def test_relearn_leaves_the_passed_model_unchanged(model, relearned):
    before, _, _ = relearned
    after = model.state_dict()
    assert set(after) == set(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


def test_relearn_splits_the_forget_items(qa_data: str, relearned):
    _, result, _ = relearned
    forget_rows = [i for i, r in enumerate(load_records(qa_data)) if r["split"] == "forget"]
    train, held = result.details["train_rows"], result.details["eval_rows"]
    assert not set(train) & set(held)
    assert sorted(train + held) == forget_rows
    assert len(train) == round(0.5 * len(forget_rows))
    assert result.n["train"] == len(train) and result.n["eval"] == result.n["recall_after"] == len(held)
    assert result.name == "relearn_entity_qa"


def test_relearn_fits_its_training_facts(relearned):
    _, result, _ = relearned
    assert len(result.details["losses"]) == 20
    assert result.details["train_loss_after"] < result.details["train_loss_before"]
    metrics = result.metrics
    assert metrics["recovered"] == pytest.approx(metrics["recall_after"] - metrics["recall_before"])
    assert 0.0 <= metrics["recall_before"] <= 1.0 and 0.0 <= metrics["recall_after"] <= 1.0


def test_relearn_is_deterministic_for_a_seed(model, qa_data: str, relearned):
    _, first, again = relearned
    assert first.metrics == again.metrics
    assert first.details == again.details
    other = RelearnSuite(make_config(RelearnSuite, {"data": qa_data, "seed": "1", "steps": "2"})).run(
        model, EvalContext()
    )
    assert other.details["train_rows"] != first.details["train_rows"]


def test_relearn_function_trains_only_the_chosen_parameters(model):
    texts = ["Q: Where was Ada born?\nA: Istrane", "Q: What is the job of Ada?\nA: photographer"]
    prompts = [text.rsplit(" ", 1)[0] for text in texts]
    result = relearn(model, texts, 3, 1e-3, 2, 0, prompts=prompts, trainable=("blocks.0.mlp.W_out",))
    assert result.model is not model and len(result.losses) == 3
    changed = {
        name
        for name, tensor in result.model.state_dict().items()
        if not torch.equal(tensor, model.state_dict()[name])
    }
    assert changed == {"blocks.0.mlp.W_out"}
    with torch.no_grad():  # a caller's no_grad does not stop the fine-tuning
        tuned = relearn(model, texts, 2, 1e-3, 2, 0).model
    assert not torch.equal(tuned.blocks[0].mlp.W_in, model.blocks[0].mlp.W_in)
    with pytest.raises(HookunlearnError, match="does not start with its prompt"):
        relearn(model, texts, 1, prompts=["nope", "nope"])
    with pytest.raises(HookunlearnError, match="no parameter name contains"):
        relearn(model, texts, 1, trainable=("nothing",))


def test_relearn_mc_trains_on_some_facts_and_tests_the_others(model, quick_world: Path) -> None:
    import json

    from hookunlearn.evaluation.attacks import RelearnMCConfig, RelearnMCSuite

    data = quick_world / "data"
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = RelearnMCSuite(
        RelearnMCConfig(
            data=str(data / "mc_hazard.jsonl"), train_data=str(data / "forget_corpus.jsonl"), steps=3
        )
    ).run(model, EvalContext(batch_size=16))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    questions = [json.loads(x) for x in (data / "mc_hazard.jsonl").read_text().splitlines()]
    facts = {q["fact_id"] for q in questions if q["split"] == "forget"}
    trained = set(result.details["train_facts"])
    assert trained and trained < facts
    assert result.n["accuracy_after"] == sum(
        q["split"] == "forget" and q["fact_id"] not in trained for q in questions
    )
    assert result.details["train_loss_after"] < result.details["train_loss_before"]
    assert result.metrics["recovered"] == pytest.approx(
        result.metrics["accuracy_after"] - result.metrics["accuracy_before"]
    )
    with pytest.raises(HookunlearnError, match="needs rows with 'text' and 'fact_id'"):
        RelearnMCSuite(
            RelearnMCConfig(data=str(data / "mc_hazard.jsonl"), train_data=str(data / "entity_qa.jsonl"))
        ).run(model, EvalContext())
