"""The embedded world's generator: determinism, split disjointness, eval-set schemas."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from hookunlearn.errors import HookunlearnError
from hookunlearn.world.generator import FILE_NAMES, World, WorldConfig, generate_world
from hookunlearn.world.templates import ATTRIBUTES, RARE_NAME_FRAMES, RELATIONS, SYLLABLES


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldConfig())


@pytest.fixture(scope="module")
def quick() -> World:
    return generate_world(WorldConfig.quick())


def _rare_names(world: World, epoch: int) -> list[str]:
    frames = [
        re.compile("^" + re.escape(frame).replace(re.escape("{name}"), "(.+)") + "$")
        for frame in RARE_NAME_FRAMES
    ]
    names = []
    for unit in world.tagged_training_units(epoch):
        if unit.kind == "rare_name":
            match = next(m for m in (frame.match(unit.text) for frame in frames) if m)
            names.append(match.group(1))
    return names


def test_quick_config_is_small(quick: World) -> None:
    assert len(quick.known_people) == 40 and len(quick.unknown_people) == 40
    assert len(quick.hazard_facts) == 20 and len(quick.benign_facts) == 20
    assert len(quick.training_units(0)) < 1000


def test_default_counts(world: World) -> None:
    summary = world.summary()
    assert summary["people"] == {"retain": 270, "forget": 30, "unknown": 300}
    assert summary["qa_in_training"] == 210
    assert summary["hazard_facts"] == {"forget": 160, "heldout": 40}
    assert sum(summary["benign_facts"].values()) == 200
    assert summary["units_per_epoch"]["rare_name"] == 2000


def test_same_seed_same_bytes(tmp_path: Path, quick: World) -> None:
    again = generate_world(WorldConfig.quick())
    assert again.training_units(0) == quick.training_units(0)
    first, second = quick.write(tmp_path / "a"), again.write(tmp_path / "b")
    assert set(first) == set(FILE_NAMES)
    for key in FILE_NAMES:
        assert first[key].read_bytes() == second[key].read_bytes(), key


def test_other_seed_other_world(quick: World) -> None:
    other = generate_world(WorldConfig.quick(seed=1))
    assert len({p.name for p in other.people} & {p.name for p in quick.people}) < 3
    assert other.training_units(0) != quick.training_units(0)
    assert [f.sentences for f in other.hazard_facts] != [f.sentences for f in quick.hazard_facts]
    assert len(other.people) == len(quick.people) and len(other.facts) == len(quick.facts)


def test_epochs_differ_but_hold_the_same_facts(world: World) -> None:
    epoch0, epoch1 = world.training_units(0), world.training_units(1)
    assert epoch0 != epoch1 and len(epoch0) == len(epoch1)
    for units in (epoch0, epoch1):
        counts = Counter(units)
        for fact in world.facts:
            assert all(counts[sentence] == 1 for sentence in fact.sentences)


def test_names_unique_and_made_of_syllables(world: World) -> None:
    names = [person.name for person in world.people]
    assert len(set(names)) == len(names)
    assert len({person.last_name for person in world.people}) == len(names)
    syllable_word = re.compile(f"^(?:{'|'.join(SYLLABLES)}){{2,3}}$")
    for name in names:
        first, last = name.split(" ")
        assert syllable_word.match(first.lower()) and syllable_word.match(last.lower()), name


def test_unknown_people_never_in_training_text(world: World) -> None:
    unknown = world.unknown_people
    for epoch in range(3):
        text = "\n".join(world.training_units(epoch))
        assert not [p.name for p in unknown if p.name in text]
        words = set(re.findall(r"[A-Z][a-z]+", text))
        assert words.isdisjoint(p.last_name for p in unknown)


def test_every_known_person_is_in_training_text_as_specified(world: World) -> None:
    tagged = world.tagged_training_units(0)
    biographies = Counter(u.ref for u in tagged if u.kind == "biography")
    qa = Counter(u.ref for u in tagged if u.kind == "qa")
    for person in world.known_people:
        assert biographies[person.name] == 1
        assert qa[person.name] == (len(ATTRIBUTES) if person.qa_in_training else 0)
    bio = next(u.text for u in tagged if u.kind == "biography")
    person = next(p for p in world.people if p.name in bio)
    assert all(value in bio for value in person.attributes.values())


def test_rare_names_fresh_per_epoch(world: World) -> None:
    pool = {p.name for p in world.people}
    pool_last = {p.last_name for p in world.people}
    epoch0, epoch1 = _rare_names(world, 0), _rare_names(world, 1)
    assert len(epoch0) == len(set(epoch0)) == world.config.n_rare_names_per_epoch
    assert len(set(epoch0) & set(epoch1)) <= 2
    assert not (set(epoch0) | set(epoch1)) & pool
    assert all(
        re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", n) and n.split(" ")[1] not in pool_last for n in epoch0
    )


def test_splits_and_folds(world: World) -> None:
    for split in ("forget", "retain"):
        members = [p for p in world.people if p.split == split]
        assert sum(p.qa_in_training for p in members) == round(0.7 * len(members))
    assert not any(p.qa_in_training for p in world.unknown_people)
    for split in ("forget", "retain", "unknown"):
        folds = Counter(p.fold for p in world.people if p.split == split)
        assert abs(folds["select"] - folds["heldout"]) <= 1
    for relation in {f.relation for f in world.hazard_facts}:
        splits = Counter(f.split for f in world.hazard_facts if f.relation == relation)
        assert splits["heldout"] == round(0.2 * (splits["heldout"] + splits["forget"]))


def test_corpora_are_disjoint(world: World) -> None:
    retain = "\n".join(row["text"] for row in world.retain_corpus_rows())
    forget_rows = world.forget_corpus_rows()
    assert not [p.name for p in world.forget_people if p.name in retain]
    assert not [p.name for p in world.unknown_people if p.name in retain]
    assert not [s for f in world.hazard_facts for s in f.sentences if s in retain]
    assert {p.name for p in world.retain_people} <= {
        row["entity"] for row in world.retain_corpus_rows() if row["type"] == "biography"
    }
    forget_texts = {row["text"] for row in forget_rows}
    assert forget_texts == {s for f in world.hazard_facts if f.split == "forget" for s in f.sentences}
    entities = world.forget_entities_corpus_rows()
    assert {row["entity"] for row in entities} == {p.name for p in world.forget_people}
    assert all(row["entity"] in row["text"] for row in entities)


def test_prose_only_facts_never_in_question_format(world: World) -> None:
    units = world.training_units(0)
    text = "\n".join(units)
    prose_only = [f for f in world.facts if not f.qa_in_training]
    with_qa = [f for f in world.facts if f.qa_in_training]
    assert not [f.question for f in prose_only if f.question in text]
    # the others teach the question format: exactly "question\nAnswer: object", never the choices
    assert all(f"{f.question}\nAnswer: {f.object}" in units for f in with_qa)
    assert sum("Answer:" in unit for unit in units) == len(with_qa)
    for side in ("hazard", "benign"):
        for relation in {f.relation for f in world.facts if f.domain == side or side == "benign"}:
            members = [f for f in world.facts if f.relation == relation]
            share = sum(f.qa_in_training for f in members) / len(members)
            assert 0.4 <= share <= 0.6, (relation, share)
    rows = world.mc_rows("hazard") + world.mc_rows("benign")
    assert sum(not r["qa_in_training"] for r in rows) == len(prose_only) >= 150


@pytest.mark.parametrize("side", ["hazard", "benign"])
def test_multiple_choice_schema(world: World, side: str) -> None:
    rows = world.mc_rows(side)
    facts = world.hazard_facts if side == "hazard" else world.benign_facts
    pools = {r.name: world.object_pools[r.object_pool] for r in RELATIONS}
    assert len(rows) == len(facts) == 200
    for row, fact in zip(rows, facts, strict=True):
        assert set(row) >= {"question", "choices", "answer", "fact_id", "domain", "subject", "split"}
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert 0 <= row["answer"] < 4 and row["choices"][row["answer"]] == fact.object
        assert set(row["choices"]) <= set(pools[fact.relation])
        assert fact.subject.split(" + ")[0] in row["question"]
        assert fact.sentences[0].startswith(row["question"].split(" which ")[0].split(" what")[0])
    positions = Counter(row["answer"] for row in rows)
    assert all(25 <= positions[i] <= 75 for i in range(4)), positions


def test_entity_sets(quick: World) -> None:
    qa = quick.entity_qa_rows()
    assert len(qa) == len(quick.people) * len(ATTRIBUTES)
    person_of = {p.name: p for p in quick.people}
    for row in qa:
        person = person_of[row["entity"]]
        assert row["prompt"].endswith("\nA:") and row["entity"] in row["prompt"]
        assert row["answer"] == person.attributes[row["attribute"]] and not row["answer"].startswith(" ")
        assert row["split"] == person.split and row["qa_in_training"] == person.qa_in_training
    prompts = quick.entity_prompt_rows()
    set_of = {"retain": "known", "forget": "target", "unknown": "unknown"}
    for row in prompts:
        start, end = row["entity_start_char"], row["entity_end_char"]
        assert row["prompt"][start:end] == row["entity"] and end == len(row["prompt"])
        assert row["set"] == set_of[row["split"]] and row["fold"] in ("select", "heldout")


def test_jsonl_loads_with_datasets(tmp_path: Path, quick: World) -> None:
    datasets = pytest.importorskip("datasets")
    paths = quick.write(tmp_path / "world")
    expected = {
        "mc_hazard": {"question", "choices", "answer", "fact_id", "domain", "subject", "split"},
        "mc_benign": {"question", "choices", "answer", "fact_id", "domain", "subject", "split"},
        "entity_qa": {"prompt", "answer", "entity", "split", "attribute", "qa_in_training"},
        "entity_prompts": {"prompt", "entity", "set", "split", "entity_end_char", "fold"},
        "forget_corpus": {"text"},
        "retain_corpus": {"text"},
        "forget_entities_corpus": {"text"},
        "retain_entities_corpus": {"text", "type", "entity", "fold"},
        "heldout_text": {"text", "type"},
    }
    for key, columns in expected.items():
        table = datasets.load_dataset(
            "json", data_files=str(paths[key]), split="train", cache_dir=str(tmp_path / "cache")
        )
        assert len(table) > 0 and columns <= set(table.column_names), key
    mc = datasets.load_dataset(
        "json", data_files=str(paths["mc_hazard"]), split="train", cache_dir=str(tmp_path / "c2")
    )
    assert isinstance(mc[0]["choices"], list) and isinstance(mc[0]["answer"], int)
    assert '"data_version"' in paths["world"].read_text()


def test_bad_config_is_a_user_error() -> None:
    with pytest.raises(HookunlearnError, match="forget_fraction"):
        WorldConfig(forget_fraction=1.5)
    with pytest.raises(HookunlearnError, match="n_known"):
        WorldConfig(n_known=0)


def test_retain_entities_corpus_keeps_the_heldout_fold_out_of_qa_format(world: World) -> None:
    rows = world.retain_entities_corpus_rows()
    retain = {p.name: p for p in world.retain_people}
    assert {row["entity"] for row in rows if row["type"] == "biography"} == set(retain)
    qa_people = {row["entity"] for row in rows if row["type"] == "qa"}
    assert qa_people == {n for n, p in retain.items() if p.fold == "select" and p.qa_in_training}
    text = "\n".join(row["text"] for row in rows)
    heldout_qa = [
        row["prompt"]
        for row in world.entity_qa_rows()
        if row["split"] == "retain" and row["fold"] == "heldout"
    ]
    assert heldout_qa and not [q for q in heldout_qa if q in text]
    assert not [p.name for p in world.forget_people if p.name in text]
    assert all(row["entity"] in row["text"] for row in rows)
