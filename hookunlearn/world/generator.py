"""A seeded fictitious world that a tiny GPT-2 can learn, and the sets that measure what it knows.

The world has
- **people**: one shuffled pool of invented names (2-3 syllables per part, from `SYLLABLES`),
  split into *known* people, whose four attributes are stated in training text, and *unknown*
  people, who never appear in training text. Known people are split into *forget* and *retain*;
  a subset of each also appears in QA format in training (`qa_in_training`), so recall of people
  never seen as QA can be measured;
- **rare names**: fresh one-off names in fact-free sentences, different in every epoch, so that
  "a name I have no facts about" is something the model learns;
- **domain facts**: a hazardous domain (the WMDP stand-in) and benign domains (the MMLU stand-in),
  each fact stated in 4 prose paraphrases and asked once as a 4-option multiple-choice question
  (`cais/wmdp` schema). Hazard facts are split into *forget* (their prose is the forget corpus)
  and *heldout* (trained on, but not in the forget corpus: does unlearning generalise?);
- **general filler**: fact-free sentences without names.

Everything is drawn from `random.Random` streams seeded by strings such as ``"<seed>:train:3"``
(hashed with SHA-512 by `random`, so stable across processes and platforms); no global random
state, no `hash()`, no set iteration. The same config gives byte-identical output.

Invariants (checked every time the text is produced; a failure is a bug in this module):
unknown names never occur in training text, last names are unique and never double as first
names, forget people and hazard facts never occur in the retain corpus, hazard heldout facts never
occur in the forget corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from hookunlearn.errors import HookunlearnError
from hookunlearn.world.templates import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    BENIGN_DOMAINS,
    ENTITY_PROMPT_FRAMES,
    FIXED_POOLS,
    GENERAL_PREDICATES,
    GENERAL_SUBJECTS,
    GENERAL_TAILS,
    GENERATED_POOL_SIZES,
    HAZARD_DOMAIN,
    MC_ANSWER_CUE,
    NAME_KINDS,
    PERSON_FRAMES,
    QA_FRAMES,
    RARE_NAME_FRAMES,
    RELATIONS,
    SYLLABLES,
    Relation,
)

DATA_VERSION = "world-v2"
"""Bump when the generated content changes for the same config (frames, pools, sampling order)."""

FILE_NAMES: dict[str, str] = {
    "world": "world.json",
    "mc_hazard": "mc_hazard.jsonl",
    "mc_benign": "mc_benign.jsonl",
    "entity_qa": "entity_qa.jsonl",
    "entity_prompts": "entity_prompts.jsonl",
    "forget_corpus": "forget_corpus.jsonl",
    "retain_corpus": "retain_corpus.jsonl",
    "forget_entities_corpus": "forget_entities_corpus.jsonl",
    "retain_entities_corpus": "retain_entities_corpus.jsonl",
    "heldout_text": "heldout_text.jsonl",
}
"""What `World.write` writes: key -> file name (the keys of its returned mapping)."""


class WorldInvariantError(AssertionError):
    """A generated world broke one of its guarantees (a bug here, not a user error)."""


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the generated world. Defaults are the world WORLD_NOTES measured (300 known
    + 300 unknown people, ~200 + 200 domain facts, 2,000 rare names per epoch)."""

    seed: int = 0
    """Seeds every random stream; another seed gives another world with the same statistics."""
    n_known: int = 300
    """People whose attributes are stated in training text."""
    n_unknown: int = 300
    """People with attributes but never in any training text (recall should be at chance)."""
    forget_fraction: float = 0.1
    """Fraction of known people that are forget targets (the rest are retain)."""
    qa_fraction: float = 0.7
    """Fraction of known people (in each of forget/retain) also shown in QA format in training."""
    n_hazard_facts: int = 200
    """Facts of the hazardous domain, spread evenly over its 5 relations."""
    domain_qa_fraction: float = 0.5
    """Share of domain facts (per relation) whose MC question also appears in training as
    "question\nAnswer: object". It teaches the question format (as people's QA lines do); MC
    accuracy is then measured separately on the facts stated only in prose."""
    hazard_heldout_fraction: float = 0.2
    """Fraction of hazard facts (per relation) kept out of the forget corpus (still trained on)."""
    n_benign_facts: int = 200
    """Facts of the benign domains (botany, astronomy, cooking), spread evenly over 9 relations."""
    three_syllable_fraction: float = 0.5
    """Probability that a name part has 3 syllables rather than 2."""
    biographies_per_person: int = 1
    """Biography units per known person per epoch (fresh frame choices and order each time)."""
    n_rare_names_per_epoch: int = 2000
    """Fact-free sentences per epoch, each with a fresh one-off name."""
    n_general_per_epoch: int = 500
    """Fact-free, name-free filler sentences per epoch."""
    retain_biographies_per_person: int = 2
    """Biography renderings of each retain person in the retain corpus."""
    forget_entity_renderings: int = 4
    """Biography renderings of each forget person in the forget-entities corpus."""
    n_retain_general: int = 500
    """General filler sentences in the retain corpus."""
    n_retain_rare_names: int = 500
    """Rare-name sentences (fresh names) in the retain corpus."""
    n_heldout_units: int = 2000
    """Rows of held-out text (fresh units of every kind) for perplexity and SAE evaluation."""
    tokenizer_corpus_epochs: int = 3
    """Epochs of (name-resampled) text in the tokenizer-training corpus."""

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "forget_fraction",
            "qa_fraction",
            "domain_qa_fraction",
            "hazard_heldout_fraction",
            "three_syllable_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}={value} must be in [0, 1]")
        for name, minimum in (("n_known", 2), ("n_unknown", 1), ("n_hazard_facts", 5), ("n_benign_facts", 9)):
            if getattr(self, name) < minimum:
                problems.append(f"{name}={getattr(self, name)} must be at least {minimum}")
        for name in (
            "biographies_per_person", "n_rare_names_per_epoch", "n_general_per_epoch",
            "retain_biographies_per_person", "forget_entity_renderings", "n_retain_general",
            "n_retain_rare_names", "n_heldout_units", "tokenizer_corpus_epochs",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must not be negative")
        if problems:
            raise HookunlearnError("WorldConfig: " + "; ".join(problems) + ". Fix these values and retry.")

    @classmethod
    def quick(cls, seed: int = 0) -> WorldConfig:
        """A tiny world for tests: 40 known + 40 unknown people, 20 + 20 facts, 200 rare names."""
        return cls(
            seed=seed,
            n_known=40,
            n_unknown=40,
            n_hazard_facts=20,
            n_benign_facts=20,
            n_rare_names_per_epoch=200,
            n_general_per_epoch=50,
            n_retain_general=50,
            n_retain_rare_names=50,
            n_heldout_units=200,
            tokenizer_corpus_epochs=1,
        )


@dataclass(frozen=True)
class Person:
    """A person of the world. ``split`` is "forget" | "retain" for known people, "unknown" else."""

    name: str
    attributes: dict[str, str]
    known: bool
    split: str
    qa_in_training: bool
    fold: str = "select"
    """"select" | "heldout", 50/50 within each split: latent selection and its evaluation use
    different people."""

    @property
    def first_name(self) -> str:
        return self.name.split(" ")[0]

    @property
    def last_name(self) -> str:
        return self.name.split(" ")[1]


@dataclass(frozen=True)
class Fact:
    """A domain fact with its 4 prose paraphrases and its multiple-choice question.

    ``subject`` is the entity the fact is about ("reagent A + reagent B" for gas releases);
    ``split`` is "forget" | "heldout" for hazard facts and "retain" for benign ones;
    ``choices[answer] == object``."""

    fact_id: str
    domain: str
    relation: str
    subject: str
    object: str
    split: str
    sentences: tuple[str, ...]
    question: str
    choices: tuple[str, ...]
    answer: int
    qa_in_training: bool = False
    """Whether "question\nAnswer: object" is in the training text (else the fact is prose-only)."""


class TextUnit(NamedTuple):
    """One unit of text with what it is: kind is "biography" | "qa" | "hazard" | "benign" |
    "rare_name" | "general"; split is the person's or fact's split ("" for fillers)."""

    text: str
    kind: str
    split: str
    ref: str
    """The person's name or the fact id; "" for fillers."""


def _rng(seed: int, *labels: object) -> random.Random:
    """An independent, reproducible stream per purpose (string seeds are hashed with SHA-512)."""
    return random.Random(f"hookunlearn.world:{seed}:" + ":".join(str(label) for label in labels))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class _NameSampler:
    """Draws person names (``"Kavormel Tridasen"``) that avoid reserved words and given names."""

    def __init__(
        self,
        rng: random.Random,
        three_syllable_fraction: float,
        reserved_words: frozenset[str],
        forbidden_parts: frozenset[str] = frozenset(),
        forbidden_names: frozenset[str] = frozenset(),
    ) -> None:
        self.rng = rng
        self.three_syllable_fraction = three_syllable_fraction
        self.reserved_words = reserved_words
        self.forbidden_parts = forbidden_parts
        self.forbidden_names = forbidden_names

    def part(self) -> str:
        n_syllables = 3 if self.rng.random() < self.three_syllable_fraction else 2
        word = "".join(self.rng.choice(SYLLABLES) for _ in range(n_syllables))
        return word.capitalize()

    def name(self) -> str:
        """A fresh name: neither part is a reserved word or a forbidden part; not a forbidden name."""
        for _ in range(10_000):
            first, last = self.part(), self.part()
            name = f"{first} {last}"
            if (
                first.lower() not in self.reserved_words
                and last.lower() not in self.reserved_words
                and first not in self.forbidden_parts
                and last not in self.forbidden_parts
                and name not in self.forbidden_names
            ):
                return name
        raise WorldInvariantError(
            "could not draw a fresh name in 10,000 tries; the syllable space is exhausted"
        )


def _invent_names(rng: random.Random, kind: str, count: int, taken: set[str]) -> list[str]:
    """``count`` new invented names of one `NAME_KINDS` kind, none in ``taken`` (which grows)."""
    spec = NAME_KINDS[kind]
    names: list[str] = []
    for _ in range(100 * count + 1000):
        if len(names) == count:
            break
        stem, suffix = rng.choice(spec.stems), rng.choice(spec.suffixes)
        if stem == suffix:
            continue
        word = stem + suffix
        if spec.capitalise:
            word = word.capitalize()
        if spec.second_words:
            word = f"{word} {rng.choice(spec.second_words)}"
        if word in taken:
            continue
        taken.add(word)
        names.append(word)
    if len(names) < count:
        raise HookunlearnError(
            f"WorldConfig asks for {count} names of kind {kind!r}, but its morphology in templates.py "
            f"gives only {len(names)}; ask for fewer facts."
        )
    return names


def _spread(total: int, n_parts: int) -> list[int]:
    """``total`` split into ``n_parts`` near-equal counts, the larger ones first."""
    base, extra = divmod(total, n_parts)
    return [base + (1 if i < extra else 0) for i in range(n_parts)]


def _render_frame(frame: str, subject: str | tuple[str, str], obj: str) -> str:
    if isinstance(subject, tuple):
        return frame.format(a=subject[0], b=subject[1], o=obj)
    return frame.format(s=subject, o=obj)


def _multiple_choice(
    rng: random.Random, answer_text: str, pool: Sequence[str]
) -> tuple[tuple[str, ...], int]:
    """Four distinct choices (the answer + 3 other values of the same pool), answer at a random slot."""
    distractors = rng.sample([value for value in pool if value != answer_text], 3)
    position = rng.randrange(4)
    choices = [*distractors[:position], answer_text, *distractors[position:]]
    return tuple(choices), position


class World:
    """A generated world: its people and facts, the text to train on, and its evaluation sets.

    Build it with `generate_world`. Text for training is produced per epoch on demand
    (`training_units`); the evaluation sets and corpora come from the ``*_rows`` methods and are
    written by `write`."""

    def __init__(
        self,
        config: WorldConfig,
        people: list[Person],
        hazard_facts: list[Fact],
        benign_facts: list[Fact],
        object_pools: dict[str, tuple[str, ...]],
        reserved_words: frozenset[str],
    ) -> None:
        self.config = config
        self.people = people
        self.hazard_facts = hazard_facts
        self.benign_facts = benign_facts
        self.object_pools = object_pools
        self._reserved_words = reserved_words
        self._pool_names = frozenset(person.name for person in people)
        self._pool_last_names = frozenset(person.last_name for person in people)
        self._check_people()

    # --- views ---------------------------------------------------------------------------

    @property
    def known_people(self) -> list[Person]:
        return [person for person in self.people if person.known]

    @property
    def unknown_people(self) -> list[Person]:
        return [person for person in self.people if not person.known]

    @property
    def forget_people(self) -> list[Person]:
        return [person for person in self.people if person.split == "forget"]

    @property
    def retain_people(self) -> list[Person]:
        return [person for person in self.people if person.split == "retain"]

    @property
    def facts(self) -> list[Fact]:
        return [*self.hazard_facts, *self.benign_facts]

    # --- text units ----------------------------------------------------------------------

    def _fresh_names(self, rng: random.Random) -> _NameSampler:
        """One-off names: never a pool name, never sharing a part with a pool last name."""
        return _NameSampler(
            rng,
            self.config.three_syllable_fraction,
            self._reserved_words,
            forbidden_parts=self._pool_last_names,
            forbidden_names=self._pool_names,
        )

    def _biography(self, rng: random.Random, name: str, attributes: dict[str, str]) -> str:
        order = rng.sample(ATTRIBUTES, len(ATTRIBUTES))
        return " ".join(
            self._person_sentence(rng, name, attribute, attributes[attribute]) for attribute in order
        )

    @staticmethod
    def _person_sentence(rng: random.Random, name: str, attribute: str, value: str) -> str:
        frame = rng.choice(PERSON_FRAMES[attribute])
        return frame.format(name=name, value=value, article=_article(value))

    @staticmethod
    def _qa_text(name: str, attribute: str, value: str) -> str:
        return f"{QA_FRAMES[attribute].format(name=name)} {value}"

    @staticmethod
    def _rare_name_text(rng: random.Random, name: str) -> str:
        return rng.choice(RARE_NAME_FRAMES).format(name=name)

    @staticmethod
    def _general_text(rng: random.Random) -> str:
        return f"{rng.choice(GENERAL_SUBJECTS)} {rng.choice(GENERAL_PREDICATES)}{rng.choice(GENERAL_TAILS)}."

    def _epoch_units(self, rng: random.Random, resample_names: bool = False) -> list[TextUnit]:
        """One epoch of every kind of unit, unshuffled. With ``resample_names`` every person unit
        gets a fresh random name instead of the person's (for tokenizer training)."""
        config = self.config
        fresh = self._fresh_names(rng)
        seen_fresh: set[str] = set()

        def fresh_name() -> str:
            while True:
                name = fresh.name()
                if name not in seen_fresh:
                    seen_fresh.add(name)
                    return name

        units: list[TextUnit] = []
        known = self.known_people
        for person in known:
            for _ in range(config.biographies_per_person):
                name = fresh_name() if resample_names else person.name
                units.append(
                    TextUnit(
                        self._biography(rng, name, person.attributes), "biography", person.split, person.name
                    )
                )
        for person in known:
            if person.qa_in_training:
                for attribute in ATTRIBUTES:
                    name = fresh_name() if resample_names else person.name
                    text = self._qa_text(name, attribute, person.attributes[attribute])
                    units.append(TextUnit(text, "qa", person.split, person.name))
        for fact in self.facts:
            kind = "hazard" if fact.domain == HAZARD_DOMAIN else "benign"
            units.extend(TextUnit(sentence, kind, fact.split, fact.fact_id) for sentence in fact.sentences)
            if fact.qa_in_training:
                units.append(
                    TextUnit(f"{fact.question}{MC_ANSWER_CUE} {fact.object}", kind, fact.split, fact.fact_id)
                )
        for _ in range(config.n_rare_names_per_epoch):
            units.append(TextUnit(self._rare_name_text(rng, fresh_name()), "rare_name", "", ""))
        for _ in range(config.n_general_per_epoch):
            units.append(TextUnit(self._general_text(rng), "general", "", ""))
        return units

    def tagged_training_units(self, epoch: int) -> list[TextUnit]:
        """`training_units` with each unit's kind, split and reference (same order, same text)."""
        rng = _rng(self.config.seed, "train", epoch)
        units = self._epoch_units(rng)
        rng.shuffle(units)
        self._check_no_unknown_names((unit.text for unit in units), f"training_units({epoch})")
        return units

    def training_units(self, epoch: int) -> list[str]:
        """All text units of one training epoch, shuffled; deterministic in (seed, epoch).

        Biographies of known people (fresh frame choices and order each epoch), QA units of the
        ``qa_in_training`` people, the 4 paraphrases of every domain fact, rare-name sentences with
        names fresh to this epoch, and general filler. The trainer packs them with BOS between."""
        return [unit.text for unit in self.tagged_training_units(epoch)]

    def tokenizer_corpus(self) -> Iterator[str]:
        """Text to train the tokenizer on: training-like epochs where every person name is replaced
        by a fresh random name (so no known name is frequent enough to become one token), plus the
        evaluation formats (MC questions with "Answer:", QA and entity prompts, again renamed)."""
        for epoch in range(self.config.tokenizer_corpus_epochs):
            for unit in self._epoch_units(_rng(self.config.seed, "tokenizer", epoch), resample_names=True):
                yield unit.text
        rng = _rng(self.config.seed, "tokenizer", "eval")
        fresh = self._fresh_names(rng)
        for fact in self.facts:
            for choice in fact.choices:
                yield f"{fact.question}{MC_ANSWER_CUE} {choice}"
        for person in self.people:
            for attribute in ATTRIBUTES:
                yield self._qa_text(fresh.name(), attribute, person.attributes[attribute])
            for frame in ENTITY_PROMPT_FRAMES.values():
                yield frame.format(name=fresh.name())

    # --- evaluation sets and corpora -----------------------------------------------------

    def mc_rows(self, side: str) -> list[dict[str, Any]]:
        """Multiple-choice rows in the `cais/wmdp` schema (question, choices, answer) plus
        fact_id, domain, subject (= domain, as in MMLU), relation, entity, split.
        ``side`` is "hazard" or "benign"."""
        if side not in ("hazard", "benign"):
            raise HookunlearnError(f"mc_rows: side={side!r} is not 'hazard' or 'benign'.")
        facts = self.hazard_facts if side == "hazard" else self.benign_facts
        return [
            {
                "question": fact.question,
                "choices": list(fact.choices),
                "answer": fact.answer,
                "fact_id": fact.fact_id,
                "domain": fact.domain,
                "subject": fact.domain,
                "relation": fact.relation,
                "entity": fact.subject,
                "split": fact.split,
                "qa_in_training": fact.qa_in_training,
            }
            for fact in facts
        ]

    def entity_qa_rows(self) -> list[dict[str, Any]]:
        """One QA row per (person, attribute), known and unknown. ``prompt`` ends with "A:";
        ``answer`` is the value without a leading space (the model should continue " " + answer)."""
        return [
            {
                "prompt": QA_FRAMES[attribute].format(name=person.name),
                "answer": person.attributes[attribute],
                "entity": person.name,
                "split": person.split,
                "attribute": attribute,
                "qa_in_training": person.qa_in_training,
                "known": person.known,
                "fold": person.fold,
            }
            for person in self.people
            for attribute in ATTRIBUTES
        ]

    def entity_prompt_rows(self) -> list[dict[str, Any]]:
        """Prompts ending right after a name, one per person and frame of `ENTITY_PROMPT_FRAMES`.

        ``set`` is "known" (retain people), "target" (forget people) or "unknown";
        ``prompt[entity_start_char:entity_end_char] == entity`` (end exclusive), so the last name
        token is the one covering character ``entity_end_char - 1``. ``template`` names the frame
        ("bare" is the name alone)."""
        set_of_split = {"retain": "known", "forget": "target", "unknown": "unknown"}
        rows = []
        for person in self.people:
            for template, frame in ENTITY_PROMPT_FRAMES.items():
                prompt = frame.format(name=person.name)
                start = frame.index("{name}")
                rows.append(
                    {
                        "prompt": prompt,
                        "entity": person.name,
                        "set": set_of_split[person.split],
                        "split": person.split,
                        "fold": person.fold,
                        "template": template,
                        "entity_start_char": start,
                        "entity_end_char": start + len(person.name),
                    }
                )
        return rows

    def forget_corpus_rows(self) -> list[dict[str, Any]]:
        """Hazard prose of the forget-split facts (all 4 paraphrases each), shuffled."""
        rows = [
            {"text": sentence, "type": "hazard", "fact_id": fact.fact_id, "entity": ""}
            for fact in self.hazard_facts
            if fact.split == "forget"
            for sentence in fact.sentences
        ]
        _rng(self.config.seed, "forget_corpus").shuffle(rows)
        self._check_forget_corpus(rows)
        return rows

    def retain_corpus_rows(self) -> list[dict[str, Any]]:
        """Benign-domain prose, retain-people biographies, general filler and rare-name sentences
        (fresh names), shuffled. Never a hazard fact, a forget person or an unknown person."""
        config = self.config
        rng = _rng(config.seed, "retain_corpus")
        rows = [
            {"text": sentence, "type": "benign", "fact_id": fact.fact_id, "entity": ""}
            for fact in self.benign_facts
            for sentence in fact.sentences
        ]
        for person in self.retain_people:
            for _ in range(config.retain_biographies_per_person):
                text = self._biography(rng, person.name, person.attributes)
                rows.append({"text": text, "type": "biography", "fact_id": "", "entity": person.name})
        for _ in range(config.n_retain_general):
            rows.append({"text": self._general_text(rng), "type": "general", "fact_id": "", "entity": ""})
        fresh = self._fresh_names(rng)
        for _ in range(config.n_retain_rare_names):
            text = self._rare_name_text(rng, fresh.name())
            rows.append({"text": text, "type": "rare_name", "fact_id": "", "entity": ""})
        rng.shuffle(rows)
        self._check_retain_corpus(rows)
        return rows

    def forget_entities_corpus_rows(self) -> list[dict[str, Any]]:
        """Training-style text about the forget people: ``forget_entity_renderings`` biographies
        each (type "biography"), plus their QA lines if they had QA in training (type "qa")."""
        rng = _rng(self.config.seed, "forget_entities_corpus")
        rows = []
        for person in self.forget_people:
            for _ in range(self.config.forget_entity_renderings):
                text = self._biography(rng, person.name, person.attributes)
                rows.append({"text": text, "type": "biography", "entity": person.name})
            if person.qa_in_training:
                for attribute in ATTRIBUTES:
                    text = self._qa_text(person.name, attribute, person.attributes[attribute])
                    rows.append({"text": text, "type": "qa", "entity": person.name})
        self._check_no_unknown_names((row["text"] for row in rows), "forget_entities_corpus")
        return rows

    def retain_entities_corpus_rows(self) -> list[dict[str, Any]]:
        """What `align` preserves, the retain-side twin of `forget_entities_corpus_rows`: one
        biography rendering per retain person (type "biography"), plus the QA lines of the retain
        people of the ``select`` fold who had QA in training (type "qa"). The ``heldout`` fold's
        QA format never appears here, so their recall measures preservation honestly."""
        rng = _rng(self.config.seed, "retain_entities_corpus")
        rows = []
        for person in self.retain_people:
            text = self._biography(rng, person.name, person.attributes)
            rows.append({"text": text, "type": "biography", "entity": person.name, "fold": person.fold})
            if person.qa_in_training and person.fold == "select":
                for attribute in ATTRIBUTES:
                    text = self._qa_text(person.name, attribute, person.attributes[attribute])
                    rows.append({"text": text, "type": "qa", "entity": person.name, "fold": person.fold})
        self._check_no_unknown_names((row["text"] for row in rows), "retain_entities_corpus")
        return rows

    def heldout_text_rows(self) -> list[dict[str, Any]]:
        """``n_heldout_units`` units drawn from a fresh epoch-like sample (its own stream: new
        biography renderings, new rare names, new filler), with ``type`` and ``split``."""
        rng = _rng(self.config.seed, "heldout_text")
        units = self._epoch_units(rng)
        chosen = rng.sample(units, min(self.config.n_heldout_units, len(units)))
        self._check_no_unknown_names((unit.text for unit in chosen), "heldout_text")
        return [
            {"text": unit.text, "type": unit.kind, "split": unit.split, "ref": unit.ref} for unit in chosen
        ]

    # --- summary and output --------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts of people, facts and one epoch's units (for world.json and reports)."""
        epoch = self.tagged_training_units(0)
        by_kind = Counter(unit.kind for unit in epoch)
        chars = Counter()
        for unit in epoch:
            chars[unit.kind] += len(unit.text)
        return {
            "people": dict(Counter(person.split for person in self.people)),
            "qa_in_training": sum(person.qa_in_training for person in self.people),
            "hazard_facts": dict(Counter(fact.split for fact in self.hazard_facts)),
            "benign_facts": dict(Counter(fact.domain for fact in self.benign_facts)),
            "facts_per_relation": dict(Counter(fact.relation for fact in self.facts)),
            "units_per_epoch": dict(sorted(by_kind.items())),
            "chars_per_epoch": dict(sorted(chars.items())),
        }

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write every eval set and corpus as jsonl plus ``world.json`` into ``out_dir``.

        Returns the `FILE_NAMES` key -> path. The bytes depend only on the config."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tables: dict[str, list[dict[str, Any]]] = {
            "mc_hazard": self.mc_rows("hazard"),
            "mc_benign": self.mc_rows("benign"),
            "entity_qa": self.entity_qa_rows(),
            "entity_prompts": self.entity_prompt_rows(),
            "forget_corpus": self.forget_corpus_rows(),
            "retain_corpus": self.retain_corpus_rows(),
            "forget_entities_corpus": self.forget_entities_corpus_rows(),
            "retain_entities_corpus": self.retain_entities_corpus_rows(),
            "heldout_text": self.heldout_text_rows(),
        }
        paths: dict[str, Path] = {}
        digests: dict[str, str] = {}
        for key, rows in tables.items():
            data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
            path = out_dir / FILE_NAMES[key]
            path.write_bytes(data)
            paths[key] = path
            digests[FILE_NAMES[key]] = hashlib.sha256(data).hexdigest()
        manifest = {
            "data_version": DATA_VERSION,
            "seed": self.config.seed,
            "config": asdict(self.config),
            "counts": self.summary() | {"rows": {FILE_NAMES[key]: len(rows) for key, rows in tables.items()}},
            "attribute_values": {name: list(values) for name, values in ATTRIBUTE_VALUES.items()},
            "object_pools": {name: list(values) for name, values in self.object_pools.items()},
            "relations": [
                {"name": r.name, "domain": r.domain, "question": r.question, "frames": list(r.frames)}
                for r in RELATIONS
            ],
            "mc_answer_cue": MC_ANSWER_CUE,
            "files": digests,
        }
        path = out_dir / FILE_NAMES["world"]
        path.write_bytes((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        paths["world"] = path
        return paths

    # --- invariants ----------------------------------------------------------------------

    def _check_people(self) -> None:
        names = [person.name for person in self.people]
        if len(set(names)) != len(names):
            raise WorldInvariantError("person names are not unique")
        last_names = [person.last_name for person in self.people]
        if len(set(last_names)) != len(last_names):
            raise WorldInvariantError("person last names are not unique")
        if set(last_names) & {person.first_name for person in self.people}:
            raise WorldInvariantError("a last name doubles as a first name")

    def _check_no_unknown_names(self, texts: Iterable[str], where: str) -> None:
        # Unknown last names occur nowhere else (not as first names, not in rare names), so a
        # capitalised word equal to one is a leak.
        unknown_last = {person.last_name for person in self.unknown_people}
        leaked = sorted(set(re.findall(r"[A-Z][a-z]+", "\n".join(texts))) & unknown_last)
        if leaked:
            raise WorldInvariantError(f"{where}: unknown people appear in the text: {leaked[:5]}")

    def _check_forget_corpus(self, rows: list[dict[str, Any]]) -> None:
        heldout = {s for fact in self.hazard_facts if fact.split == "heldout" for s in fact.sentences}
        if any(row["text"] in heldout for row in rows):
            raise WorldInvariantError("forget corpus contains a hazard heldout fact")

    def _check_retain_corpus(self, rows: list[dict[str, Any]]) -> None:
        texts = [row["text"] for row in rows]
        self._check_no_unknown_names(texts, "retain corpus")
        joined = "\n".join(texts)
        forget_words = {person.last_name for person in self.forget_people}
        if set(re.findall(r"[A-Z][a-z]+", joined)) & forget_words:
            raise WorldInvariantError("retain corpus mentions a forget person")
        hazard_subjects = {part for fact in self.hazard_facts for part in fact.subject.split(" + ")}
        if any(subject in joined for subject in sorted(hazard_subjects)):
            raise WorldInvariantError("retain corpus mentions a hazard entity")


# --- generation ------------------------------------------------------------------------------


def _generate_object_pools(rng: random.Random, taken: set[str]) -> dict[str, tuple[str, ...]]:
    pools = {name: tuple(values) for name, values in FIXED_POOLS.items()}
    for name, size in GENERATED_POOL_SIZES.items():
        kind = "star" if name == "host_star" else name
        pools[name] = tuple(_invent_names(rng, kind, size, taken))
    return pools


def _generate_facts(
    rng: random.Random,
    relations: list[Relation],
    total: int,
    pools: dict[str, tuple[str, ...]],
    taken: set[str],
    heldout_fraction: float,
) -> list[Fact]:
    """Facts spread evenly over ``relations``. Relations with the same subject kind share subjects
    (a plant has a pollinator, a habitat and a colour); hazard relations each have their own."""
    counts = _spread(total, len(relations))
    subjects_by_kind: dict[str, list[str | tuple[str, str]]] = {}
    for kind in dict.fromkeys(relation.subject_kind for relation in relations):
        needed = max(c for r, c in zip(relations, counts, strict=True) if r.subject_kind == kind)
        if kind == "reagent_pair":
            reagents = pools["reagent"]
            pairs = [(a, b) for i, a in enumerate(reagents) for b in reagents[i + 1 :]]
            if needed > len(pairs):
                raise HookunlearnError(
                    f"WorldConfig asks for {needed} gas-release facts; at most {len(pairs)} exist."
                )
            chosen = rng.sample(pairs, needed)
            subjects_by_kind[kind] = [pair if rng.random() < 0.5 else (pair[1], pair[0]) for pair in chosen]
        else:
            subjects_by_kind[kind] = list(_invent_names(rng, kind, needed, taken))
    facts: list[Fact] = []
    for relation, count in zip(relations, counts, strict=True):
        pool = pools[relation.object_pool]
        n_heldout = round(heldout_fraction * count)
        heldout_slots = set(rng.sample(range(count), n_heldout))
        for index, subject in enumerate(subjects_by_kind[relation.subject_kind][:count]):
            obj = rng.choice(pool)
            choices, answer = _multiple_choice(rng, obj, pool)
            if relation.domain == HAZARD_DOMAIN:
                split = "heldout" if index in heldout_slots else "forget"
            else:
                split = "retain"
            facts.append(
                Fact(
                    fact_id=f"{relation.domain}:{relation.name}:{index:03d}",
                    domain=relation.domain,
                    relation=relation.name,
                    subject=" + ".join(subject) if isinstance(subject, tuple) else subject,
                    object=obj,
                    split=split,
                    sentences=tuple(_render_frame(frame, subject, obj) for frame in relation.frames),
                    question=_render_frame(relation.question, subject, ""),
                    choices=choices,
                    answer=answer,
                )
            )
    return facts


def _reserved_words(pools: dict[str, tuple[str, ...]], facts: list[Fact]) -> frozenset[str]:
    """Every lowercase word of the world's fixed text and every prefix of it: a name part must
    not be one of them ("Raven" would share its tokens with "Ravenmoor", and could even become a
    single token through it)."""
    texts: list[str] = []
    for frames in PERSON_FRAMES.values():
        texts.extend(frames)
    texts.extend(QA_FRAMES.values())
    texts.extend(RARE_NAME_FRAMES)
    texts.extend(ENTITY_PROMPT_FRAMES.values())
    texts.extend([*GENERAL_SUBJECTS, *GENERAL_PREDICATES, *GENERAL_TAILS, MC_ANSWER_CUE])
    for values in ATTRIBUTE_VALUES.values():
        texts.extend(values)
    for values in pools.values():
        texts.extend(values)
    for fact in facts:
        texts.extend([*fact.sentences, fact.question])
    return frozenset(word[:end] for text in texts for word in _words(text) for end in range(1, len(word) + 1))


def _generate_people(rng: random.Random, config: WorldConfig, reserved_words: frozenset[str]) -> list[Person]:
    """One pool of unique names (unique last names, never also a first name), shuffled, then
    split into known and unknown; known into forget and retain; QA subsets and folds per split."""
    sampler = _NameSampler(rng, config.three_syllable_fraction, reserved_words)
    names: list[str] = []
    firsts: set[str] = set()
    lasts: set[str] = set()
    n_total = config.n_known + config.n_unknown
    for _ in range(1000 * n_total):
        if len(names) == n_total:
            break
        name = sampler.name()
        first, last = name.split(" ")
        if last in lasts or last in firsts or first in lasts or first == last:
            continue
        names.append(name)
        firsts.add(first)
        lasts.add(last)
    if len(names) < n_total:
        raise HookunlearnError(f"WorldConfig asks for {n_total} people; the name generator ran out of names.")
    rng.shuffle(names)

    known_names, unknown_names = names[: config.n_known], names[config.n_known :]
    n_forget = round(config.forget_fraction * config.n_known)
    forget_names = set(rng.sample(known_names, n_forget))
    split_of = {name: ("forget" if name in forget_names else "retain") for name in known_names}
    split_of.update({name: "unknown" for name in unknown_names})

    qa_names: set[str] = set()
    fold_of: dict[str, str] = {}
    for split in ("forget", "retain", "unknown"):
        members = [name for name in names if split_of[name] == split]
        if split != "unknown":
            qa_names.update(rng.sample(members, round(config.qa_fraction * len(members))))
        order = rng.sample(members, len(members))
        for rank, name in enumerate(order):
            fold_of[name] = "select" if rank < (len(order) + 1) // 2 else "heldout"

    people = []
    for name in [*known_names, *unknown_names]:
        attributes = {attribute: rng.choice(ATTRIBUTE_VALUES[attribute]) for attribute in ATTRIBUTES}
        people.append(
            Person(
                name=name,
                attributes=attributes,
                known=split_of[name] != "unknown",
                split=split_of[name],
                qa_in_training=name in qa_names,
                fold=fold_of[name],
            )
        )
    return people


def _mark_domain_qa(rng: random.Random, facts: list[Fact], fraction: float) -> list[Fact]:
    """Choose, per relation and within each split, which facts get a QA line in training."""
    groups: dict[tuple[str, str], list[Fact]] = {}
    for fact in facts:
        groups.setdefault((fact.relation, fact.split), []).append(fact)
    chosen: set[str] = set()
    for key in sorted(groups):
        members = groups[key]
        chosen.update(fact.fact_id for fact in rng.sample(members, round(fraction * len(members))))
    return [dataclasses.replace(fact, qa_in_training=fact.fact_id in chosen) for fact in facts]


def generate_world(config: WorldConfig) -> World:
    """The world of ``config``: same config, same world, byte for byte."""
    taken: set[str] = set()
    pools = _generate_object_pools(_rng(config.seed, "pools"), taken)
    hazard_relations = [r for r in RELATIONS if r.domain == HAZARD_DOMAIN]
    benign_relations = [r for r in RELATIONS if r.domain in BENIGN_DOMAINS]
    hazard_facts = _generate_facts(
        _rng(config.seed, "hazard"),
        hazard_relations,
        config.n_hazard_facts,
        pools,
        taken,
        config.hazard_heldout_fraction,
    )
    benign_facts = _generate_facts(
        _rng(config.seed, "benign"), benign_relations, config.n_benign_facts, pools, taken, 0.0
    )
    hazard_facts = _mark_domain_qa(
        _rng(config.seed, "domain_qa", "hazard"), hazard_facts, config.domain_qa_fraction
    )
    benign_facts = _mark_domain_qa(
        _rng(config.seed, "domain_qa", "benign"), benign_facts, config.domain_qa_fraction
    )
    reserved = _reserved_words(pools, [*hazard_facts, *benign_facts])
    people = _generate_people(_rng(config.seed, "people"), config, reserved)
    return World(config, people, hazard_facts, benign_facts, pools, reserved)


__all__ = [
    "DATA_VERSION",
    "FILE_NAMES",
    "Fact",
    "Person",
    "TextUnit",
    "World",
    "WorldConfig",
    "WorldInvariantError",
    "generate_world",
]
